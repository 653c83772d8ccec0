//! The breaker's state machine, pure: no clock, no lock, no task. Every method takes `now`.
//!
//! [`Breaker`] is what the shared [`CircuitBreaker`](super::CircuitBreaker) handle wraps, and what
//! a master can hold per service for the whole cluster: outcomes come in with
//! [`Breaker::record`] (from its own edge or from workers over IPC), state goes out as
//! transitions, and a worker mirroring the master applies them with
//! [`Breaker::apply_remote_state`].
//!
//! Every transition bumps the **epoch**. A permit carries the epoch it was issued in, and a result
//! whose epoch is not the current one is counted as stale and otherwise ignored: a slow call that
//! started before the breaker opened must not count against (or for) the probes of half-open.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::config::BreakerConfig;
use super::window::{Totals, Window};

/// Where the breaker is. The first three are automatic; the last three are set from outside
/// and stay until changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum State {
    /// Calls go through; outcomes are recorded and may trip the breaker.
    Closed = 0,
    /// Calls are refused until the wait is over.
    Open = 1,
    /// A few probes go through; their results close or reopen the breaker.
    HalfOpen = 2,
    /// Refused until someone closes or resets it (an operator taking a service out).
    ForcedOpen = 3,
    /// Everything goes through and nothing is recorded.
    Disabled = 4,
    /// Everything goes through; outcomes are counted but never trip it (trying thresholds out
    /// on real traffic).
    MetricsOnly = 5,
}

impl State {
    /// The name used in JSON and logs: `CLOSED`, `HALF_OPEN`, …
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Open => "OPEN",
            State::HalfOpen => "HALF_OPEN",
            State::ForcedOpen => "FORCED_OPEN",
            State::Disabled => "DISABLED",
            State::MetricsOnly => "METRICS_ONLY",
        }
    }

    /// The state named by [`State::as_str`], if it is one.
    pub fn parse(s: &str) -> Option<State> {
        [
            State::Closed,
            State::Open,
            State::HalfOpen,
            State::ForcedOpen,
            State::Disabled,
            State::MetricsOnly,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    pub(crate) fn from_u8(n: u8) -> State {
        match n {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            4 => State::Disabled,
            _ => State::MetricsOnly,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a call came to, as the classifier judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// It worked (a 2xx, 3xx or 4xx: the service answered).
    Success,
    /// It failed (a 5xx, a timeout, a connection error).
    Failure,
    /// It says nothing about the service (the caller gave up, the request was cancelled): frees a
    /// probe's place and is otherwise not counted.
    Ignored,
}

/// Leave to make one call, from [`Breaker::try_acquire`]. Hand its epoch back with the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// The epoch the call started in.
    pub epoch: u64,
    /// Whether it is one of half-open's probes (its place must be given back if never used).
    pub probe: bool,
}

/// A call refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// The state that refused it.
    pub state: State,
    /// When to try again: the rest of the open wait, or the next wait for a full half-open or a
    /// forced-open breaker (a hint; nobody knows when an operator will close it).
    pub retry_after: Duration,
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Reason {
    /// The failure rate reached its threshold.
    FailureRate,
    /// The slow-call rate reached its threshold.
    SlowCallRate,
    /// Too many failures in a row.
    ConsecutiveFailures,
    /// The open wait is over: time to probe.
    WaitElapsed,
    /// Enough probes succeeded.
    ProbesSucceeded,
    /// Too many probes failed for the rest to reach the success ratio.
    ProbesFailed,
    /// The probes did not finish within `max_wait_in_half_open`.
    HalfOpenTimeout,
    /// Set from outside with [`Breaker::force_state`].
    Forced,
    /// [`Breaker::reset`].
    Reset,
    /// Mirrored from the breaker that owns the state ([`Breaker::apply_remote_state`]).
    Remote,
}

/// One state change and the figures that caused it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// Numbers transitions of this breaker from 1, so a reader can ask for those after one.
    pub seq: u64,
    /// The epoch this transition started.
    pub epoch: u64,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// The window's failure rate (percent) at the time.
    pub failure_rate: f64,
    /// The window's slow-call rate (percent) at the time.
    pub slow_call_rate: f64,
    /// The window's calls at the time.
    pub calls: u32,
    /// Failures in a row at the time.
    pub consecutive_failures: u32,
    /// Probes that succeeded and failed in the half-open round just ended.
    pub probe_successes: u32,
    /// See `probe_successes`.
    pub probe_failures: u32,
    /// For a move to `OPEN`: how long it stays open.
    #[serde(serialize_with = "opt_ms")]
    pub wait_in_open_ms: Option<Duration>,
    /// When, on the breaker's clock.
    #[serde(skip)]
    pub at: Instant,
}

fn opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

/// A state set by the breaker that owns it (the master, for `Scope::Cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteState {
    /// The owner's state.
    pub state: State,
    /// The owner's epoch: outcomes reported back carry it, so the owner can drop stale ones.
    pub epoch: u64,
    /// For `OPEN`: how much of the wait is left.
    pub open_for: Option<Duration>,
}

