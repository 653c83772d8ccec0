//! The restart policy as a pure function of the slot's restart history.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::RestartPolicy;

/// What to do about a worker that exited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a replacement after this delay.
    RestartAfter(Duration),
    /// Too many restarts inside the window: mark the slot Failed.
    GiveUp,
}

impl RestartPolicy {
    /// Decides, and records the restart in `history` when there is one.
    ///
    /// `uptime` is how long the dead worker ran: one that stayed up a whole window was healthy, so
    /// its slot starts over. `jitter` in `0.0..1.0` shortens the delay by up to a fifth, so slots
    /// that crashed together do not restart in lockstep.
    pub fn decide(
        &self,
        history: &mut VecDeque<Instant>,
        now: Instant,
        uptime: Duration,
        jitter: f64,
    ) -> Decision {
        if uptime >= self.window {
            history.clear();
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
        Decision::RestartAfter(delay - cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy::default()
    }

    #[test]
    fn delays_double_from_the_base_up_to_the_cap() {
        let mut h = VecDeque::new();
        let p = RestartPolicy {
            max_restarts: 10,
            ..policy()
        };
        let now = Instant::now();
        let delays: Vec<_> = (0..7)
            .map(|_| match p.decide(&mut h, now, Duration::ZERO, 0.0) {
                Decision::RestartAfter(d) => d.as_secs(),
                Decision::GiveUp => panic!("gave up early"),
            })
            .collect();
        // 1, 2, 4, 8, 16, then capped at 30.
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn the_sixth_crash_within_a_minute_gives_up() {
        let mut h = VecDeque::new();
        let now = Instant::now();
        for i in 0..5 {
            let d = policy().decide(&mut h, now + Duration::from_secs(i), Duration::ZERO, 0.5);
            assert!(matches!(d, Decision::RestartAfter(_)), "restart {i}: {d:?}");
        }
        let d = policy().decide(&mut h, now + Duration::from_secs(6), Duration::ZERO, 0.5);
        assert_eq!(d, Decision::GiveUp);
    }

    #[test]
    fn old_restarts_fall_out_of_the_window() {
        let mut h = VecDeque::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            policy().decide(&mut h, t0, Duration::ZERO, 0.0);
        }
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            policy().decide(&mut h, later, Duration::ZERO, 0.0),
            Decision::RestartAfter(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_worker_that_ran_a_full_window_resets_its_history() {
        let mut h = VecDeque::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            policy().decide(&mut h, t0, Duration::ZERO, 0.0);
        }
        let d = policy().decide(
            &mut h,
            t0 + Duration::from_secs(1),
            Duration::from_secs(60),
            0.0,
        );
        assert_eq!(d, Decision::RestartAfter(Duration::from_secs(1)));
    }

    #[test]
    fn jitter_only_shortens_and_by_at_most_a_fifth() {
        let mut h = VecDeque::new();
        let d = policy().decide(&mut h, Instant::now(), Duration::ZERO, 0.999);
        let Decision::RestartAfter(d) = d else {
            panic!("{d:?}")
        };
        assert!(
            d <= Duration::from_secs(1) && d >= Duration::from_millis(800),
            "{d:?}"
        );
    }
}
