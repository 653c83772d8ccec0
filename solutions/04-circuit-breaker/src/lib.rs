//! Reference answer to exercise 04: the circuit breaker's state machine, with time passed in.
//! Graded by `exercises/04-circuit-breaker/tests/grader.rs`, the learner's own grader.

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
    let doublings = opens.saturating_sub(1);
    let wait = if doublings >= 64 {
        u64::MAX
    } else {
        config.wait_ms.saturating_mul(1u64 << doublings)
    };
    wait.min(config.max_wait_ms)
}

/// One circuit breaker.
#[derive(Debug, Clone)]
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

    /// The state at `now_ms`: an open breaker whose wait is over becomes half-open.
    pub fn state(&mut self, now_ms: u64) -> State {
        if self.state == State::Open && now_ms >= self.open_until_ms {
            self.enter(State::HalfOpen, now_ms);
        }
        self.state
    }

    /// Asks to make one call at `now_ms`.
    pub fn try_acquire(&mut self, now_ms: u64) -> Result<Permit, Rejected> {
        match self.state(now_ms) {
            State::Closed => Ok(Permit { epoch: self.epoch }),
            State::Open => Err(Rejected {
                retry_after_ms: self.open_until_ms - now_ms,
            }),
            State::HalfOpen if self.probes_admitted < self.config.half_open_calls => {
                self.probes_admitted += 1;
                Ok(Permit { epoch: self.epoch })
            }
            State::HalfOpen => Err(Rejected {
                retry_after_ms: open_wait_ms(&self.config, self.opens + 1),
            }),
        }
    }

    /// Records the result of a call made with `permit`.
    pub fn record(&mut self, permit: Permit, success: bool, now_ms: u64) {
        self.state(now_ms);
        if permit.epoch != self.epoch {
            return;
        }
        match self.state {
            State::Closed if success => self.consecutive_failures = 0,
            State::Closed => {
                self.consecutive_failures += 1;
                if self.consecutive_failures >= self.config.failure_threshold {
                    self.enter(State::Open, now_ms);
                }
            }
            State::HalfOpen => {
                if success {
                    self.probe_successes += 1;
                } else {
                    self.probe_failures += 1;
                }
                let allowed_failures = self
                    .config
                    .half_open_calls
                    .saturating_sub(self.config.successes_to_close);
                if self.probe_successes >= self.config.successes_to_close {
                    self.enter(State::Closed, now_ms);
                } else if self.probe_failures > allowed_failures {
                    self.enter(State::Open, now_ms);
                }
            }
            State::Open => {}
        }
    }

    fn enter(&mut self, state: State, now_ms: u64) {
        match state {
            State::Open => {
                self.opens += 1;
                self.open_until_ms = now_ms.saturating_add(open_wait_ms(&self.config, self.opens));
            }
            State::Closed => {
                self.opens = 0;
                self.consecutive_failures = 0;
            }
            State::HalfOpen => {}
        }
        self.probes_admitted = 0;
        self.probe_successes = 0;
        self.probe_failures = 0;
        self.state = state;
        self.epoch += 1;
    }
}
