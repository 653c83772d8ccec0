//! Workers as upstreams: one [`Backend`] per worker process, each with a bounded pool of
//! keep-alive HTTP/1.1 connections (`http::client::WorkerConn`) to the worker's Unix socket.
//!
//! The bound matters (measured: with an unbounded pool, 10,000 client connections became 10,000
//! upstream connections, the workers ballooned and 445 requests timed out; with 64 per worker,
//! none). A request first takes a permit from the backend's semaphore, so past the bound it queues
//! at the master, in order, instead of opening yet another socket.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{HeaderValue, request};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::request_body::{RequestBody, RequestBodyError};
use crate::balance::Worker;
use crate::http::client::{self, Added, Lost, WorkerConn};
use crate::http::deadline::Watch;
use crate::slot::{Completion, Observers, Outcome, SlotCounters};
use crate::wire::handoff::HandoffChannel;

/// A response head from a worker, with the request body the client is still sending.
pub(crate) type Head = client::Head<RequestBody>;

/// One worker process that can take requests.
pub struct Backend {
    /// Slot, pid, generation and counters, as selectors see them.
    worker: Worker,
    /// Precomputed so the response path does not format a number per request.
    worker_id: HeaderValue,
    socket: PathBuf,
    /// One pool per edge thread: a connection is only ever used by the thread whose runtime drives
    /// it, so a request and its upstream connection never wake each other across threads.
    shards: Box<[Shard]>,
    /// Set when the worker is draining or gone, so released connections are closed, not pooled,
    /// and requests that picked this backend just before go elsewhere instead.
    retired: AtomicBool,
    /// When a request sent to this process was last lost (the connection closed or broke before
    /// an answer), as [`stamp`]; 0 once a request sent after that was answered. A worker that
    /// crashed hangs up its connections before it has exited and left the ready set, and a resend
    /// must not follow it there (see `proxy::next_worker`).
    lost: AtomicU64,
    /// Requests dispatched to this very process and not finished (the slot's counter spans its
    /// processes): the supervisor waits for zero before asking a draining worker to stop.
    active: std::sync::atomic::AtomicUsize,
    /// Told about each request this backend served.
    observers: Observers,
    /// The worker's fd-passing channel: in handoff mode, and for WebSocket upgrades in proxy mode.
    handoff: Option<HandoffChannel>,
    /// Upgrades handed to this process and not closed yet, by handoff id: each one in flight
    /// (so least-connections balancing and a roll's drain see it, as a spliced one) and holding
    /// one of `MAX_CONNECTIONS`, until the worker reports it closed or the process is gone.
    /// Bounded by that cap.
    handed_off: Mutex<std::collections::HashMap<u64, HandedOff>>,
    /// The version pool its slot belongs to (0 in a one-pool cluster).
    pool: usize,
}

