//! The autoscaling rule (`AUTOSCALE=min..max`): how many workers the load asks for, with the
//! hysteresis of Kubernetes' Horizontal Pod Autoscaler. Pure: [`Autoscaler::decide`] is given the
//! time and what was measured, and says whether to change the count and why, so the rule is
//! tested without processes or clocks.
//!
//! The rule, each interval:
//! 1. the recommendation is `ceil(in_flight / target)` workers, clamped to `min..=max`;
//!    a count outside the range is brought into it at once, whatever the load;
//! 2. within the tolerance (the load per worker is within 10% of the target) the recommendation
//!    is the current count: no change for noise;
//! 3. up: at once, unless the last scale-up was less than `up_cooldown` ago (the workers it
//!    started have not had time to take load yet);
//! 4. down: only to the highest recommendation of the last `down_window` (HPA's stabilisation
//!    window), so the count drops once the load has stayed low for the whole window.
//!
//! New workers join through the supervisor's readiness gate (traffic only once they say Ready),
//! and the ones scaled away drain; this rule only says how many.

use std::collections::VecDeque;
use std::time::Instant;

use serde::Serialize;

use crate::config::Autoscale;

/// At most this many recommendations are remembered, however long the window.
const HISTORY_MAX: usize = 4096;

/// One decision to change the worker count.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The count before.
    pub from: usize,
    /// The count to scale to.
    pub to: usize,
    /// Why, in words (what was measured against what).
    pub reason: String,
}

/// The rule's memory: recent recommendations and the last scale-up.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    policy: Autoscale,
    last_up: Option<Instant>,
    /// `(when, recommended count)`, oldest first, none older than the down window.
    history: VecDeque<(Instant, usize)>,
}

impl Autoscaler {
    /// A rule with no history.
    pub fn new(policy: Autoscale) -> Self {
        Self {
            policy,
            last_up: None,
            history: VecDeque::new(),
        }
    }

    /// The policy it follows.
    pub fn policy(&self) -> &Autoscale {
        &self.policy
    }

    /// The count `in_flight` requests (averaged over the last interval) ask for, before
    /// tolerance and stabilisation.
    pub fn wanted(&self, in_flight: f64) -> usize {
        let p = &self.policy;
        let raw = (in_flight.max(0.0) / p.target_in_flight).ceil();
        // `as` saturates for floats: a huge in-flight is max, not a wrap.
        (raw as usize).clamp(p.min, p.max)
    }

    /// Decides at `now`, with `current` workers carrying `in_flight` requests on average.
    pub fn decide(&mut self, now: Instant, current: usize, in_flight: f64) -> Option<Decision> {
        let p = self.policy;
        if current < p.min || current > p.max {
            let to = current.clamp(p.min, p.max);
            self.remember(now, to);
            if to > current {
                self.last_up = Some(now);
            }
            let reason = format!(
                "{current} workers is outside AUTOSCALE={}..{}: brought into the range",
                p.min, p.max
            );
            return Some(Decision {
                from: current,
                to,
                reason,
            });
        }
        let per_worker = in_flight / current.max(1) as f64;
        let ratio = per_worker / p.target_in_flight;
        let mut wanted = self.wanted(in_flight);
        if (ratio - 1.0).abs() <= p.tolerance {
            wanted = current;
        }
        self.remember(now, wanted);
        let measured = format!(
            "{in_flight:.1} in flight over {current} workers ({per_worker:.1} each, target {})",
            p.target_in_flight
        );
        if wanted > current {
            if let Some(at) = self.last_up
                && now.saturating_duration_since(at) < p.up_cooldown
            {
                return None;
            }
            self.last_up = Some(now);
            return Some(Decision {
                from: current,
                to: wanted,
                reason: format!("{measured}: scaling up to {wanted}"),
            });
        }
        // The highest recommendation of the window, this one included: a dip is not a trend.
        let stable = self.history.iter().map(|(_, n)| *n).max().unwrap_or(wanted);
        if stable < current {
            let window = p.down_window;
            return Some(Decision {
                from: current,
                to: stable,
                reason: format!(
                    "{measured}: the highest recommendation over the last {window:?} is {stable}, scaling down"
                ),
            });
        }
        None
    }

    fn remember(&mut self, now: Instant, wanted: usize) {
        let window = self.policy.down_window;
        while self
            .history
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > window)
            || self.history.len() >= HISTORY_MAX
        {
            self.history.pop_front();
        }
        self.history.push_back((now, wanted));
    }
}

/// How many decisions [`AutoscaleStatus`] keeps.
pub const DECISIONS_KEPT: usize = 32;

/// The autoscaler as the cluster handle's `autoscale()` shows it: what it measured and the last
/// decisions.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AutoscaleStatus {
    /// `AUTOSCALE`'s lower bound.
    pub min: usize,
    /// Its upper bound.
    pub max: usize,
    /// In-flight requests per worker aimed at.
    pub target_in_flight: f64,
    /// The last interval's average of requests in flight, over all workers.
    pub in_flight: f64,
    /// What that load asks for, before cooldown and stabilisation.
    pub wanted: usize,
    /// The last decisions, oldest first.
    pub decisions: VecDeque<AutoscaleDecision>,
}