/// Lifetime counters; they survive transitions and resets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Calls whose outcome was recorded (successes + failures).
    pub total_requests: u64,
    /// See `total_requests`.
    pub total_successes: u64,
    /// See `total_requests`.
    pub total_failures: u64,
    /// Calls slower than `slow_call_duration`.
    pub total_slow_calls: u64,
    /// Calls refused by an open, forced-open or full half-open breaker.
    pub total_rejections: u64,
    /// Outcomes classified as ignored (cancelled calls).
    pub total_ignored: u64,
    /// Results from an earlier epoch, dropped.
    pub total_stale: u64,
}

/// The current half-open round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probes {
    /// Probes admitted and not yet finished.
    pub in_flight: u32,
    /// Finished probes that succeeded.
    pub successes: u32,
    /// Finished probes that failed (or were slow).
    pub failures: u32,
}

impl Probes {
    fn admitted(&self) -> u32 {
        self.in_flight + self.successes + self.failures
    }
}

/// The state machine of one breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    epoch: u64,
    window: Window,
    consecutive_failures: u32,
    /// When the current state was entered: half-open's deadline counts from it.
    entered_at: Instant,
    /// While `OPEN`: when probing may start.
    open_until: Option<Instant>,
    /// Opens since the breaker was last closed: the backoff's exponent.
    opens_in_row: u32,
    probes: Probes,
    counters: Counters,
    history: VecDeque<Transition>,
    seq: u64,
    /// A mirror of a breaker elsewhere (a worker's, in cluster scope): its state changes only
    /// by [`Breaker::apply_remote_state`] and the operator's calls, never by its own clock, or
    /// it would move to half-open on its own and in an epoch the owner never had.
    follower: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        Self {
            window: Window::new(config.window, now),
            history: VecDeque::with_capacity(config.history.min(1024)),
            config,
            state: State::Closed,
            epoch: 0,
            consecutive_failures: 0,
            entered_at: now,
            open_until: None,
            opens_in_row: 0,
            probes: Probes::default(),
            counters: Counters::default(),
            seq: 0,
            follower: false,
        }
    }

    /// A closed breaker that only mirrors another's state (see [`Breaker::apply_remote_state`]):
    /// time alone never moves it.
    pub fn follower(config: BreakerConfig, now: Instant) -> Self {
        Self {
            follower: true,
            ..Self::new(config, now)
        }
    }

    /// Whether it mirrors another breaker rather than judging on its own.
    pub fn is_follower(&self) -> bool {
        self.follower
    }

    /// The rules it runs by.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state, as of the last call that took `now` (see [`Breaker::tick`]).
    pub fn state(&self) -> State {
        self.state
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// While open: when probing may start.
    pub fn open_until(&self) -> Option<Instant> {
        self.open_until
    }

    /// The `seq` of the newest transition (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// Lifetime counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Transitions still in the history with a `seq` above `seq`, oldest first.
    pub fn transitions_since(&self, seq: u64) -> impl Iterator<Item = &Transition> {
        self.history.iter().filter(move |t| t.seq > seq)
    }

    /// Applies the transitions time alone causes: open → half-open when the wait is over,
    /// half-open → open when the probes took too long.
    pub fn tick(&mut self, now: Instant) {
        if self.follower {
            return;
        }
        match self.state {
            State::Open if self.open_until.is_some_and(|t| now >= t) => {
                self.transition(State::HalfOpen, Reason::WaitElapsed, now);
            }
            State::HalfOpen
                if now.saturating_duration_since(self.entered_at)
                    >= self.config.max_wait_in_half_open =>
            {
                self.transition(State::Open, Reason::HalfOpenTimeout, now);
            }
            _ => {}
        }
    }

    /// Asks to make one call at `now`.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Rejected> {
        self.tick(now);
        let refuse = |this: &mut Self, retry_after| {
            this.counters.total_rejections += 1;
            Err(Rejected {
                state: this.state,
                retry_after,
            })
        };
        match self.state {
            State::Closed | State::Disabled | State::MetricsOnly => Ok(Permit {
                epoch: self.epoch,
                probe: false,
            }),
            State::HalfOpen => {
                if self.probes.admitted() < self.config.half_open_calls.max(1) {
                    self.probes.in_flight += 1;
                    Ok(Permit {
                        epoch: self.epoch,
                        probe: true,
                    })
                } else {
                    // Full: the probes decide soon, one way or the other; if it is back to
                    // open, the next wait is the soonest a retry can go through.
                    let wait = self.config.wait_for(self.opens_in_row + 1);
                    refuse(self, wait)
                }
            }
            State::Open => {
                let left = self
                    .open_until
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
                refuse(self, left)
            }
            State::ForcedOpen => refuse(self, self.config.wait_in_open),
        }
    }

    /// Gives back a permit that was never used (the caller dropped the request before sending):
    /// a probe's place is freed for another call.
    pub fn release(&mut self, permit: Permit, now: Instant) {
        self.tick(now);
        if permit.probe && permit.epoch == self.epoch && self.state == State::HalfOpen {
            self.probes.in_flight = self.probes.in_flight.saturating_sub(1);
        }
    }

    /// Records a call that took `duration` and was let through in `epoch`. Results from an
    /// earlier epoch are counted as stale and change nothing else.
    pub fn record(&mut self, outcome: Outcome, duration: Duration, epoch: u64, now: Instant) {
        self.record_lazy(outcome, duration, epoch, || now);
    }

    /// [`Breaker::record`] with the time read only if it is needed: a closed breaker with a
    /// count window needs it only when this call trips it, which spares the hot path a clock
    /// read (about a third of its cost).
    pub fn record_lazy(
        &mut self,
        outcome: Outcome,
        duration: Duration,
        epoch: u64,
        now: impl FnOnce() -> Instant,
    ) {
        let mut now = LazyNow {
            read: Some(now),
            at: None,
            fallback: self.entered_at,
        };
        let timed_state = matches!(self.state, State::Open | State::HalfOpen);
        let time_window = matches!(self.window, Window::Time { .. });
        if timed_state {
            self.tick(now.get());
        }
        if epoch != self.epoch {
            self.counters.total_stale += 1;
            return;
        }
        let slow = self
            .config
            .slow_call_duration
            .is_some_and(|limit| duration > limit);
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => {
                self.counters.total_ignored += 1;
                if self.state == State::HalfOpen {
                    self.probes.in_flight = self.probes.in_flight.saturating_sub(1);
                }
                return;
            }
        };
        match self.state {
            State::Closed | State::MetricsOnly => {
                self.count(failed, slow);
                // A count window ignores the instant it is given.
                let window_now = if time_window {
                    now.get()
                } else {
                    self.entered_at
                };
                self.window.record(failed, slow, window_now);
                if self.state == State::Closed {
                    if let Some(reason) = self.trip_reason(failed, slow, window_now) {
                        self.transition(State::Open, reason, now.get());
                    }
                }
            }
            State::HalfOpen => {
                self.count(failed, slow);
                self.probes.in_flight = self.probes.in_flight.saturating_sub(1);
                // A slow probe says the service is not well yet, if slowness is a rule at all.
                let bad = failed || (slow && self.config.slow_call_rate_threshold.is_some());
                if bad {
                    self.probes.failures += 1;
                } else {
                    self.probes.successes += 1;
                }
                let needed = self.config.probes_to_close();
                let allowed_failures = self.config.half_open_calls.max(1) - needed;
                if self.probes.successes >= needed {
                    self.transition(State::Closed, Reason::ProbesSucceeded, now.get());
                } else if self.probes.failures > allowed_failures {
                    self.transition(State::Open, Reason::ProbesFailed, now.get());
                }
            }
            // Disabled records nothing; open states issue no permits in their own epoch.
            State::Disabled | State::Open | State::ForcedOpen => {}
        }
    }

    /// Whether a success may skip the lock and be counted later, in bulk, by
    /// [`Breaker::record_successes`]: closed, with a count window that has reached its
    /// minimum calls. Then no success can trip it (only the call that brings the window to
    /// the minimum is judged), so deferring one changes no decision, only when it is counted.
    /// A time window needs each call's second, so it always takes the lock.
    pub fn defers_successes(&self) -> bool {
        self.state == State::Closed
            && !self.follower
            && self
                .window
                .count_calls()
                .is_some_and(|calls| calls >= self.config.effective_minimum_calls())
    }

    /// Records `n` successes (none of them slow) let through in `epoch`, as if one by one: the
    /// successes [`Breaker::defers_successes`] allowed to be counted later. O(min(n, window)).
    pub fn record_successes(&mut self, n: u64, epoch: u64, now: Instant) {
        if n == 0 {
            return;
        }
        if epoch != self.epoch || !matches!(self.state, State::Closed | State::MetricsOnly) {
            self.counters.total_stale += n;
            return;
        }
        let mut left = n;
        // Below the minimum one success may be the judged one: record those singly.
        while left > 0 && !self.defers_successes() && self.state == State::Closed {
            self.record(Outcome::Success, Duration::ZERO, epoch, now);
            left -= 1;
        }
        if left == 0 {
            return;
        }
        if epoch != self.epoch {
            self.counters.total_stale += left;
            return;
        }
        self.counters.total_requests += left;
        self.counters.total_successes += left;
        self.consecutive_failures = 0;
        self.window.record_successes(left, now);
    }

    fn count(&mut self, failed: bool, slow: bool) {
        self.counters.total_requests += 1;
        if failed {
            self.counters.total_failures += 1;
            self.consecutive_failures += 1;
        } else {
            self.counters.total_successes += 1;
            self.consecutive_failures = 0;
        }
        self.counters.total_slow_calls += u64::from(slow);
    }

    fn trip_reason(&mut self, failed: bool, slow: bool, now: Instant) -> Option<Reason> {
        let c = &self.config;
        if failed
            && c.consecutive_failures
                .is_some_and(|n| self.consecutive_failures >= n.max(1))
        {
            return Some(Reason::ConsecutiveFailures);
        }
        let min = c.effective_minimum_calls();
        let t = self.window.totals(now);
        // A call that neither failed nor was slow cannot raise a rate, unless it is the one that
        // brings the window up to the minimum: skipping the rest keeps the hot path short.
        if t.calls < min || (!failed && !slow && t.calls != min) {
            return None;
        }
        // Multiplied out rather than divided: a rate at or above `p` percent.
        let reached = |part: u32, p: f64| f64::from(part) * 100.0 >= p * f64::from(t.calls);
        if c.failure_rate_threshold
            .is_some_and(|p| reached(t.failures, p))
        {
            return Some(Reason::FailureRate);
        }
        let slow_rule = c
            .slow_call_rate_threshold
            .filter(|_| c.slow_call_duration.is_some());
        if slow_rule.is_some_and(|p| reached(t.slow, p)) {
            return Some(Reason::SlowCallRate);
        }
        None
    }

    /// Sets the state from outside (an operator, an admin route). `OPEN` waits as an automatic
    /// open would and then probes; `FORCED_OPEN`, `DISABLED` and `METRICS_ONLY` stay until
    /// changed; `CLOSED` starts a fresh window.
    pub fn force_state(&mut self, state: State, now: Instant) {
        self.transition(state, Reason::Forced, now);
    }

    /// Back to `CLOSED` with an empty window and no backoff; the counters and history stay.
    /// A breaker that is already closed only forgets its window: no transition, so no new
    /// epoch, no history entry and no log line for a circuit that did not change. Returns
    /// whether the state changed.
    pub fn reset(&mut self, now: Instant) -> bool {
        self.opens_in_row = 0;
        if self.state == State::Closed {
            self.window.clear(now);
            self.consecutive_failures = 0;
            return false;
        }
        self.transition(State::Closed, Reason::Reset, now);
        true
    }

    /// Mirrors the state of the breaker that owns it, epoch included, so this one's permits
    /// carry the owner's epoch. An update older than the current epoch is ignored (messages can
    /// overtake each other).
    pub fn apply_remote_state(&mut self, remote: RemoteState, now: Instant) {
        if remote.epoch < self.epoch || (remote.epoch == self.epoch && remote.state == self.state) {
            return;
        }
        self.transition_to_epoch(remote.state, Reason::Remote, now, remote.epoch);
        if let (State::Open, Some(left)) = (remote.state, remote.open_for) {
            self.open_until = Some(now + left);
        }
    }

    fn transition(&mut self, to: State, reason: Reason, now: Instant) {
        self.transition_to_epoch(to, reason, now, self.epoch + 1);
    }

    fn transition_to_epoch(&mut self, to: State, reason: Reason, now: Instant, epoch: u64) {
        let totals: Totals = self.window.totals(now);
        let from = self.state;
        let mut wait_in_open = None;
        match to {
            State::Open => {
                self.opens_in_row = self.opens_in_row.saturating_add(1);
                let wait = self.config.wait_for(self.opens_in_row);
                self.open_until = Some(now + wait);
                wait_in_open = Some(wait);
            }
            State::Closed => {
                self.opens_in_row = 0;
                self.open_until = None;
                self.window.clear(now);
                self.consecutive_failures = 0;
            }
            _ => self.open_until = None,
        }
        self.seq += 1;
        let t = Transition {
            seq: self.seq,
            epoch,
            from,
            to,
            reason,
            failure_rate: totals.failure_rate(),
            slow_call_rate: totals.slow_call_rate(),
            calls: totals.calls,
            consecutive_failures: self.consecutive_failures,
            probe_successes: self.probes.successes,
            probe_failures: self.probes.failures,
            wait_in_open_ms: wait_in_open,
            at: now,
        };
        if self.history.len() >= self.config.history.max(1) {
            self.history.pop_front();
        }
        self.history.push_back(t);
        self.probes = Probes::default();
        self.state = to;
        self.epoch = epoch;
        self.entered_at = now;
    }

    /// Everything `/circuit-status` shows, as of `now`; `wall_now` is `now` on the wall clock,
    /// to stamp transitions the way the original did (Unix ms).
    pub fn snapshot(&mut self, name: &str, now: Instant, wall_now: SystemTime) -> Snapshot {
        self.tick(now);
        let totals = self.window.totals(now);
        let unix_ms = |at: Instant| {
            let wall = wall_now
                .checked_sub(now.saturating_duration_since(at))
                .unwrap_or(UNIX_EPOCH);
            wall.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        let next_in = self.open_until.map(|t| t.saturating_duration_since(now));
        Snapshot {
            name: name.to_string(),
            state: self.state,
            epoch: self.epoch,
            failure_count: totals.failures,
            success_count: totals.calls - totals.failures,
            slow_call_count: totals.slow,
            calls: totals.calls,
            failure_rate: totals.failure_rate(),
            slow_call_rate: totals.slow_call_rate(),
            consecutive_failures: self.consecutive_failures,
            next_attempt: next_in.map(|d| {
                let wall = wall_now + d;
                wall.duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
            }),
            next_attempt_in_ms: next_in.map(|d| d.as_millis() as u64),
            half_open: (self.state == State::HalfOpen).then_some(self.probes),
            stats: Stats {
                counters: self.counters,
                state_changes: self
                    .history
                    .iter()
                    .map(|t| StateChange {
                        timestamp: unix_ms(t.at),
                        transition: t.clone(),
                    })
                    .collect(),
            },
        }
    }
}