/// `t` as nanoseconds (plus one, so never 0) since the first time this was called: earlier
/// instants count as that first one.
fn stamp(t: Instant) -> u64 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(t.saturating_duration_since(base).as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// One edge thread's share of a backend's connections.
struct Shard {
    /// Bounds this thread's connections to the worker. A thread whose share is all in use takes
    /// a free place from another thread's, which then moves to it (see [`Backend::permit`]);
    /// requests past every share queue on all of them, in order on each.
    permits: Arc<Semaphore>,
    /// Connections ready for another request. Boxed because each one moves into a request's
    /// lease and back, and the lease rides inside the response body.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<WorkerConn>>>,
}

thread_local! {
    /// Which pool shard this thread uses: its index among the edge threads (0 elsewhere).
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the calling thread as edge thread `index`.
pub(crate) fn set_shard(index: usize) {
    SHARD.set(index);
}

/// The shape of every backend's connection pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolShape {
    /// Connections per worker, across all edge threads (`POOL_SIZE`).
    pub connections: usize,
    /// Edge threads, each with its own share (`EDGE_THREADS`).
    pub shards: usize,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("slot", &self.slot())
            .field("pid", &self.pid())
            .field("generation", &self.generation())
            .field("socket", &self.socket)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Backend {
    pub(crate) fn new(
        slot: usize,
        pid: u32,
        generation: u64,
        socket: PathBuf,
        counters: Arc<SlotCounters>,
        pool: PoolShape,
        observers: Observers,
    ) -> Self {
        let shards = pool.shards.max(1);
        let per_shard = pool.connections.div_ceil(shards).max(1);
        Self {
            worker: Worker::new(slot, pid, generation, counters),
            worker_id: HeaderValue::from(slot),
            socket,
            shards: (0..shards)
                .map(|_| Shard {
                    permits: Arc::new(Semaphore::new(per_shard)),
                    idle: Mutex::new(Vec::new()),
                })
                .collect(),
            retired: AtomicBool::new(false),
            lost: AtomicU64::new(0),
            active: std::sync::atomic::AtomicUsize::new(0),
            observers,
            handoff: None,
            handed_off: Mutex::new(std::collections::HashMap::new()),
            pool: 0,
        }
    }

    /// Puts the backend in version pool `pool`.
    pub(crate) fn with_pool(mut self, pool: usize) -> Self {
        self.pool = pool;
        self
    }

    /// The version pool its slot belongs to.
    pub fn pool(&self) -> usize {
        self.pool
    }

    /// The Unix socket the worker serves HTTP on.
    pub(crate) fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Gives the backend its fd-passing channel (handoff mode).
    pub(crate) fn with_handoff(mut self, channel: Option<HandoffChannel>) -> Self {
        self.handoff = channel;
        self
    }

    /// The channel that passes connections to this worker.
    pub(crate) fn handoff(&self) -> Option<&HandoffChannel> {
        self.handoff.as_ref()
    }

    /// Counts connection `id`, about to be handed over, until [`Backend::handed_off_closed`].
    pub(crate) fn hold_handed_off(&self, id: u64, held: HandedOff) {
        self.lock_handed_off().insert(id, held);
    }

    /// The worker closed connection `id` (or it was never handed over after all).
    pub(crate) fn handed_off_closed(&self, id: u64) -> Option<HandedOff> {
        self.lock_handed_off().remove(&id)
    }

    /// The process is gone, and every connection it held with it.
    pub(crate) fn forget_handed_off(&self) {
        let all = std::mem::take(&mut *self.lock_handed_off());
        // Dropped outside the lock: each drop tells the observers.
        drop(all);
    }

    fn lock_handed_off(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, HandedOff>> {
        // A panic elsewhere while holding it leaves the map as it was: still usable.
        self.handed_off.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker as selectors see it.
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// The worker's slot id (1..=N), stable across restarts.
    pub fn slot(&self) -> usize {
        self.worker.slot()
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.worker.pid()
    }

    /// Which process of this slot this is (0 for the first, then one more per replacement).
    pub fn generation(&self) -> u64 {
        self.worker.generation()
    }

    /// Requests dispatched to this slot that have not finished.
    pub fn in_flight(&self) -> u64 {
        self.worker.in_flight()
    }

    /// The slot's counters.
    pub fn counters(&self) -> &Arc<SlotCounters> {
        self.worker.counters()
    }

    pub(crate) fn worker_id_header(&self) -> &HeaderValue {
        &self.worker_id
    }

    /// Stops pooling connections to this worker and closes the idle ones.
    pub(crate) fn retire(&self) {
        // SeqCst, paired with `Dispatched::new`'s increment and `send`'s check: either the
        // supervisor sees the request in `active`, or the request sees `retired`.
        self.retired.store(true, Ordering::SeqCst);
        for shard in self.shards.iter() {
            shard.lock_idle().clear();
        }
    }

    /// Whether the worker is draining or gone.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Whether a request sent to this process was lost and it has answered none sent since.
    pub(crate) fn lost_a_request(&self) -> bool {
        self.lost.load(Ordering::Relaxed) != 0
    }

    fn note_lost(&self) {
        self.lost.store(stamp(Instant::now()), Ordering::Relaxed);
    }

    /// A request dispatched at `started` was answered. Only one sent after the loss clears it: an
    /// answer the worker wrote before it crashed can still be read after its hang-up was.
    fn note_answered(&self, started: Instant) {
        // Read before written: an answer per request must not write a line every thread shares.
        let lost = self.lost.load(Ordering::Relaxed);
        if lost != 0 && stamp(started) > lost {
            let _ = self
                .lost
                .compare_exchange(lost, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Requests to this process not finished yet.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    fn shard(&self) -> &Shard {
        &self.shards[SHARD.get() % self.shards.len()]
    }

    /// A place for one request on a connection to this worker; `None` once the pool is closed.
    ///
    /// This thread's share first: no line another thread writes is touched. When its share is in
    /// use, a free place of another thread's is taken before anything waits, because the kernel
    /// spreads client connections over the edge threads unevenly (`SO_REUSEPORT` hashes them), so
    /// one thread's share can be short while the worker has room: measured with 1,000 connections
    /// to a 100 ms backend at `POOL_SIZE=512`, the requests that waited for their own thread's
    /// share put the p99 at 139 ms against 117 ms with shares too large to run out (medians of 4
    /// interleaved rounds). The worker's bound, `POOL_SIZE`, holds whichever threads its requests
    /// come from.
    ///
    /// A place taken so brings an idle connection of the lender's along (moved to this thread's
    /// runtime), and becomes this thread's when the request ends and the connection is pooled
    /// here, so the shares follow the load. Before, it was lent for the one request and its
    /// connection closed after use: a connect and a close per such request for as long as the
    /// spread lasted. Measured with 1,000 paced connections (9,600 req/s) to a 100 ms backend
    /// over 4 edge threads at `POOL_SIZE=512`: the master's `connect`s per request 0.165 → 0.028
    /// (one 3 s run each; 0.023 at 1024, where no share runs out, is what the clients' new
    /// connections need), its CPU 49.4 → 44.8 µs per request (43.4 at 1024; medians of 5
    /// interleaved rounds).
    async fn permit(&self) -> Option<Place> {
        let n = self.shards.len();
        let here = SHARD.get() % n;
        let mine = &self.shards[here];
        match mine.permits.clone().try_acquire_owned() {
            Ok(permit) => return Some(Place::own(permit)),
            Err(TryAcquireError::Closed) => return None,
            Err(TryAcquireError::NoPermits) => {}
        }
        for i in 1..n {
            let lender = &self.shards[(here + i) % n];
            if let Ok(permit) = lender.permits.clone().try_acquire_owned() {
                self.adopt_idle(lender, mine);
                return Some(Place::taken(permit));
            }
        }
        // Every place is in use: the first one freed, in any thread's share, is this request's
        // (or that of a request queued before it there). Waiting on this thread's share alone,
        // a thread whose places have all moved to others would wait forever.
        let waits = self
            .shards
            .iter()
            .map(|shard| Box::pin(shard.permits.clone().acquire_owned()));
        // The waits not chosen are dropped, and a place one of them was given goes back.
        let (freed, index, _) = futures_util::future::select_all(waits).await;
        let permit = freed.ok()?;
        if index == here {
            return Some(Place::own(permit));
        }
        self.adopt_idle(&self.shards[index], mine);
        Some(Place::taken(permit))
    }

    /// A place of `lender`'s was taken: an idle connection of its, if it has one, comes along to
    /// carry the request, so the worker's connections stay within `POOL_SIZE` and nobody
    /// connects or closes.
    fn adopt_idle(&self, lender: &Shard, mine: &Shard) {
        let Some(conn) = lender.lock_idle().pop() else {
            return;
        };
        match (*conn).rehome() {
            Ok(conn) if !self.is_retired() => mine.lock_idle().push(Box::new(conn)),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(slot = self.slot(), error = %e, "a pooled connection could not move threads");
            }
        }
    }

    /// Opens a dedicated hyper connection to the worker for an HTTP upgrade (WebSocket): it is
    /// spliced to the client afterwards and never pooled.
    pub(crate) async fn connect_for_upgrade(
        &self,
    ) -> Result<http1::SendRequest<RequestBody>, ConnectError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(ConnectError::Io)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        let slot = self.slot();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(slot, error = %e, "upgraded upstream connection ended");
            }
        });
        Ok(sender)
    }
}

impl Shard {
    #[allow(clippy::vec_box)]
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Box<WorkerConn>>> {
        // Only its own thread takes this lock, so it is never contended; a panic while holding it
        // cannot leave the Vec half-updated, so poison is ignored.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One request against one backend, from dispatch until dropped: holds the slot's in-flight count
/// and, when dropped, records how the request ended (the one place every path goes through).
#[derive(Debug)]
pub(crate) struct Dispatched {
    backend: Arc<Backend>,
    started: Instant,
    status: Option<u16>,
    outcome: Outcome,
}

impl Dispatched {
    pub(crate) fn new(backend: Arc<Backend>) -> Self {
        backend.active.fetch_add(1, Ordering::SeqCst);
        backend.counters().in_flight.fetch_add(1, Ordering::Relaxed);
        backend.counters().requests.fetch_add(1, Ordering::Relaxed);
        Self {
            backend,
            started: Instant::now(),
            status: None,
            // Dropped before anything else is recorded, the request was abandoned by its client;
            // failures are marked where they happen.
            outcome: Outcome::Abandoned,
        }
    }

    pub(crate) fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The worker (or the way to it) failed this request.
    pub(crate) fn fail(&mut self) {
        self.outcome = Outcome::Failed;
    }

    /// A response head arrived; if the body is then dropped early, the client abandoned it.
    pub(crate) fn set_status(&mut self, status: u16) {
        self.status = Some(status);
        self.outcome = Outcome::Abandoned;
    }
}

impl Drop for Dispatched {
    fn drop(&mut self) {
        let counters = self.backend.counters();
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.backend.active.fetch_sub(1, Ordering::SeqCst);
        let done = Completion {
            slot: self.backend.slot(),
            pid: self.backend.pid(),
            pool: self.backend.pool(),
            latency: self.started.elapsed(),
            status: self.status,
            outcome: self.outcome,
        };
        if done.is_error() {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        for observer in self.backend.observers.iter() {
            observer.on_complete(&done);
        }
    }
}

/// A connection handed to a worker with its upgrade: in flight, and one of `MAX_CONNECTIONS`,
/// until dropped. Held for those two drops only.
pub(crate) struct HandedOff {
    _dispatched: Dispatched,
    _connection: OwnedSemaphorePermit,
}

impl HandedOff {
    pub(crate) fn new(dispatched: Dispatched, connection: OwnedSemaphorePermit) -> Self {
        Self {
            _dispatched: dispatched,
            _connection: connection,
        }
    }
}

/// A pooled connection in use. Dropped without `Lease::release`, the connection is closed: its
/// response may not have been read to the end, so it cannot carry another request.
#[derive(Debug)]
pub struct Lease {
    conn: Option<Box<WorkerConn>>,
    in_flight: Dispatched,
    place: Place,
}

/// A request's place in a backend's pool: a permit of this thread's share, or one taken from
/// another thread's, which becomes this thread's when its connection is pooled here.
#[derive(Debug)]
struct Place {
    /// Held for the request's life, then given back to the share it is from, unless it moved.
    permit: Option<OwnedSemaphorePermit>,
    /// Whether the permit is another thread's.
    taken: bool,
}

impl Place {
    fn own(permit: OwnedSemaphorePermit) -> Self {
        Self {
            permit: Some(permit),
            taken: false,
        }
    }

    fn taken(permit: OwnedSemaphorePermit) -> Self {
        Self {
            permit: Some(permit),
            taken: true,
        }
    }
}

impl Lease {
    /// A response head arrived with `status`.
    pub(crate) fn set_status(&mut self, status: u16) {
        self.in_flight.set_status(status);
    }

    /// The worker the request went to.
    pub(crate) fn backend(&self) -> &Arc<Backend> {
        self.in_flight.backend()
    }

    /// The response was read to its end: the connection can serve the next request.
    pub(crate) fn release(&mut self) {
        self.in_flight.outcome = Outcome::Complete;
        let backend = self.in_flight.backend();
        // Pooled again only if the next request on it cannot be misread: the response was read
        // to its very end with no stray byte behind it (else the next answer would start with
        // the last one's leftovers: a desync), neither side said `Connection: close` (RFC 9112
        // §9.6), and the worker is not draining (a draining worker closes its idle connections,
        // and a request written onto one of them would be lost).
        if let Some(conn) = self.conn.take()
            && conn.is_reusable()
            && !backend.retired.load(Ordering::Relaxed)
        {
            let shard = backend.shard();
            shard.lock_idle().push(conn);
            if self.place.taken
                && let Some(permit) = self.place.permit.take()
            {
                // The place moves here for good, where its connection is pooled now: the
                // lender's share is one smaller, this thread's one larger, so the shares follow
                // the load and the next request like it finds a place of its own.
                permit.forget();
                shard.permits.add_permits(1);
            }
        }
    }

    /// Closes the connection instead of pooling it when the lease is released.
    pub(crate) fn discard_connection(&mut self) {
        self.conn = None;
    }

    /// The connection the response is read from.
    pub(crate) fn conn(&mut self) -> Option<&mut WorkerConn> {
        self.conn.as_deref_mut()
    }

    /// The response failed mid-way: record a failure and close the connection.
    pub(crate) fn fail(mut self) {
        self.in_flight.outcome = Outcome::Failed;
    }
}

/// Why a connection to a worker could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// The socket refused or vanished: the worker is gone or not listening.
    Io(std::io::Error),
    /// The socket accepted but HTTP/1.1 could not start.
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Io(e) => write!(f, "connect to worker socket: {e}"),
            ConnectError::Handshake(e) => write!(f, "handshake with worker: {e}"),
        }
    }
}

/// How sending to one backend went wrong: the cases the proxy decides on (retry as is, resend
/// if safe, answer the client's own error, or 504).
#[derive(Debug)]
pub(crate) enum SendError {
    /// Nothing reached the worker; the request may go elsewhere as it is.
    NotSent(NotSent),
    /// The request (or part of it) was written, then the connection failed before a response head.
    Sent(Lost),
    /// The client's request body failed.
    Body(RequestBodyError),
    /// No response head within `UPSTREAM_TIMEOUT`.
    TimedOut,
}

/// Why a request never reached its worker.
#[derive(Debug)]
pub(crate) enum NotSent {
    /// The worker began draining after this request picked it.
    Draining,
    /// The backend is gone (its pool was closed).
    PoolClosed,
    /// The worker's socket refused or vanished.
    Connect(io::Error),
    /// Writing the first byte failed.
    Write(io::Error),
    /// Every pooled connection tried had been closed by the worker.
    KeepsClosing,
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotSent::Draining => f.write_str("the worker is draining"),
            NotSent::PoolClosed => f.write_str("the worker's pool is closed"),
            NotSent::Connect(e) => write!(f, "connect to worker socket: {e}"),
            NotSent::Write(e) => write!(f, "write to worker: {e}"),
            NotSent::KeepsClosing => f.write_str("the worker keeps closing connections"),
        }
    }
}

