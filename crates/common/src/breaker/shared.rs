//! [`CircuitBreaker`]: the pure [`Breaker`] made shareable between tasks and threads.
//!
//! The hot path is a closed breaker, and there admission is one atomic load: the state and the
//! epoch are published in one word after every transition, so `try_acquire` needs no lock unless
//! the breaker is half-open (probes are counted) or an open wait may be over. That word is
//! read-mostly (written on transitions only), on a cache line of its own, so every core keeps a
//! shared copy of it.
//!
//! Recording an outcome would take the mutex (a short, allocation-free window update), and a
//! mutex is a read-modify-write on one shared cache line: two cores recording at once take
//! turns on it, and each call got slower (68.9 ns alone, 160.5 ns each with two threads). So
//! the commonest outcome, a success in a closed breaker whose count window has its minimum
//! calls (the word carries a `WARM` bit for it, see [`Breaker::defers_successes`]), skips the
//! lock: it is added to a counter of the calling thread's own stripe (one cache line each),
//! tagged with the epoch. Whoever next takes the lock (a failure, a snapshot, a transition)
//! first folds the stripes into the window, in bulk. No decision changes: such a success can
//! never trip the breaker, and a failure sees every success counted before it. Only the order
//! of calls finishing at the same moment on two cores can differ, as it could anyway.
//!
//! The clock is the other expensive part (35 ns a read on the bench machine): a call is timed
//! only when the slow-call rule is on, and a closed breaker with a count window reads the
//! clock only when a call trips it. The benchmarks in `benches/breaker.rs` (one thread) and
//! `benches/breaker_threads.rs` (one thread against two, in paired rounds) measure all of it.
//!
//! A *follower* (see [`CircuitBreaker::follower`]) is a worker's mirror of the master's breaker
//! in cluster scope: same fast path, but its outcomes go to the master over the control channel
//! and its half-open probes are granted by the master.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::broadcast;

use super::config::BreakerConfig;
use super::core::{Breaker, Outcome, Permit, Rejected, RemoteState, Snapshot, State, Transition};
use super::error::CircuitOpen;
use super::link::LinkCore;

/// Where the breaker reads the time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// `std::time::Instant::now()`: the default, and the cheapest.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// tokio's clock, which `tokio::time::pause()` and `advance` control in tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// How many transitions a slow subscriber may fall behind before it misses some (it can catch
/// up from [`CircuitBreaker::transitions_since`]).
const EVENTS: usize = 64;
/// `open_until` when there is none.
const NEVER: u64 = u64::MAX;
/// In the published word: successes may skip the lock ([`Breaker::defers_successes`]).
const WARM: u64 = 0x80;
/// Stripes of deferred successes: enough that threads rarely share one.
const STRIPES: usize = 16;
/// A stripe is `epoch << COUNT_BITS | count`, the epoch cut to the bits left.
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// One thread's deferred successes, alone on its cache line (128 bytes: two lines, as the
/// adjacent-line prefetcher pairs them).
#[repr(align(128))]
#[derive(Default)]
struct Stripe(AtomicU64);

fn stripe_tag(epoch: u64) -> u64 {
    epoch << COUNT_BITS
}

/// This thread's stripe, handed out round-robin on first use.
fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    MINE.with(|i| *i)
}

/// The published word, alone on its cache line: written on transitions, read by every call.
#[repr(align(128))]
struct Word(AtomicU64);

/// Where admission stands: decided now, or waiting for the master to grant a probe.
pub(crate) enum Admission {
    /// Let through or refused.
    Decided(Result<Permit, CircuitOpen>),
    /// A follower asking its master for a half-open probe.
    Asking(Pin<Box<dyn Future<Output = Result<Permit, CircuitOpen>> + Send>>),
}

/// A circuit breaker shared by every clone of the service it guards; cloning the handle is
/// cheap and every clone sees the same state.
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Shared>,
}