/// The time, read once and only if asked for.
struct LazyNow<F> {
    read: Option<F>,
    at: Option<Instant>,
    /// Never used: `read` is only taken once, and `at` is set when it is.
    fallback: Instant,
}

impl<F: FnOnce() -> Instant> LazyNow<F> {
    fn get(&mut self) -> Instant {
        if let Some(at) = self.at {
            return at;
        }
        let at = self.read.take().map_or(self.fallback, |read| read());
        self.at = Some(at);
        at
    }
}

/// A breaker as `/circuit-status` shows it: the original's fields (`name`, `state`,
/// `failureCount`, `successCount`, `failureRate`, `nextAttempt`, `stats.totalRequests`,
/// `totalSuccesses`, `totalFailures`, `totalRejections`, `stateChanges[{from,to,timestamp}]`)
/// and ours beside them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The service the breaker guards.
    pub name: String,
    /// `CLOSED`, `OPEN`, `HALF_OPEN`, `FORCED_OPEN`, `DISABLED` or `METRICS_ONLY`.
    pub state: State,
    /// Bumped by every transition.
    pub epoch: u64,
    /// Failures in the window.
    pub failure_count: u32,
    /// Successes in the window.
    pub success_count: u32,
    /// Slow calls in the window.
    pub slow_call_count: u32,
    /// Calls in the window.
    pub calls: u32,
    /// Percent of the window's calls that failed.
    pub failure_rate: f64,
    /// Percent of the window's calls that were slow.
    pub slow_call_rate: f64,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// While open: when probing may start, Unix ms (the original's `nextAttempt`).
    pub next_attempt: Option<u64>,
    /// The same as a countdown, ms.
    pub next_attempt_in_ms: Option<u64>,
    /// While half-open: the probes.
    pub half_open: Option<Probes>,
    /// Lifetime counters and recent transitions.
    pub stats: Stats,
}

/// Lifetime counters and the bounded history of transitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// `totalRequests`, `totalSuccesses`, `totalFailures`, `totalRejections`, …
    #[serde(flatten)]
    pub counters: Counters,
    /// Oldest first.
    pub state_changes: Vec<StateChange>,
}

/// A transition stamped with wall-clock time.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateChange {
    /// Unix ms.
    pub timestamp: u64,
    /// From, to, why, and the figures.
    #[serde(flatten)]
    pub transition: Transition,
}
