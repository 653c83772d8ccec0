//! [`Upstreams`]: the workers that may take traffic right now, as the edge and the selectors see
//! them.
//!
//! Copy-on-write: the set is replaced whole when a worker becomes ready or leaves (rare), so the
//! request path only clones one `Arc` under a read lock (every request). Each entry is kept twice,
//! as the selector's plain [`Worker`] view and as the edge's [`Backend`], in the same order, so a
//! selector's index names the backend without a lookup or an allocation.
//!
//! While no worker can take a request (all crashed, all restarting), the edge waits here for one
//! (`Upstreams::wait_for`) instead of answering 503 at once: every change of the set bumps a
//! `watch`, so waiters wake when a worker becomes Ready, without polling. Only that slow path
//! subscribes; a request that finds the set non-empty takes no extra lock and allocates nothing.
//!
//! Version pools (`supervisor::pool`): the set is kept sorted by (pool, slot), so each pool's
//! workers are one run of it, and [`Ready`] records where each run starts and ends. A request
//! whose pool was chosen (`balance::split`) is placed by the selector among that run only, a
//! sub-slice: still no copy and no allocation. In a one-pool cluster the run is the whole set and
//! nothing else changes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::pool::Backend;
use crate::balance::{RequestInfo, Selector, Worker};

/// The ready workers, replaced whole on every change (see the module docs).
#[derive(Debug)]
pub struct Upstreams {
    ready: RwLock<Arc<Ready>>,
    /// Bumped, under `ready`'s write lock, each time the set is replaced: a thread whose cached
    /// set is of this version uses it without touching the lock (see [`Upstreams::with_ready`]).
    version: AtomicU64,
    /// Tells this `Upstreams` from any other in the process, for the threads' cached sets.
    id: u64,
    /// Bumped on every change of `ready` or of `coming`: what waiters wait on.
    changed: watch::Sender<u64>,
    /// Whether a worker may still become Ready: false once every slot is Failed or the cluster
    /// shuts down, so a request does not wait out `QUEUE_TIMEOUT` for nothing.
    coming: AtomicBool,
    /// Requests waiting for a worker now, bounded by `QUEUE_MAX`.
    waiting: AtomicUsize,
    /// The last few processes that exited, and whether a signal from outside ended them: lets the
    /// edge tell a worker killed under a request from one the request itself killed.
    exits: Mutex<VecDeque<(u32, bool)>>,
    /// One permit: requests resent after their worker died under them go to their next worker one
    /// at a time (see [`Upstreams::suspect_lane`]).
    suspects: tokio::sync::Semaphore,
}

/// A thread's copy of one [`Upstreams`]' ready set, and which version of it.
struct Cached {
    upstreams: u64,
    version: u64,
    ready: Arc<Ready>,
}

/// How many exits [`Upstreams`] remembers; a request asks only about a worker that just failed it.
const EXITS_KEPT: usize = 64;

impl Default for Upstreams {
    fn default() -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Self {
            ready: RwLock::default(),
            version: AtomicU64::new(0),
            id: IDS.fetch_add(1, Ordering::Relaxed),
            changed: watch::Sender::new(0),
            // At start the first workers are on their way.
            coming: AtomicBool::new(true),
            waiting: AtomicUsize::new(0),
            exits: Mutex::new(VecDeque::with_capacity(EXITS_KEPT)),
            suspects: tokio::sync::Semaphore::new(1),
        }
    }
}

/// Why `Upstreams::wait_for` found no worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// No worker can become Ready (every slot Failed, or shutting down).
    NoneComing,
    /// `QUEUE_MAX` requests are already waiting.
    QueueFull,
    /// None became Ready within `QUEUE_TIMEOUT`.
    TimedOut,
}

impl NotReady {
    /// What the client is told, in its 503.
    pub fn message(self) -> &'static str {
        match self {
            NotReady::NoneComing => "no worker is ready to take this request",
            NotReady::QueueFull => "no worker is ready and QUEUE_MAX requests are already waiting",
            NotReady::TimedOut => "no worker became ready within QUEUE_TIMEOUT",
        }
    }
}