struct Shared {
    /// `epoch << 8 | WARM? | state`: what admission reads without the lock.
    word: Word,
    /// Deferred successes, one stripe per thread (see the module's docs).
    stripes: [Stripe; STRIPES],
    name: Arc<str>,
    clock: Box<dyn Clock>,
    /// Instants are stored as nanoseconds since this, to fit in an atomic.
    origin: Instant,
    /// While open: nanoseconds since `origin` when probing may start; else `NEVER`.
    open_until: AtomicU64,
    /// Rejections decided on the lock-free path (the core counts the others).
    fast_rejections: AtomicU64,
    /// The slow-call rule's limit: calls are timed only when it is set (spares two clock
    /// reads if not).
    slow_limit: Option<Duration>,
    core: Mutex<Breaker>,
    events: broadcast::Sender<Transition>,
    /// A follower's way to its master; `None` for a breaker that judges on its own.
    link: Option<Arc<LinkCore>>,
    /// A follower whose master refused a probe: `epoch + 1` (0 for none) and until when
    /// (nanoseconds since `origin`) to refuse locally instead of asking again.
    refused_epoch: AtomicU64,
    refused_until: AtomicU64,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A closed breaker for the service called `name`, on the system clock.
    pub fn new(name: impl Into<Arc<str>>, config: BreakerConfig) -> Self {
        Self::with_clock(name, config, SystemClock)
    }

    /// The same on another clock ([`TokioClock`] in tests).
    pub fn with_clock(name: impl Into<Arc<str>>, config: BreakerConfig, clock: impl Clock) -> Self {
        let now = clock.now();
        Self::build(
            name.into(),
            Breaker::new(config, now),
            Box::new(clock),
            None,
            now,
        )
    }

    /// A worker's mirror of the master's breaker called `name` (cluster scope): it obeys the
    /// state the master pushes, sends its outcomes to the master through `link` in batches,
    /// and asks the master for each half-open probe. Made by
    /// [`WorkerLink::follower`](super::WorkerLink::follower).
    pub(crate) fn follower(name: Arc<str>, config: BreakerConfig, link: Arc<LinkCore>) -> Self {
        let clock = TokioClock;
        let now = clock.now();
        Self::build(
            name,
            Breaker::follower(config, now),
            Box::new(clock),
            Some(link),
            now,
        )
    }

    fn build(
        name: Arc<str>,
        core: Breaker,
        clock: Box<dyn Clock>,
        link: Option<Arc<LinkCore>>,
        now: Instant,
    ) -> Self {
        let slow_limit = core.config().slow_call_duration;
        let (events, _) = broadcast::channel(EVENTS);
        Self {
            inner: Arc::new(Shared {
                word: Word(AtomicU64::new(pack(State::Closed, 0))),
                stripes: Default::default(),
                name,
                clock,
                origin: now,
                open_until: AtomicU64::new(NEVER),
                fast_rejections: AtomicU64::new(0),
                slow_limit,
                core: Mutex::new(core),
                events,
                link,
                refused_epoch: AtomicU64::new(0),
                refused_until: AtomicU64::new(0),
            }),
        }
    }

    /// Whether this is a follower, obeying a master's breaker.
    pub fn is_follower(&self) -> bool {
        self.inner.link.is_some()
    }

    /// The service it guards.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The state as last published (an open breaker whose wait is over still reads `OPEN`
    /// until the next call or snapshot notices).
    pub fn state(&self) -> State {
        unpack(self.inner.word.0.load(Ordering::Acquire)).0
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        unpack(self.inner.word.0.load(Ordering::Acquire)).1
    }

