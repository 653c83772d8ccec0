//! One timer per HTTP connection, for both of the waits that must not last forever.
//!
//! A client connection at the master's edge waits either for the client's next request head
//! (`HEADER_TIMEOUT`, which is also how long an idle keep-alive connection stays open) or, once a
//! request is in, for the worker's response head (`UPSTREAM_TIMEOUT`). A connection handed to a
//! worker (handoff mode) has only the first; the master's own connections to a worker, neither. The obvious way is a timer per wait: hyper's header
//! timer allocates a fresh one for every request, and `tokio::time::timeout` registers and removes
//! another. Measured with callgrind, those two timers were 2,300 of the master's 23,600
//! instructions per proxied request, more than parsing the request.
//!
//! Here the request path only writes down what the connection is waiting for and since when
//! ([`Watch`]: one atomic word and a clock read). The connection's task ([`drive`]) owns a single
//! alarm for the connection's whole life, which rings at least once per shorter timeout. When it
//! rings, the current wait's deadline is checked: if it has passed, an idle or half-sent connection
//! is closed, and a request still waiting for its worker is told to give up (it answers 504);
//! otherwise the alarm is set for that deadline, or one shorter timeout on, whichever is sooner.
//! So no timer is touched per request, and a wait is cut off at its deadline, to the millisecond.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::shutdown::Shutdown;

/// What a connection is waiting for, in the low two bits of [`Watch::state`].
const HEAD: u64 = 0;
const WORKER: u64 = 1;
/// A request is being answered (or its answer streamed): nothing to time.
const BUSY: u64 = 2;
/// The worker's answer is overdue; the request, when next polled, gives up.
const EXPIRED: u64 = 3;
const PHASE_BITS: u32 = 2;

/// What one client connection is waiting for, and since when. Written by the request path, read
/// by [`drive`]; both run in the connection's own task, so relaxed ordering is enough (atomics only
/// because hyper needs the service to be `Send`).
#[derive(Debug)]
pub(crate) struct Watch {
    born: Instant,
    /// `nanoseconds since born << 2 | phase`.
    state: AtomicU64,
    /// False when no deadline applies: then nothing is recorded (not even a clock read).
    timed: bool,
}

impl Watch {
    /// A new connection: waiting for its first request head, from now.
    pub(crate) fn new(limits: &Deadlines) -> Self {
        Self {
            born: Instant::now(),
            state: AtomicU64::new(HEAD),
            timed: limits.shortest().is_some(),
        }
    }

    /// The client's next request head is awaited from now.
    pub(crate) fn await_head(&self) {
        self.start(HEAD);
    }

    /// The worker's response head is awaited from now.
    pub(crate) fn await_worker(&self) {
        self.start(WORKER);
    }

    /// A request is in hand: neither deadline applies until the next wait starts.
    pub(crate) fn busy(&self) {
        self.state.store(BUSY, Ordering::Relaxed);
    }

