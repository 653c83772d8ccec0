//! The canary verdict: the canary's window against the stable pool's, over the same time.
//!
//! Pure: two [`PoolStats`] and the [`Rules`] in, a [`Verdict`] out that keeps every figure it was
//! made from, so `/canary/status` can show why (as Kayenta keeps each metric's comparison).
//!
//! - **Not enough data** when either pool has fewer than `min_requests` requests in the window.
//!   It is its own outcome and holds the step: a quiet canary is never promoted on no evidence.
//! - **Unhealthy** when `canary error rate > 1.5 × stable's + error floor`, or
//!   `canary p95 > 1.3 × stable's + p95 floor`. The floors are absolute: without them a stable
//!   pool with no errors would make one canary error fatal, and a 2 ms p95 would make 3 ms one.
//! - **Healthy** otherwise.

use common::metrics::PoolStats;
use serde::Serialize;

/// The thresholds of the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rules {
    /// Requests each pool must have in the window before anything is judged.
    pub min_requests: u64,
    /// The canary's error rate may be this many times the stable pool's (1.5)…
    pub error_ratio: f64,
    /// …plus this much (a fraction: 0.01 is one point).
    pub error_floor: f64,
    /// The canary's p95 may be this many times the stable pool's (1.3)…
    pub p95_ratio: f64,
    /// …plus this many milliseconds.
    pub p95_floor_ms: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            min_requests: 50,
            error_ratio: 1.5,
            error_floor: 0.01,
            p95_ratio: 1.3,
            p95_floor_ms: 25.0,
        }
    }
}

/// What a verdict found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Healthy,
    Unhealthy,
    NotEnoughData,
}

/// One metric compared: the canary's figure, the stable pool's, and the limit it was held to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub metric: &'static str,
    pub canary: f64,
    pub stable: f64,
    pub limit: f64,
    pub passed: bool,
}

/// A verdict and the figures it was made from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub outcome: Outcome,
    /// In words, for the log and the status page.
    pub reason: String,
    pub checks: Vec<Check>,
    pub stable: PoolStats,
    pub canary: PoolStats,
}

/// Judges `canary` against `stable` (see the module docs).
pub fn judge(stable: &PoolStats, canary: &PoolStats, rules: &Rules) -> Verdict {
    let verdict = |outcome, reason: String, checks| Verdict {
        outcome,
        reason,
        checks,
        stable: *stable,
        canary: *canary,
    };
    if stable.requests < rules.min_requests || canary.requests < rules.min_requests {
        return verdict(
            Outcome::NotEnoughData,
            format!(
                "need {} requests per version; stable has {}, canary has {}",
                rules.min_requests, stable.requests, canary.requests
            ),
            Vec::new(),
        );
    }
    let error_limit = stable.error_rate * rules.error_ratio + rules.error_floor;
    let p95_limit = stable.p95_ms * rules.p95_ratio + rules.p95_floor_ms;
    let checks = vec![
        Check {
            metric: "errorRate",
            canary: canary.error_rate,
            stable: stable.error_rate,
            limit: error_limit,
            passed: canary.error_rate <= error_limit,
        },
        Check {
            metric: "p95Ms",
            canary: canary.p95_ms,
            stable: stable.p95_ms,
            limit: p95_limit,
            passed: canary.p95_ms <= p95_limit,
        },
    ];
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{} {:.4} > limit {:.4}", c.metric, c.canary, c.limit))
        .collect();
    if failed.is_empty() {
        verdict(Outcome::Healthy, "every check passed".into(), checks)
    } else {
        verdict(Outcome::Unhealthy, failed.join("; "), checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(requests: u64, errors: u64, p95_ms: f64) -> PoolStats {
        PoolStats {
            requests,
            errors,
            error_rate: errors as f64 / requests.max(1) as f64,
            p95_ms,
            ..PoolStats::default()
        }
    }

    #[test]
    fn too_few_requests_on_either_side_is_not_enough_data_whatever_the_figures() {
        let rules = Rules::default();
        let v = judge(&stats(1000, 0, 5.0), &stats(10, 10, 900.0), &rules);
        assert_eq!(v.outcome, Outcome::NotEnoughData);
        let v = judge(&stats(10, 0, 5.0), &stats(1000, 0, 5.0), &rules);
        assert_eq!(v.outcome, Outcome::NotEnoughData);
    }

    #[test]
    fn twenty_percent_errors_against_none_is_unhealthy() {
        let v = judge(&stats(500, 0, 5.0), &stats(100, 20, 5.0), &Rules::default());
        assert_eq!(v.outcome, Outcome::Unhealthy, "{v:?}");
        assert!(!v.checks[0].passed && v.checks[1].passed);
    }

    #[test]
    fn the_floors_forgive_small_absolute_differences() {
        // Stable 0%, canary 0.5%: under the 1-point floor. p95 5 ms vs 20 ms: under 5×1.3+25.
        let v = judge(
            &stats(1000, 0, 5.0),
            &stats(1000, 5, 20.0),
            &Rules::default(),
        );
        assert_eq!(v.outcome, Outcome::Healthy, "{v:?}");
    }

    #[test]
    fn a_slow_canary_is_unhealthy_by_p95() {
        let v = judge(
            &stats(1000, 0, 10.0),
            &stats(1000, 0, 200.0),
            &Rules::default(),
        );
        assert_eq!(v.outcome, Outcome::Unhealthy);
        assert_eq!(v.checks[1].limit, 10.0 * 1.3 + 25.0);
    }
}
