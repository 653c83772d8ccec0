//! Exercise 04: the circuit breaker. Read `README.md` beside this crate for the task and the
//! hints, then replace every `todo!` below. Check your work with
//! `cargo test -p ex04-circuit-breaker` in `exercises/`.
//!
//! A breaker stands between a caller and a service. While the service works it is closed and
//! lets every call through; after too many failures in a row it opens and refuses calls at once,
//! giving the service time; then it lets a few probes through (half-open), and their results
//! close it or open it again for longer. This crate holds that state machine alone: no clock,
//! no threads, no sockets. Time is a parameter (`now_ms`), so everything is tested to the
//! millisecond without sleeping.

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through; failures in a row are counted.
    Closed,
    /// Calls are refused until the wait is over.
    Open,
    /// A few probes go through; their results close or reopen the breaker.
    HalfOpen,
}

/// The breaker's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Failures in a row that open a closed breaker.
    pub failure_threshold: u32,
    /// How long the first open lasts, in ms.
    pub wait_ms: u64,
    /// No open lasts longer than this, in ms.
    pub max_wait_ms: u64,
    /// Probes let through in one half-open round.
    pub half_open_calls: u32,
    /// Of them, how many must succeed to close.
    pub successes_to_close: u32,
}

impl Default for Config {
    /// The Node original's figures: 5 failures, 10 s, 3 probes that must all succeed; and a cap
    /// of 60 s, which the original lacked.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            wait_ms: 10_000,
            max_wait_ms: 60_000,
            half_open_calls: 3,
            successes_to_close: 3,
        }
    }
}

/// Leave to make one call; hand it back to [`Breaker::record`] with the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// The epoch the call started in.
    pub epoch: u64,
}

/// A refused call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// How long until a call may go through, in ms.
    pub retry_after_ms: u64,
}

/// How long the `opens`-th open in a row lasts: `wait_ms`, doubled for each open after the
/// first, never more than `max_wait_ms`.
pub fn open_wait_ms(config: &Config, opens: u32) -> u64 {
    todo!(
        "wait_ms doubled for each of opens={opens} after the first, capped at max_wait_ms, for {config:?}"
    )
}

/// One circuit breaker.
#[derive(Debug, Clone)]
#[allow(
    dead_code,
    reason = "the stub's state() is todo!(), so nothing reads `state` until you do"
)]
pub struct Breaker {
    config: Config,
    state: State,
    epoch: u64,
    consecutive_failures: u32,
    opens: u32,
    open_until_ms: u64,
    probes_admitted: u32,
    probe_successes: u32,
    probe_failures: u32,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            state: State::Closed,
            epoch: 0,
            consecutive_failures: 0,
            opens: 0,
            open_until_ms: 0,
            probes_admitted: 0,
            probe_successes: 0,
            probe_failures: 0,
        }
    }

    /// Its rules.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The epoch: bumped by every change of state.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Failures in a row while closed.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Opens since the breaker was last closed.
    pub fn opens(&self) -> u32 {
        self.opens
    }

    /// While open: when probing may start, in ms.
    pub fn open_until_ms(&self) -> u64 {
        self.open_until_ms
    }

    /// This half-open round's probes: (admitted, succeeded, failed).
    pub fn probes(&self) -> (u32, u32, u32) {
        (
            self.probes_admitted,
            self.probe_successes,
            self.probe_failures,
        )
    }

    /// The state at `now_ms`. An `Open` breaker whose wait is over (`now_ms >= open_until_ms`)
    /// becomes `HalfOpen` here, and that is a change of state like any other: the epoch goes up
    /// by one and the probe counts start from zero.
    pub fn state(&mut self, now_ms: u64) -> State {
        todo!("the state at now_ms={now_ms}: Open becomes HalfOpen once the wait is over")
    }

    /// Asks to make one call at `now_ms` (first bringing the state up to date, as `state` does).
    ///
    /// - `Closed`: a permit carrying the current epoch.
    /// - `Open`: refused, `retry_after_ms` = the time left until `open_until_ms`.
    /// - `HalfOpen`: a permit while fewer than `half_open_calls` probes were admitted this round
    ///   (count it); after that refused, `retry_after_ms` = `open_wait_ms` of the next open.
    pub fn try_acquire(&mut self, now_ms: u64) -> Result<Permit, Rejected> {
        todo!("a permit, or a refusal with the time to wait, at now_ms={now_ms}")
    }

    /// Records the result of a call made with `permit` (first bringing the state up to date).
    /// A permit from another epoch is ignored: the call started before the last change of
    /// state, and its result says nothing about the state now.
    ///
    /// - `Closed`: a success sets the failures in a row to 0; a failure adds one, and at
    ///   `failure_threshold` the breaker opens.
    /// - `HalfOpen`: count the probe's success or failure. At `successes_to_close` successes
    ///   it closes; once failures exceed `half_open_calls - successes_to_close` (the rest can no
    ///   longer succeed enough) it opens again.
    ///
    /// Every change of state adds one to the epoch and starts the probe counts from zero.
    /// Opening adds one to `opens` and sets `open_until_ms` to `now_ms + open_wait_ms(opens)`;
    /// closing sets `opens` and the failures in a row back to 0.
    pub fn record(&mut self, permit: Permit, success: bool, now_ms: u64) {
        todo!(
            "record the call of {permit:?} (success: {success}) at now_ms={now_ms}: ignore it if its epoch is not the current one"
        )
    }
}