    /// Admission as the service does it: a follower whose circuit is half-open (or whose open
    /// wait is over) asks its master for a probe, which takes a round trip.
    pub(crate) fn admit(&self) -> Admission {
        let Some(link) = &self.inner.link else {
            return Admission::Decided(self.try_acquire());
        };
        let (state, epoch) = unpack(self.inner.word.0.load(Ordering::Acquire));
        match state {
            State::Closed | State::Disabled | State::MetricsOnly => {
                return Admission::Decided(Ok(Permit {
                    epoch,
                    probe: false,
                }));
            }
            State::ForcedOpen => {
                let wait = self.lock().config().wait_in_open;
                return Admission::Decided(Err(self.fast_reject(state, wait)));
            }
            State::Open | State::HalfOpen => {}
        }
        let now = self.since_origin(self.inner.clock.now());
        let until = self.inner.open_until.load(Ordering::Acquire);
        if state == State::Open && now < until {
            let left = Duration::from_nanos(until - now);
            return Admission::Decided(Err(self.fast_reject(state, left)));
        }
        // The master said no in this epoch: say no here too until the time it gave is up or
        // the epoch changes, rather than ask again for every call.
        if self.inner.refused_epoch.load(Ordering::Acquire) == epoch + 1 {
            let until = self.inner.refused_until.load(Ordering::Acquire);
            if now < until {
                let left = Duration::from_nanos(until - now);
                return Admission::Decided(Err(self.fast_reject(state, left)));
            }
        }
        let this = self.clone();
        let ask = link.ask_probe(self.inner.name.clone());
        Admission::Asking(Box::pin(async move {
            match ask.await {
                Ok(granted) => Ok(Permit {
                    epoch: granted,
                    probe: true,
                }),
                Err(retry_after) => {
                    let now = this.since_origin(this.inner.clock.now());
                    let until = now.saturating_add(retry_after.as_nanos() as u64);
                    this.inner.refused_until.store(until, Ordering::Release);
                    this.inner.refused_epoch.store(epoch + 1, Ordering::Release);
                    Err(this.fast_reject(this.state(), retry_after))
                }
            }
        }))
    }

    /// Asks to make one call now. A permit must be handed back with [`CircuitBreaker::record`]
    /// or [`CircuitBreaker::release`] (the service does both for you). A follower cannot wait
    /// for its master here: while half-open it refuses (the service asks the master instead).
    pub fn try_acquire(&self) -> Result<Permit, CircuitOpen> {
        let (state, epoch) = unpack(self.inner.word.0.load(Ordering::Acquire));
        if self.inner.link.is_some() && matches!(state, State::Open | State::HalfOpen) {
            let wait = self.lock().config().wait_in_open;
            return Err(self.fast_reject(state, wait));
        }
        match state {
            State::Closed | State::Disabled | State::MetricsOnly => {
                return Ok(Permit {
                    epoch,
                    probe: false,
                });
            }
            State::Open => {
                let now = self.since_origin(self.inner.clock.now());
                let until = self.inner.open_until.load(Ordering::Acquire);
                if now < until {
                    return Err(self.fast_reject(state, Duration::from_nanos(until - now)));
                }
            }
            State::ForcedOpen => {
                let wait = self.lock().config().wait_in_open;
                return Err(self.fast_reject(state, wait));
            }
            State::HalfOpen => {}
        }
        let now = self.inner.clock.now();
        let mut core = self.lock();
        let seq = core.last_seq();
        let result = core.try_acquire(now);
        self.publish(&core, seq);
        drop(core);
        result.map_err(|r| self.open_error(r))
    }

    /// Records an outcome: of a call this breaker let through, or one reported from outside
    /// (a worker's, over IPC), with the epoch its permit was issued in.
    pub fn record(&self, outcome: Outcome, duration: Duration, epoch: u64) {
        if self.state() == State::Disabled {
            return;
        }
        if let Some(link) = &self.inner.link {
            link.report(&self.inner.name, outcome, duration, epoch, false);
            return;
        }
        let now = self.inner.clock.now();
        self.locked(|core| core.record(outcome, duration, epoch, now));
    }

    /// Records the outcome of a call that started at `started` (if it was timed).
    pub(crate) fn finish(&self, permit: Permit, outcome: Outcome, started: Option<Instant>) {
        let word = self.inner.word.0.load(Ordering::Acquire);
        let (state, epoch) = unpack(word);
        if state == State::Disabled {
            return;
        }
        if let Some(link) = &self.inner.link {
            let took = started.map_or(Duration::ZERO, |s| {
                self.inner.clock.now().saturating_duration_since(s)
            });
            // A probe's result decides the circuit: it goes at once, not with the next batch.
            link.report(&self.inner.name, outcome, took, permit.epoch, permit.probe);
            return;
        }
        if outcome == Outcome::Success && word & WARM != 0 && permit.epoch == epoch {
            let not_slow = match started {
                None => Some(()),
                Some(started) => {
                    let took = self.inner.clock.now().saturating_duration_since(started);
                    let limit = self.inner.slow_limit;
                    limit.is_none_or(|l| took <= l).then_some(())
                }
            };
            if not_slow.is_some() && self.defer_success(epoch) {
                return;
            }
        }
        match started {
            Some(started) => {
                let now = self.inner.clock.now();
                let took = now.saturating_duration_since(started);
                self.locked(|core| core.record(outcome, took, permit.epoch, now));
            }
            None => {
                let clock = &self.inner.clock;
                self.locked(|core| {
                    core.record_lazy(outcome, Duration::ZERO, permit.epoch, || clock.now())
                });
            }
        }
    }