/// One decision, as kept in [`AutoscaleStatus`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AutoscaleDecision {
    /// Milliseconds after the master started.
    pub at_ms: u64,
    /// The count before.
    pub from: usize,
    /// The count asked for.
    pub to: usize,
    /// Why.
    pub reason: String,
}

impl AutoscaleStatus {
    /// Before the first decision.
    pub fn new(policy: &Autoscale) -> Self {
        Self {
            min: policy.min,
            max: policy.max,
            target_in_flight: policy.target_in_flight,
            in_flight: 0.0,
            wanted: policy.min,
            decisions: VecDeque::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> Autoscale {
        Autoscale {
            min: 2,
            max: 6,
            target_in_flight: 10.0,
            interval: Duration::from_secs(1),
            up_cooldown: Duration::from_secs(3),
            down_window: Duration::from_secs(60),
            tolerance: 0.1,
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn the_count_wanted_is_in_flight_over_the_target_rounded_up_within_min_and_max() {
        let a = Autoscaler::new(policy());
        for (in_flight, want) in [
            (0.0, 2),
            (15.0, 2),
            (21.0, 3),
            (40.0, 4),
            (1e9, 6),
            (-3.0, 2),
        ] {
            assert_eq!(
                a.wanted(in_flight),
                want,
                "in_flight {in_flight}: expected {want}"
            );
        }
        assert_eq!(a.wanted(f64::INFINITY), 6, "infinite load saturates at max");
    }

    #[test]
    fn load_within_the_tolerance_of_the_target_changes_nothing() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(policy());
        // 3 workers at 10.5 each: 5% over the target.
        assert_eq!(a.decide(t0, 3, 31.5), None);
        // 3 workers at 9.2 each: 8% under.
        assert_eq!(a.decide(secs(t0, 1), 3, 27.6), None);
    }

    #[test]
    fn more_load_scales_up_at_once_then_waits_out_the_cooldown() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(policy());
        let d = a
            .decide(t0, 2, 40.0)
            .expect("40 in flight on 2 workers scales up");
        assert_eq!((d.from, d.to), (2, 4), "{d:?}");
        assert!(d.reason.contains("scaling up"), "{}", d.reason);
        assert_eq!(
            a.decide(secs(t0, 1), 4, 60.0),
            None,
            "1 s after a scale-up, inside the 3 s cooldown"
        );
        let d = a.decide(secs(t0, 3), 4, 60.0).expect("after the cooldown");
        assert_eq!((d.from, d.to), (4, 6), "{d:?}");
        assert_eq!(a.decide(secs(t0, 10), 6, 500.0), None, "never above max");
    }

    #[test]
    fn less_load_scales_down_only_once_the_window_has_been_low_throughout() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(policy());
        let d = a.decide(t0, 2, 60.0).expect("up");
        assert_eq!(d.to, 6);
        // The load vanishes: for 60 s the window still holds the 6, so nothing changes.
        for s in 1..=60 {
            assert_eq!(
                a.decide(secs(t0, s), 6, 0.0),
                None,
                "at {s} s the window still has 6"
            );
        }
        let d = a
            .decide(secs(t0, 61), 6, 0.0)
            .expect("the 6 left the window");
        assert_eq!((d.from, d.to), (6, 2), "down to min: {d:?}");
        assert!(d.reason.contains("scaling down"), "{}", d.reason);
    }

    #[test]
    fn a_short_dip_in_the_window_does_not_scale_down_below_its_peak() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(policy());
        assert_eq!(a.decide(t0, 4, 40.0), None, "4 workers at the target");
        assert_eq!(
            a.decide(secs(t0, 30), 4, 30.0),
            None,
            "wants 3, the window has 4"
        );
        let d = a
            .decide(secs(t0, 61), 4, 30.0)
            .expect("the 4 left the window");
        assert_eq!((d.from, d.to), (4, 3), "{d:?}");
    }

    #[test]
    fn a_count_outside_the_range_is_brought_into_it_whatever_the_load() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(policy());
        let d = a.decide(t0, 1, 0.0).expect("below min");
        assert_eq!((d.from, d.to), (1, 2), "{d:?}");
        assert!(d.reason.contains("outside AUTOSCALE=2..6"), "{}", d.reason);
        let d = a.decide(t0, 9, 1000.0).expect("above max");
        assert_eq!((d.from, d.to), (9, 6), "{d:?}");
    }

    #[test]
    fn the_history_stays_bounded_however_long_the_window() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(Autoscale {
            down_window: Duration::from_secs(1_000_000),
            ..policy()
        });
        for s in 0..(HISTORY_MAX as u64 + 100) {
            a.decide(secs(t0, s), 2, 20.0);
        }
        assert!(
            a.history.len() <= HISTORY_MAX,
            "{} entries",
            a.history.len()
        );
    }
}