/// A place among the waiting requests, given back on drop (also when the waiting future is
/// dropped because its client left).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One version of the ready set: the same workers twice, in (pool, slot) order.
#[derive(Debug, Default)]
pub struct Ready {
    workers: Box<[Worker]>,
    backends: Box<[Arc<Backend>]>,
    /// Each pool that has a ready worker, with where its run of `workers` starts and ends.
    pools: Box<[(usize, std::ops::Range<usize>)]>,
}

impl Ready {
    /// `backends` must be sorted by (pool, slot).
    fn new(backends: Vec<Arc<Backend>>) -> Self {
        let mut pools: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            match pools.last_mut() {
                Some((pool, run)) if *pool == b.pool() => run.end = i + 1,
                _ => pools.push((b.pool(), i..i + 1)),
            }
        }
        Self {
            workers: backends.iter().map(|b| b.worker().clone()).collect(),
            backends: backends.into(),
            pools: pools.into(),
        }
    }

    /// The ready backend of `slot`, if it has one.
    pub(crate) fn backend_of_slot(&self, slot: usize) -> Option<Arc<Backend>> {
        self.backends.iter().find(|b| b.slot() == slot).cloned()
    }

    /// The ready workers of version pool `pool` (empty when it has none).
    pub fn pool(&self, pool: usize) -> &[Worker] {
        self.run_of(pool).map_or(&[], |run| &self.workers[run])
    }

    /// The ready backends of version pool `pool`.
    pub fn pool_backends(&self, pool: usize) -> &[Arc<Backend>] {
        self.run_of(pool).map_or(&[], |run| &self.backends[run])
    }

    fn run_of(&self, pool: usize) -> Option<std::ops::Range<usize>> {
        self.pools
            .iter()
            .find(|(p, _)| *p == pool)
            .map(|(_, run)| run.clone())
    }

    /// The workers as a selector sees them.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    /// How many are ready.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// Asks `selector` to place `req`; `None` when no worker is ready or the selector refuses.
    /// The hot path: the selector sees the shared set, and nothing is copied.
    pub(crate) fn select(
        &self,
        selector: &dyn Selector,
        req: &RequestInfo<'_>,
    ) -> Option<Arc<Backend>> {
        if self.is_empty() {
            return None;
        }
        let i = selector.select(req, &self.workers)?;
        self.backends.get(i).cloned()
    }
}

impl Ready {
    /// The processes that lost a request and have answered none since (see
    /// [`Backend::lost_a_request`]): most likely dying, though not yet out of this set.
    pub(crate) fn losing(&self) -> impl Iterator<Item = u32> + '_ {
        self.backends
            .iter()
            .filter(|b| b.lost_a_request())
            .map(|b| b.pid())
    }

    /// As [`Ready::select`], among the workers of version pool `pool` when one is given. A pool
    /// with no ready worker (its last one just drained, say) is no reason to refuse a request:
    /// then any ready worker takes it.
    pub(crate) fn select_in(
        &self,
        pool: Option<usize>,
        selector: &dyn Selector,
        req: &RequestInfo<'_>,
    ) -> Option<Arc<Backend>> {
        let run = match pool.and_then(|p| self.run_of(p)) {
            Some(run) => run,
            None => return self.select(selector, req),
        };
        let i = selector.select(req, &self.workers[run.clone()])?;
        self.backends.get(run.start + i).cloned()
    }

    /// As [`Ready::select_in`], leaving out every process in `exclude`.
    pub(crate) fn select_in_excluding(
        &self,
        pool: Option<usize>,
        selector: &dyn Selector,
        req: &RequestInfo<'_>,
        exclude: &[u32],
    ) -> Option<Arc<Backend>> {
        if pool.is_none() {
            return self.select_excluding(selector, req, exclude);
        }
        if exclude.is_empty() || !self.backends.iter().any(|b| exclude.contains(&b.pid())) {
            return self.select_in(pool, selector, req);
        }
        let rest = Ready::new(
            self.backends
                .iter()
                .filter(|b| !exclude.contains(&b.pid()))
                .cloned()
                .collect(),
        );
        rest.select_in(pool, selector, req)
    }

    /// As [`Ready::select`], leaving out every process in `exclude` (the workers that already
    /// failed this request). Only retries come here, so the filtered copy is fine.
    pub(crate) fn select_excluding(
        &self,
        selector: &dyn Selector,
        req: &RequestInfo<'_>,
        exclude: &[u32],
    ) -> Option<Arc<Backend>> {
        if exclude.is_empty() || !self.backends.iter().any(|b| exclude.contains(&b.pid())) {
            return self.select(selector, req);
        }
        let rest = Ready::new(
            self.backends
                .iter()
                .filter(|b| !exclude.contains(&b.pid()))
                .cloned()
                .collect(),
        );
        rest.select(selector, req)
    }
}

