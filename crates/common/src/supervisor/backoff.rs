//! The restart policy as a pure function of how a worker died and of its slot's restart history.
//!
//! In the spirit of PM2's `min_uptime`, a death is judged by its cause, not merely counted:
//!
//! | how the worker ended                                            | rule       | delay   | counts |
//! |-----------------------------------------------------------------|------------|---------|--------|
//! | after Ready, by a signal from outside (KILL, TERM, INT, HUP)    | `killed`   | none    | no     |
//! | on its own, at least `MIN_UPTIME` after Ready                   | `stable`   | none    | no     |
//! | before Ready, or on its own sooner than `MIN_UPTIME` after Ready | `unstable` | backoff | yes    |
//!
//! Why: a worker that served and was then killed by the OOM killer, an operator or a chaos test
//! says nothing about the code, and making its slot wait leaves the cluster short of workers for
//! no reason (the issue measured 60% 503s under one kill a second). Only a crash loop is worth
//! slowing down, and only it may bring the slot to Failed. "On its own" covers an exit code, an
//! abort, a segfault, and a kill by the supervisor for a fault of the worker (hang, garbage on IPC).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::RestartPolicy;
pub use crate::slot::RestartRule;

/// Why a worker process ended, as far as the restart policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A signal sent from outside the worker: SIGKILL, SIGTERM, SIGINT or SIGHUP.
    Outside,
    /// The worker ended itself: an exit code, an abort, a segfault, or the supervisor killed it
    /// for a fault of its own (hung, broke the control protocol, never became Ready).
    Own,
}

impl Cause {
    /// Classifies a process's end from its wait status: `signal` is the signal that ended it, if
    /// one did; `faulted` is true when the supervisor itself killed it for misbehaving.
    pub fn of(signal: Option<i32>, faulted: bool) -> Self {
        use nix::libc::{SIGHUP, SIGINT, SIGKILL, SIGTERM};
        match signal {
            Some(SIGKILL | SIGTERM | SIGINT | SIGHUP) if !faulted => Cause::Outside,
            _ => Cause::Own,
        }
    }
}

/// A worker's death as the policy judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Death {
    /// How it ended.
    pub cause: Cause,
    /// How long it had been Ready when it ended; `None` if it never said Ready.
    pub ready_for: Option<Duration>,
    /// How long the process ran in all.
    pub uptime: Duration,
}

/// What to do about a worker that exited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a replacement after `delay` (zero: at once), by `rule`.
    Restart {
        /// Which rule applied.
        rule: RestartRule,
        /// How long to wait first.
        delay: Duration,
    },
    /// Too many unstable restarts inside the window: mark the slot Failed.
    GiveUp,
}

impl RestartPolicy {
    /// Which rule applies to `death` (before the window's count is looked at).
    pub fn rule(&self, death: &Death) -> RestartRule {
        match (death.ready_for, death.cause) {
            (None, _) => RestartRule::Unstable,
            (Some(_), Cause::Outside) => RestartRule::Killed,
            (Some(up), Cause::Own) if up >= self.min_uptime => RestartRule::Stable,
            (Some(_), Cause::Own) => RestartRule::Unstable,
        }
    }

