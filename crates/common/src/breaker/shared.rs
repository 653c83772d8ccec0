//! [`CircuitBreaker`]: the pure [`Breaker`] made shareable between tasks and threads.
//!
//! The hot path is a closed breaker, and there admission is one atomic load: the state and the
//! epoch are published in one word after every transition, so `try_acquire` needs no lock unless
//! the breaker is half-open (probes are counted) or an open wait may be over. Recording an
//! outcome takes the mutex for a short, allocation-free critical section (a window update).
//! The clock is the expensive part (35 ns a read on the bench machine, against 6 ns for the
//! lock): a call is timed only when the slow-call rule is on, and a closed breaker with a count
//! window reads the clock only when a call trips it. The benchmark in `benches/breaker.rs`
//! measures all of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::broadcast;

use super::config::BreakerConfig;
use super::core::{Breaker, Outcome, Permit, Rejected, RemoteState, Snapshot, State, Transition};
use super::error::CircuitOpen;

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

/// A circuit breaker shared by every clone of the service it guards; cloning the handle is
/// cheap and every clone sees the same state.
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Shared>,
}

struct Shared {
    name: Arc<str>,
    clock: Box<dyn Clock>,
    /// Instants are stored as nanoseconds since this, to fit in an atomic.
    origin: Instant,
    /// `epoch << 8 | state`: what admission reads without the lock.
    word: AtomicU64,
    /// While open: nanoseconds since `origin` when probing may start; else `NEVER`.
    open_until: AtomicU64,
    /// Rejections decided on the lock-free path (the core counts the others).
    fast_rejections: AtomicU64,
    /// Whether calls must be timed (the slow-call rule is on); spares two clock reads if not.
    timed: bool,
    core: Mutex<Breaker>,
    events: broadcast::Sender<Transition>,
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
        let timed = config.slow_call_duration.is_some();
        let (events, _) = broadcast::channel(EVENTS);
        Self {
            inner: Arc::new(Shared {
                name: name.into(),
                clock: Box::new(clock),
                origin: now,
                word: AtomicU64::new(pack(State::Closed, 0)),
                open_until: AtomicU64::new(NEVER),
                fast_rejections: AtomicU64::new(0),
                timed,
                core: Mutex::new(Breaker::new(config, now)),
                events,
            }),
        }
    }

    /// The service it guards.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The state as last published (an open breaker whose wait is over still reads `OPEN`
    /// until the next call or snapshot notices).
    pub fn state(&self) -> State {
        unpack(self.inner.word.load(Ordering::Acquire)).0
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        unpack(self.inner.word.load(Ordering::Acquire)).1
    }

    /// Asks to make one call now. A permit must be handed back with [`CircuitBreaker::record`]
    /// or [`CircuitBreaker::release`] (the service does both for you).
    pub fn try_acquire(&self) -> Result<Permit, CircuitOpen> {
        let (state, epoch) = unpack(self.inner.word.load(Ordering::Acquire));
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
        let now = self.inner.clock.now();
        self.locked(|core| core.record(outcome, duration, epoch, now));
    }

    /// Records the outcome of a call that started at `started` (if it was timed).
    pub(crate) fn finish(&self, permit: Permit, outcome: Outcome, started: Option<Instant>) {
        if self.state() == State::Disabled {
            return;
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

    /// Gives back a permit that was never used.
    pub fn release(&self, permit: Permit) {
        if permit.probe {
            let now = self.inner.clock.now();
            self.locked(|core| core.release(permit, now));
        }
    }

    /// When a call starts, if the slow-call rule needs its duration.
    pub(crate) fn start(&self) -> Option<Instant> {
        self.inner.timed.then(|| self.inner.clock.now())
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

    /// Closed, fresh window, no backoff (the original's `/circuit-reset`).
    pub fn reset(&self) {
        let now = self.inner.clock.now();
        self.locked(|core| core.reset(now));
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
        let out = f(&mut core);
        self.publish(&core, seq);
        out
    }

    /// After a change under the lock: publishes the new state for the lock-free path and sends
    /// the transitions since `seq` to subscribers.
    fn publish(&self, core: &Breaker, seq: u64) {
        if core.last_seq() == seq {
            return;
        }
        let until = core.open_until().map_or(NEVER, |t| self.since_origin(t));
        self.inner.open_until.store(until, Ordering::Release);
        self.inner
            .word
            .store(pack(core.state(), core.epoch()), Ordering::Release);
        for t in core.transitions_since(seq) {
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
    (State::from_u8(word as u8), word >> 8)
}