    /// Runs `fut` until it finishes (`Some`) or the worker's deadline passes (`None`).
    ///
    /// A future of its own rather than an `async fn`: one of those would hold `fut` twice, as its
    /// argument and pinned, and `fut` is most of a proxied request's state (see `http::recycle`).
    pub(crate) fn bound<F: Future>(&self, fut: F) -> Bound<'_, F> {
        Bound { watch: self, fut }
    }

    fn start(&self, phase: u64) {
        if !self.timed {
            return;
        }
        let since = self.born.elapsed().as_nanos() as u64;
        self.state
            .store(since << PHASE_BITS | phase, Ordering::Relaxed);
    }

    fn phase(&self) -> u64 {
        self.load().0
    }

    /// The phase, and when it started.
    fn load(&self) -> (u64, u64) {
        let s = self.state.load(Ordering::Relaxed);
        (s & ((1 << PHASE_BITS) - 1), s >> PHASE_BITS)
    }

    fn at(&self, since: u64) -> Instant {
        self.born + Duration::from_nanos(since)
    }

    /// Marks the worker's wait as overdue, if that is still the wait `since` started.
    fn expire(&self, since: u64) {
        let _ = self.state.compare_exchange(
            since << PHASE_BITS | WORKER,
            EXPIRED,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// How long each wait may last; `None` is no limit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Deadlines {
    head: Option<Duration>,
    worker: Option<Duration>,
}

impl Deadlines {
    /// Both waits timed: a client connection at the edge (`HEADER_TIMEOUT`, `UPSTREAM_TIMEOUT`).
    pub(crate) fn edge(header: Duration, upstream: Duration) -> Self {
        Self {
            head: Some(header),
            worker: Some(upstream),
        }
    }

    /// Only the client's request heads are timed (a connection served directly by a worker).
    pub(crate) fn head(timeout: Duration) -> Self {
        Self {
            head: Some(timeout),
            worker: None,
        }
    }

    fn of(&self, phase: u64) -> Option<Duration> {
        match phase {
            HEAD => self.head,
            WORKER => self.worker,
            _ => None,
        }
    }

    fn shortest(&self) -> Option<Duration> {
        match (self.head, self.worker) {
            (Some(h), Some(w)) => Some(h.min(w)),
            (h, w) => h.or(w),
        }
    }
}

/// A connection being served that can be asked to finish the request in progress and close.
pub(crate) trait Graceful {
    /// Idle keep-alive connections close at once; a request in progress is answered first.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

/// A connection with nothing left to serve because its socket went elsewhere (a WebSocket
/// upgrade handed to a worker): done at once, with nothing to drain.
pub(crate) struct HandedOver;

impl Future for HandedOver {
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(()))
    }
}