    /// Counts a success on this thread's stripe, without the lock, if the stripe is of this
    /// epoch (after a transition the first call through the lock retags it).
    fn defer_success(&self, epoch: u64) -> bool {
        let stripe = &self.inner.stripes[stripe_index()].0;
        let v = stripe.load(Ordering::Relaxed);
        if v & !COUNT_MASK != stripe_tag(epoch) || v & COUNT_MASK == COUNT_MASK {
            return false;
        }
        stripe.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Folds every stripe's deferred successes into the core (under its lock), retagging
    /// each with the current epoch.
    fn fold_stripes(&self, core: &mut Breaker) {
        let epoch = core.epoch();
        let fresh = stripe_tag(epoch);
        let mut now = None;
        for stripe in &self.inner.stripes {
            if stripe.0.load(Ordering::Relaxed) == fresh {
                continue;
            }
            let v = stripe.0.swap(fresh, Ordering::AcqRel);
            let n = v & COUNT_MASK;
            let tagged = v & !COUNT_MASK;
            if n == 0 {
                continue;
            }
            let at = *now.get_or_insert_with(|| self.inner.clock.now());
            // A stripe of an older epoch holds successes from before a transition: stale.
            let their_epoch = if tagged == fresh { epoch } else { u64::MAX };
            core.record_successes(n, their_epoch, at);
        }
    }

    /// Gives back a permit that was never used.
    pub fn release(&self, permit: Permit) {
        if let Some(link) = &self.inner.link {
            if permit.probe {
                let name = &self.inner.name;
                link.report(name, Outcome::Ignored, Duration::ZERO, permit.epoch, true);
            }
            return;
        }
        if permit.probe {
            let now = self.inner.clock.now();
            self.locked(|core| core.release(permit, now));
        }
    }

    /// When a call starts, if the slow-call rule needs its duration.
    pub(crate) fn start(&self) -> Option<Instant> {
        self.inner.slow_limit.map(|_| self.inner.clock.now())
    }

    /// Sets the state (see [`Breaker::force_state`]).
    pub fn force_state(&self, state: State) {
        let now = self.inner.clock.now();
        self.locked(|core| core.force_state(state, now));
    }

    /// Refuses every call until closed or reset.
    pub fn force_open(&self) {
        self.force_state(State::ForcedOpen);
    }

    /// Closes with a fresh window.
    pub fn force_closed(&self) {
        self.force_state(State::Closed);
    }

    /// Closed, fresh window, no backoff (the original's `/circuit-reset`). Returns whether the
    /// state changed (a closed breaker only forgets its window, and logs nothing).
    pub fn reset(&self) -> bool {
        let now = self.inner.clock.now();
        self.locked(|core| core.reset(now))
    }

    /// Applies what time alone changes (an open wait over, a half-open round out of time),
    /// for an owner whose breaker nobody calls: the master's, in cluster scope.
    pub fn tick(&self) {
        if matches!(self.state(), State::Open | State::HalfOpen) {
            let now = self.inner.clock.now();
            self.locked(|core| core.tick(now));
        }
    }

    /// Mirrors the state of the breaker that owns it (see [`Breaker::apply_remote_state`]).
    pub fn apply_remote_state(&self, remote: RemoteState) {
        let now = self.inner.clock.now();
        self.locked(|core| core.apply_remote_state(remote, now));
    }

    /// What to send a mirror: state, epoch and the rest of an open wait.
    pub fn remote_state(&self) -> RemoteState {
        let now = self.inner.clock.now();
        let core = self.lock();
        RemoteState {
            state: core.state(),
            epoch: core.epoch(),
            open_for: core.open_until().map(|t| t.saturating_duration_since(now)),
        }
    }

    /// Every transition from now on. A receiver that falls more than 64 behind gets
    /// `Lagged` and can catch up with [`CircuitBreaker::transitions_since`].
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.inner.events.subscribe()
    }