/// How many times one request may find a dead pooled connection before it gives up on this backend.
const STALE_CONNECTION_TRIES: usize = 3;

/// Sends the request to `in_flight`'s backend over a pooled connection, waiting for a pool permit
/// first; the whole wait for the response head is bounded by `timeout`. `req` is only borrowed,
/// and `body` is untouched when the answer is [`SendError::NotSent`], so the request can go to
/// another worker as it is.
///
/// Every failure is recorded as the worker's (`Outcome::Failed`) here, where it is known. Were this
/// future dropped from outside instead, it is because the client went away, and the request ends
/// as abandoned: not the worker's fault, so it must not count as an error or eject the worker.
pub(crate) async fn send(
    mut in_flight: Dispatched,
    req: &request::Parts,
    added: Added<'_>,
    body: &mut RequestBody,
    watch: &Watch,
    max_head: usize,
) -> Result<(Head, Lease), SendError> {
    // Borrowed from the in-flight record, not cloned (see `proxy::attempt`).
    let backend: &Backend = in_flight.backend();
    if backend.retired.load(Ordering::SeqCst) {
        // It began draining after this request picked it: nothing was sent, so another worker can
        // take it, whatever its method; and this is no failure of the worker's.
        return Err(SendError::NotSent(NotSent::Draining));
    }
    watch.await_worker();
    let sent = watch
        .bound(async {
            let Some(place) = backend.permit().await else {
                return Err(SendError::NotSent(NotSent::PoolClosed));
            };
            for _ in 0..STALE_CONNECTION_TRIES {
                let pooled = backend.shard().lock_idle().pop();
                let fresh = pooled.is_none();
                let mut conn = match pooled {
                    Some(conn) => conn,
                    None => WorkerConn::connect(&backend.socket)
                        .await
                        .map_err(|e| SendError::NotSent(NotSent::Connect(e)))?,
                };
                match conn.send(req, added, body, max_head).await {
                    Ok(head) => return Ok((head, conn, place)),
                    // A pooled connection the worker had closed: try another.
                    Err(client::Error::NotSent(_)) if !fresh => continue,
                    Err(client::Error::NotSent(e)) => {
                        return Err(SendError::NotSent(NotSent::Write(e)));
                    }
                    Err(client::Error::Lost(why)) => return Err(SendError::Sent(why)),
                    Err(client::Error::Body(e)) => return Err(SendError::Body(e)),
                }
            }
            Err(SendError::NotSent(NotSent::KeepsClosing))
        })
        .await;
    watch.busy();
    match sent {
        Some(Ok((head, conn, place))) => {
            backend.note_answered(in_flight.started);
            Ok((
                head,
                Lease {
                    conn: Some(conn),
                    in_flight,
                    place,
                },
            ))
        }
        // The client's body failed: not the worker's doing, so the outcome stays "abandoned".
        Some(Err(e @ SendError::Body(_))) => Err(e),
        Some(Err(e)) => {
            if matches!(e, SendError::Sent(_)) {
                backend.note_lost();
            }
            in_flight.outcome = Outcome::Failed;
            Err(e)
        }
        None => {
            in_flight.outcome = Outcome::Failed;
            Err(SendError::TimedOut)
        }
    }
}