    /// Decides, and records an unstable restart in `history` (the times of the slot's unstable
    /// restarts still inside the window).
    ///
    /// A stable run (at least `MIN_UPTIME` after Ready, or a whole window) clears the history: the
    /// slot starts over, so only consecutive crash loops back off and count, as PM2's
    /// `max_restarts` counts consecutive unstable restarts. `jitter` in `0.0..1.0` shortens a delay
    /// by up to a fifth, so slots that crashed together do not restart in lockstep.
    pub fn decide(
        &self,
        history: &mut VecDeque<Instant>,
        now: Instant,
        death: &Death,
        jitter: f64,
    ) -> Decision {
        let ran_stably = death.ready_for.is_some_and(|up| up >= self.min_uptime);
        if ran_stably || death.uptime >= self.window {
            history.clear();
        }
        let rule = self.rule(death);
        if rule != RestartRule::Unstable {
            return Decision::Restart {
                rule,
                delay: Duration::ZERO,
            };
        }
        while history
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            history.pop_front();
        }
        if history.len() >= self.max_restarts as usize {
            return Decision::GiveUp;
        }
        let exp = history.len().min(20) as u32;
        history.push_back(now);
        let delay = self.base.saturating_mul(1 << exp).min(self.max);
        let cut = delay.mul_f64(jitter.clamp(0.0, 1.0) / 5.0);
        Decision::Restart {
            rule,
            delay: delay - cut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn policy() -> RestartPolicy {
        RestartPolicy::default()
    }

    /// A worker that never said Ready.
    fn at_start() -> Death {
        Death {
            cause: Cause::Own,
            ready_for: None,
            uptime: MS(20),
        }
    }

    fn crashed_after(ready_for: Duration) -> Death {
        Death {
            cause: Cause::Own,
            ready_for: Some(ready_for),
            uptime: ready_for + MS(20),
        }
    }

    fn killed_after(ready_for: Duration) -> Death {
        Death {
            cause: Cause::Outside,
            ..crashed_after(ready_for)
        }
    }

    fn delay(d: Decision) -> Duration {
        match d {
            Decision::Restart { delay, .. } => delay,
            Decision::GiveUp => panic!("gave up early"),
        }
    }

    fn now_by(rule: RestartRule) -> Decision {
        Decision::Restart {
            rule,
            delay: Duration::ZERO,
        }
    }

    #[test]
    fn signals_from_outside_are_told_apart_from_crashes() {
        use nix::libc::{SIGABRT, SIGHUP, SIGINT, SIGKILL, SIGSEGV, SIGTERM};
        for sig in [SIGKILL, SIGTERM, SIGINT, SIGHUP] {
            assert_eq!(Cause::of(Some(sig), false), Cause::Outside, "signal {sig}");
        }
        for sig in [SIGABRT, SIGSEGV] {
            assert_eq!(Cause::of(Some(sig), false), Cause::Own, "signal {sig}");
        }
        assert_eq!(Cause::of(None, false), Cause::Own, "an exit code");
        assert_eq!(
            Cause::of(Some(SIGKILL), true),
            Cause::Own,
            "killed by the supervisor for hanging"
        );
    }

    #[test]
    fn a_ready_worker_killed_from_outside_restarts_at_once_and_does_not_count() {
        let mut h = VecDeque::new();
        let now = Instant::now();
        // Killed every 300 ms, far more often than MAX_RESTARTS allows: never backs off, never fails.
        for i in 0..50 {
            let d = policy().decide(&mut h, now + MS(300 * i), &killed_after(MS(280)), 0.5);
            assert_eq!(d, now_by(RestartRule::Killed), "kill {i}");
        }
        assert!(h.is_empty(), "kills are not in the history: {h:?}");
    }

    #[test]
    fn a_crash_after_min_uptime_restarts_at_once_and_clears_the_history() {
        let mut h = VecDeque::new();
        let now = Instant::now();
        for _ in 0..3 {
            policy().decide(&mut h, now, &at_start(), 0.0);
        }
        assert_eq!(h.len(), 3);
        let d = policy().decide(&mut h, now + S(10), &crashed_after(MS(1000)), 0.0);
        assert_eq!(d, now_by(RestartRule::Stable));
        assert!(h.is_empty(), "a stable run starts the slot over");
        // The next crash loop starts from the base delay again.
        let d = policy().decide(&mut h, now + S(11), &at_start(), 0.0);
        assert_eq!(delay(d), S(1));
    }

    #[test]
    fn a_crash_sooner_than_min_uptime_after_ready_is_unstable() {
        let mut h = VecDeque::new();
        let d = policy().decide(&mut h, Instant::now(), &crashed_after(MS(999)), 0.0);
        assert_eq!(
            d,
            Decision::Restart {
                rule: RestartRule::Unstable,
                delay: S(1)
            }
        );
        assert_eq!(h.len(), 1, "it counts");
    }

    #[test]
    fn a_worker_killed_before_ready_is_unstable() {
        let death = Death {
            cause: Cause::Outside,
            ready_for: None,
            uptime: MS(10),
        };
        assert_eq!(policy().rule(&death), RestartRule::Unstable);
    }

    #[test]
    fn min_uptime_is_the_line_between_stable_and_unstable() {
        let p = RestartPolicy {
            min_uptime: MS(250),
            ..policy()
        };
        assert_eq!(p.rule(&crashed_after(MS(249))), RestartRule::Unstable);
        assert_eq!(p.rule(&crashed_after(MS(250))), RestartRule::Stable);
    }

    #[test]
    fn unstable_delays_double_from_the_base_up_to_the_cap() {
        let mut h = VecDeque::new();
        let p = RestartPolicy {
            max_restarts: 10,
            ..policy()
        };
        let now = Instant::now();
        let delays: Vec<_> = (0..7)
            .map(|_| delay(p.decide(&mut h, now, &at_start(), 0.0)).as_secs())
            .collect();
        // 1, 2, 4, 8, 16, then capped at 30.
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn kills_between_crashes_neither_double_nor_reset_the_backoff() {
        let mut h = VecDeque::new();
        let now = Instant::now();
        assert_eq!(delay(policy().decide(&mut h, now, &at_start(), 0.0)), S(1));
        policy().decide(&mut h, now + MS(1), &killed_after(MS(100)), 0.0);
        assert_eq!(
            delay(policy().decide(&mut h, now + MS(2), &at_start(), 0.0)),
            S(2)
        );
    }

    #[test]
    fn the_sixth_unstable_restart_within_a_minute_gives_up() {
        let mut h = VecDeque::new();
        let now = Instant::now();
        for i in 0..5 {
            let d = policy().decide(&mut h, now + S(i), &at_start(), 0.5);
            assert!(matches!(d, Decision::Restart { .. }), "restart {i}: {d:?}");
        }
        let d = policy().decide(&mut h, now + S(6), &at_start(), 0.5);
        assert_eq!(d, Decision::GiveUp);
    }

    #[test]
    fn old_restarts_fall_out_of_the_window() {
        let mut h = VecDeque::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            policy().decide(&mut h, t0, &at_start(), 0.0);
        }
        let later = t0 + S(61);
        assert_eq!(
            delay(policy().decide(&mut h, later, &at_start(), 0.0)),
            S(1)
        );
    }

    #[test]
    fn a_worker_that_ran_a_full_window_resets_its_history() {
        let mut h = VecDeque::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            policy().decide(&mut h, t0, &at_start(), 0.0);
        }
        let never_ready_but_long = Death {
            uptime: S(60),
            ..at_start()
        };
        let d = policy().decide(&mut h, t0 + S(1), &never_ready_but_long, 0.0);
        assert_eq!(delay(d), S(1));
    }

    #[test]
    fn jitter_only_shortens_and_by_at_most_a_fifth() {
        let mut h = VecDeque::new();
        let d = delay(policy().decide(&mut h, Instant::now(), &at_start(), 0.999));
        assert!(d <= S(1) && d >= MS(800), "{d:?}");
    }
}