impl Graceful for HandedOver {
    fn graceful_shutdown(self: Pin<&mut Self>) {}
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<crate::error::BoxError>,
    B: http_body::Body + 'static,
    B::Error: Into<crate::error::BoxError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// Serves one HTTP/1 connection until it ends, enforcing the deadlines `watch` describes. When
/// `stop` fires, asks the connection to finish the request in progress and close (idle keep-alive
/// connections close at once); hyper-util's `GracefulShutdown` cannot watch connections that allow
/// upgrades, hence this.
pub(crate) async fn drive<C, E>(
    conn: C,
    stop: Shutdown,
    watch: &Watch,
    limits: Deadlines,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>> + Graceful,
{
    let mut conn = std::pin::pin!(conn);
    let probe = stop.clone();
    let mut stop = std::pin::pin!(stop.wait());
    let (mut stop_armed, mut stopping) = (false, false);
    let mut alarm = std::pin::pin!(tokio::time::sleep_until(watch.born));
    let mut alarm_armed = false;
    // The waiter and the alarm are polled again only when they may have fired: re-registering
    // them on every turn cost more than the timers this replaces. Skipping it is sound because
    // this future is its task's own, so the waker they hold is always the one we would pass.
    poll_fn(|cx| {
        loop {
            // The connection first: it is what woke us nearly every time.
            if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                return Poll::Ready(res);
            }
            if !stopping && (!stop_armed || probe.changed()) {
                stop_armed = true;
                if stop.as_mut().poll(cx).is_ready() {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                    continue;
                }
            }
            if alarm_armed && !alarm.is_elapsed() {
                return Poll::Pending;
            }
            let Some(shortest) = limits.shortest() else {
                return Poll::Pending;
            };
            // The alarm rang (or was never set): act on the current wait if it is over, else set
            // the alarm again, no later than one shortest timeout from now. Any wait that starts
            // after now ends after that, so the alarm never has to be moved when a wait starts.
            let now = Instant::now();
            let next = now + shortest;
            let (phase, since) = watch.load();
            let at = match limits.of(phase) {
                Some(limit) => {
                    let deadline = watch.at(since) + limit;
                    if deadline <= now {
                        match phase {
                            // No request head in time: close, as hyper's header timeout does.
                            HEAD => return Poll::Ready(Ok(())),
                            // The request gives up the next time the connection polls it: now.
                            _ => {
                                watch.expire(since);
                                continue;
                            }
                        }
                    }
                    deadline.min(next)
                }
                None => next,
            };
            alarm.as_mut().reset(at);
            alarm_armed = true;
            if alarm.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await
}

/// A response body that, when hyper is done with it, starts the wait for the client's next request.
/// (Ending the wait when the response head is ready would cut off a body streamed for longer than
/// `HEADER_TIMEOUT`.)
#[derive(Debug)]
pub(crate) struct Watched<B> {
    body: B,
    watch: Arc<Watch>,
}

impl<B> Watched<B> {
    pub(crate) fn new(body: B, watch: Arc<Watch>) -> Self {
        Self { body, watch }
    }
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        self.watch.await_head();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_records_its_phase_and_start() {
        let w = Watch::new(&Deadlines::head(Duration::from_secs(1)));
        assert_eq!(w.load(), (HEAD, 0));
        w.await_worker();
        let (phase, since) = w.load();
        assert_eq!(phase, WORKER);
        w.busy();
        assert_eq!(w.load(), (BUSY, 0));
        w.await_head();
        let (phase, later) = w.load();
        assert_eq!(phase, HEAD);
        assert!(later >= since, "{later} < {since}");
    }

    #[test]
    fn only_the_wait_that_ran_late_is_expired() {
        let w = Watch::new(&Deadlines::head(Duration::from_secs(1)));
        w.await_worker();
        let (_, since) = w.load();
        w.expire(since + 1);
        assert_eq!(w.phase(), WORKER, "another wait's deadline");
        w.expire(since);
        assert_eq!(w.phase(), EXPIRED);
    }

    #[tokio::test]
    async fn bound_gives_up_once_expired_and_not_before() {
        let w = Watch::new(&Deadlines::head(Duration::from_secs(1)));
        assert_eq!(w.bound(async { 7 }).await, Some(7));
        w.await_worker();
        let (_, since) = w.load();
        w.expire(since);
        assert_eq!(w.bound(std::future::pending::<()>()).await, None);
    }
}

pin_project_lite::pin_project! {
    /// [`Watch::bound`]'s future.
    pub(crate) struct Bound<'a, F> {
        watch: &'a Watch,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Bound<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.fut.poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending if this.watch.phase() == EXPIRED => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Why a [`Stall`]-guarded body ended early: it sent nothing for `BODY_TIMEOUT` (cut, and answered
/// 408 where an answer can still be given, RFC 9110 §15.5.9), or the body itself failed.
#[derive(Debug)]
pub enum StallError<E> {
    /// Nothing arrived for the whole timeout.
    Stalled,
    /// The body's own error.
    Body(E),
}

impl<E: std::fmt::Display> std::fmt::Display for StallError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StallError::Stalled => f.write_str("the request body sent nothing for BODY_TIMEOUT"),
            StallError::Body(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for StallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StallError::Stalled => None,
            StallError::Body(e) => Some(e),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`StallError::Stalled`] once `timeout` passes without a frame: a
    /// client that trickles or stops mid-body cannot hold what serves it for longer. One timer per
    /// body, reset on every frame; only requests with a body pay for it.
    #[derive(Debug)]
    pub(crate) struct Stall<B> {
        #[pin]
        body: B,
        #[pin]
        timer: tokio::time::Sleep,
        timeout: Duration,
    }
}

impl<B> Stall<B> {
    pub(crate) fn new(body: B, timeout: Duration) -> Self {
        Self {
            body,
            timer: tokio::time::sleep(timeout),
            timeout,
        }
    }
}

impl<B: Body> Body for Stall<B> {
    type Data = B::Data;
    type Error = StallError<B::Error>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.body.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.reset(Instant::now() + *this.timeout);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(StallError::Body(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(StallError::Stalled))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