impl Upstreams {
    /// Waits up to `timeout` until `pick` finds what it needs in the ready set, as at most `max`
    /// waiting requests at a time. `pick` is tried first at once; then again after every change.
    pub(crate) async fn wait_for<T>(
        &self,
        timeout: Duration,
        max: usize,
        mut pick: impl FnMut(&Arc<Ready>) -> Option<T>,
    ) -> Result<T, NotReady> {
        // Subscribed before looking, so a change between the look and the wait still wakes us.
        let mut changes = self.changed.subscribe();
        if let Some(found) = pick(&self.snapshot()) {
            return Ok(found);
        }
        if !self.coming.load(Ordering::Acquire) {
            return Err(NotReady::NoneComing);
        }
        if timeout.is_zero() {
            return Err(NotReady::TimedOut);
        }
        let taken = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(NotReady::QueueFull);
        }
        let _place = Waiting(&self.waiting);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Err(_) => return Err(NotReady::TimedOut),
                // The supervisor's side is gone: nothing will ever change.
                Ok(Err(_)) => return Err(NotReady::NoneComing),
                Ok(Ok(())) => {}
            }
            if let Some(found) = pick(&self.snapshot()) {
                return Ok(found);
            }
            if !self.coming.load(Ordering::Acquire) {
                return Err(NotReady::NoneComing);
            }
        }
    }

    /// How many requests are waiting for a worker now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Says whether any worker may still become Ready; waiters learn of a change at once.
    pub(crate) fn set_coming(&self, coming: bool) {
        if self.coming.swap(coming, Ordering::AcqRel) != coming {
            self.bump();
        }
    }

    /// Records that process `pid` exited, and whether a signal from outside ended it.
    pub(crate) fn note_exit(&self, pid: u32, from_outside: bool) {
        {
            let mut exits = self.exits.lock().unwrap_or_else(|p| p.into_inner());
            if exits.len() == EXITS_KEPT {
                exits.pop_front();
            }
            exits.push_back((pid, from_outside));
        }
        self.bump();
    }

    /// Whether process `pid` was ended by a signal from outside, waiting up to `timeout` for the
    /// supervisor to learn how it ended; false if it did not end (or not within `timeout`).
    pub(crate) async fn killed_from_outside(&self, pid: u32, timeout: Duration) -> bool {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let known = {
                let exits = self.exits.lock().unwrap_or_else(|p| p.into_inner());
                exits.iter().rev().find(|(p, _)| *p == pid).map(|(_, o)| *o)
            };
            if let Some(outside) = known {
                return outside;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Err(_) | Ok(Err(_)) => return false,
            }
        }
    }

    /// Waits (up to `timeout`) for the suspects' lane. Every request in flight on a worker that
    /// crashed is a suspect, and from the edge they look alike; resent together, a query of death
    /// among them would kill the next worker with all of them on it. One at a time, only the query
    /// of death is on that worker when it dies; the others find it dead before sending (harmless)
    /// and go on. `None` after `timeout`: a slow suspect must not hold the others for long.
    pub(crate) async fn suspect_lane(
        &self,
        timeout: Duration,
    ) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(timeout, self.suspects.acquire())
            .await
            .ok()
            .and_then(Result::ok)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The current ready set.
    pub fn snapshot(&self) -> Arc<Ready> {
        self.ready.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `f` on the current ready set, as [`Upstreams::snapshot`] would give it.
    ///
    /// Why not `snapshot`: on every request, its read lock and its clone of the shared `Arc` were
    /// four atomic writes to two cache lines every edge thread writes too. Here each thread keeps
    /// the last set it took, and takes a new one only when `version` says the set changed: one
    /// atomic read per request. A set replaced since is seen on the thread's next request, as one
    /// taken just before the change would have been.
    pub(crate) fn with_ready<T>(&self, f: impl FnOnce(&Ready) -> T) -> T {
        thread_local! {
            static CACHED: RefCell<Option<Cached>> = const { RefCell::new(None) };
        }
        let version = self.version.load(Ordering::Acquire);
        let mut f = Some(f);
        let out = CACHED
            .try_with(|cell| {
                let mut cached = cell.try_borrow_mut().ok()?;
                let fresh = matches!(&*cached,
                    Some(c) if c.upstreams == self.id && c.version == version);
                if !fresh {
                    *cached = Some(Cached {
                        upstreams: self.id,
                        version,
                        ready: self.snapshot(),
                    });
                }
                let ready = &cached.as_ref()?.ready;
                // Taken last: `f` is run here, or not taken at all.
                let f = f.take()?;
                Some(f(ready))
            })
            .ok()
            .flatten();
        match (out, f) {
            (Some(out), _) => out,
            // The thread is exiting, or `f` itself asked for the set.
            (None, Some(f)) => f(&self.snapshot()),
            (None, None) => unreachable!("`f` is taken only to be run"),
        }
    }

    /// Adds `backend`, replacing any other process of the same slot.
    pub(crate) fn insert(&self, backend: Arc<Backend>) {
        let mut ready = self.ready.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<_> = ready
            .backends
            .iter()
            .filter(|b| b.slot() != backend.slot())
            .cloned()
            .collect();
        next.push(backend);
        next.sort_by_key(|b| (b.pool(), b.slot()));
        *ready = Arc::new(Ready::new(next));
        self.version.fetch_add(1, Ordering::Release);
        drop(ready);
        self.bump();
    }

    /// Removes the process `pid` if it is in the set; true if it was.
    pub(crate) fn remove_pid(&self, pid: u32) -> bool {
        let mut ready = self.ready.write().unwrap_or_else(|p| p.into_inner());
        if !ready.backends.iter().any(|b| b.pid() == pid) {
            return false;
        }
        let next = ready
            .backends
            .iter()
            .filter(|b| b.pid() != pid)
            .cloned()
            .collect();
        *ready = Arc::new(Ready::new(next));
        self.version.fetch_add(1, Ordering::Release);
        drop(ready);
        self.bump();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pick that never finds anything: the set stays empty in these tests.
    fn nothing(_: &Arc<Ready>) -> Option<()> {
        None
    }

    #[tokio::test]
    async fn with_nothing_coming_a_request_does_not_wait() {
        let u = Upstreams::default();
        u.set_coming(false);
        let started = std::time::Instant::now();
        let got = u.wait_for(Duration::from_secs(5), 10, nothing).await;
        assert_eq!(got, Err(NotReady::NoneComing));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn past_queue_max_a_request_is_turned_away_and_a_zero_timeout_waits_not_at_all() {
        let u = Upstreams::default();
        assert_eq!(
            u.wait_for(Duration::from_secs(5), 0, nothing).await,
            Err(NotReady::QueueFull)
        );
        assert_eq!(
            u.wait_for(Duration::ZERO, 10, nothing).await,
            Err(NotReady::TimedOut)
        );
    }

    #[tokio::test]
    async fn a_waiter_times_out_and_gives_its_place_back() {
        let u = Upstreams::default();
        let got = u.wait_for(Duration::from_millis(30), 1, nothing).await;
        assert_eq!(got, Err(NotReady::TimedOut));
        assert_eq!(u.waiting(), 0, "the place was given back");
    }

    #[tokio::test]
    async fn waiters_wake_when_the_last_hope_goes() {
        let u = Arc::new(Upstreams::default());
        let waiter = tokio::spawn({
            let u = u.clone();
            async move { u.wait_for(Duration::from_secs(30), 10, nothing).await }
        });
        // Until the waiter is queued; bounded, so a bug fails rather than hangs.
        for _ in 0..1000 {
            if u.waiting() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(u.waiting(), 1);
        u.set_coming(false);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken at once, not after 30 s")
            .expect("the waiter did not panic");
        assert_eq!(got, Err(NotReady::NoneComing));
        assert_eq!(u.waiting(), 0);
    }

    fn backend(slot: usize, pool: usize) -> Arc<Backend> {
        let shape = super::super::pool::PoolShape {
            connections: 1,
            shards: 1,
        };
        let observers: crate::slot::Observers = Arc::new([]);
        Arc::new(
            Backend::new(
                slot,
                1000 + slot as u32,
                0,
                format!("/nonexistent/w{slot}.sock").into(),
                Arc::default(),
                shape,
                observers,
            )
            .with_pool(pool),
        )
    }

    /// Picks the first worker it is shown, so a test sees which slice it was given.
    struct First;

    impl Selector for First {
        fn select(&self, _: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize> {
            (!ready.is_empty()).then_some(0)
        }

        fn name(&self) -> &'static str {
            "first"
        }
    }

    fn info<'a>(
        method: &'a http::Method,
        uri: &'a http::Uri,
        headers: &'a http::HeaderMap,
    ) -> RequestInfo<'a> {
        RequestInfo {
            method,
            uri,
            headers,
            client: "127.0.0.1:1".parse().expect("an address"),
        }
    }

    #[test]
    fn each_pool_is_one_run_of_the_ready_set_and_a_request_is_placed_inside_its_pool() {
        let u = Upstreams::default();
        // Inserted out of order, across two pools.
        for (slot, pool) in [(3, 1), (1, 0), (4, 1), (2, 0)] {
            u.insert(backend(slot, pool));
        }
        let ready = u.snapshot();
        let slots = |ws: &[Worker]| ws.iter().map(Worker::slot).collect::<Vec<_>>();
        assert_eq!(slots(ready.workers()), [1, 2, 3, 4]);
        assert_eq!(slots(ready.pool(0)), [1, 2]);
        assert_eq!(slots(ready.pool(1)), [3, 4]);
        assert!(ready.pool(7).is_empty());
        let (m, uri, h) = (
            http::Method::GET,
            http::Uri::from_static("/"),
            http::HeaderMap::new(),
        );
        let req = info(&m, &uri, &h);
        let pick = |pool| ready.select_in(pool, &First, &req).map(|b| b.slot());
        // One pool, or none chosen: the whole set, as before pools existed.
        assert_eq!(pick(None), Some(1));
        assert_eq!(
            pick(Some(1)),
            Some(3),
            "the selector saw pool 1's workers only"
        );
        // A pool with no ready worker falls back to the whole set rather than refusing.
        assert_eq!(pick(Some(7)), Some(1));
        let retried = ready.select_in_excluding(Some(1), &First, &req, &[1003]);
        assert_eq!(
            retried.map(|b| b.slot()),
            Some(4),
            "a retry stays in its pool"
        );
    }

    #[tokio::test]
    async fn an_exit_is_told_apart_by_its_cause_and_an_unknown_one_times_out() {
        let u = Upstreams::default();
        u.note_exit(10, true);
        u.note_exit(11, false);
        assert!(u.killed_from_outside(10, Duration::from_secs(1)).await);
        assert!(!u.killed_from_outside(11, Duration::from_secs(1)).await);
        assert!(!u.killed_from_outside(12, Duration::from_millis(20)).await);
    }
}