    /// Transitions still in the history after `seq` (0 for all), oldest first.
    pub fn transitions_since(&self, seq: u64) -> Vec<Transition> {
        self.lock().transitions_since(seq).cloned().collect()
    }

    /// Everything `/circuit-status` shows.
    pub fn snapshot(&self) -> Snapshot {
        let now = self.inner.clock.now();
        let wall = SystemTime::now();
        let name = self.inner.name.clone();
        let mut snap = self.locked(|core| core.snapshot(&name, now, wall));
        snap.stats.counters.total_rejections += self.inner.fast_rejections.load(Ordering::Relaxed);
        snap
    }

    fn fast_reject(&self, state: State, retry_after: Duration) -> CircuitOpen {
        self.inner.fast_rejections.fetch_add(1, Ordering::Relaxed);
        self.open_error(Rejected { state, retry_after })
    }

    fn open_error(&self, r: Rejected) -> CircuitOpen {
        CircuitOpen::new(self.inner.name.clone(), r.state, r.retry_after)
    }

    fn lock(&self) -> MutexGuard<'_, Breaker> {
        // A panic while holding the lock leaves the core consistent between calls (every
        // method finishes its update before returning), so a poisoned lock is still usable.
        self.inner
            .core
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn locked<T>(&self, f: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut core = self.lock();
        let seq = core.last_seq();
        if self.inner.word.0.load(Ordering::Relaxed) & WARM != 0 {
            self.fold_stripes(&mut core);
        }
        let out = f(&mut core);
        self.publish(&core, seq);
        out
    }

    /// After a change under the lock: publishes the new state for the lock-free path and sends
    /// the transitions since `seq` to subscribers.
    fn publish(&self, core: &Breaker, seq: u64) {
        let warm = if core.defers_successes() { WARM } else { 0 };
        let word = pack(core.state(), core.epoch()) | warm;
        let changed = core.last_seq() != seq;
        if changed {
            let until = core.open_until().map_or(NEVER, |t| self.since_origin(t));
            self.inner.open_until.store(until, Ordering::Release);
        }
        // Stored only when it differs: the word's cache line stays shared, unwritten, while
        // nothing changes.
        if self.inner.word.0.load(Ordering::Relaxed) != word {
            self.inner.word.0.store(word, Ordering::Release);
        }
        if !changed {
            return;
        }
        for t in core.transitions_since(seq) {
            // A follower's changes are the master's, logged there once, not once per worker.
            if self.inner.link.is_some() {
                tracing::debug!(
                    circuit = %self.inner.name, from = %t.from, to = %t.to, epoch = t.epoch,
                    "circuit breaker follows the master"
                );
            } else {
                tracing::info!(
                    circuit = %self.inner.name, from = %t.from, to = %t.to, reason = ?t.reason,
                    failure_rate = t.failure_rate, slow_call_rate = t.slow_call_rate,
                    calls = t.calls, epoch = t.epoch,
                    "circuit breaker transition"
                );
            }
            // No receivers is not an error: nobody is listening yet.
            let _ = self.inner.events.send(t.clone());
        }
    }

    fn since_origin(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.inner.origin);
        u64::try_from(d.as_nanos()).unwrap_or(NEVER - 1)
    }
}

fn pack(state: State, epoch: u64) -> u64 {
    (epoch << 8) | state as u64
}

fn unpack(word: u64) -> (State, u64) {
    (State::from_u8(word as u8 & 0x7f), word >> 8)
}

/// One service clone's handle on the breaker, alone on its cache lines (128 bytes, as the
/// adjacent-line prefetcher pairs them). Its reference count is written twice a call (the
/// response future takes a reference and drops it), and two clones made one after the other
/// are two small allocations that may share a line: padded, calls through different clones on
/// different cores never write the same line. (The two-thread criterion figure did not move
/// measurably with it on a loaded machine; it is the one shared write per call that was found.)
#[repr(align(128))]
pub(crate) struct Handle(CircuitBreaker);

impl Handle {
    pub(crate) fn new(breaker: CircuitBreaker) -> Self {
        Self(breaker)
    }
}

impl std::ops::Deref for Handle {
    type Target = CircuitBreaker;

    fn deref(&self) -> &CircuitBreaker {
        &self.0
    }
}
