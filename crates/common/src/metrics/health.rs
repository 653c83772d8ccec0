//! The health score and the alert rules: one set of thresholds, used by both.
//!
//! The score is the course's formula with measured inputs: start at 100 and take 20 off for each of
//! five figures over its threshold. A worker is `healthy` above 50 (at most two penalties), else
//! `degraded`.
//!
//! | penalty | figure | default threshold | env |
//! |---|---|---|---|
//! | CPU | share of one core, sampled by the master | 80 % | `ALERT_CPU_PERCENT` |
//! | memory | RSS as a share of `MAX_MEMORY`, or of the machine's RAM | 85 % | `ALERT_MEMORY_PERCENT` |
//! | lag | the worker runtime's timer lateness | 100 ms | `ALERT_LAG_MS` |
//! | errors | 5xx and transport failures over the last 60 s, as a share of requests | 5 % | `ALERT_ERROR_RATE` |
//! | latency | p95 over the last 60 s | 1000 ms | `ALERT_P95_MS` |
//!
//! The original penalised errors per second (> 1) and the mean latency (> 500 ms); a rate is
//! meaningless without the traffic it is a share of, and a mean hides the slow tail, so the error
//! share and p95 are used instead, with the thresholds its alerts used.

use serde::Serialize;

use crate::config::{self, ConfigError, Source};

/// Error shares are judged only over at least this many requests: one failure in two requests is not a 50% outage.
pub const MIN_REQUESTS_FOR_ERROR_RATE: u64 = 20;

/// Where each figure starts to count against a worker.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Thresholds {
    /// CPU, percent of one core.
    pub cpu_percent: f64,
    /// Memory, percent of the limit.
    pub memory_percent: f64,
    /// Runtime lag, milliseconds.
    pub lag_ms: f64,
    /// Errors, percent of requests.
    pub error_rate_percent: f64,
    /// 95th-percentile latency, milliseconds.
    pub p95_ms: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            cpu_percent: 80.0,
            memory_percent: 85.0,
            lag_ms: 100.0,
            error_rate_percent: 5.0,
            p95_ms: 1000.0,
        }
    }
}

impl Thresholds {
    /// Reads `ALERT_CPU_PERCENT`, `ALERT_MEMORY_PERCENT`, `ALERT_LAG_MS`, `ALERT_ERROR_RATE` and
    /// `ALERT_P95_MS` from `src`; unset ones keep their defaults.
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let d = Self::default();
        let positive = |name: &str, default: f64| {
            Ok::<_, ConfigError>(
                config::var(src, name, "a positive number", |s| {
                    s.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0)
                })?
                .unwrap_or(default),
            )
        };
        Ok(Self {
            cpu_percent: positive("ALERT_CPU_PERCENT", d.cpu_percent)?,
            memory_percent: positive("ALERT_MEMORY_PERCENT", d.memory_percent)?,
            lag_ms: positive("ALERT_LAG_MS", d.lag_ms)?,
            error_rate_percent: positive("ALERT_ERROR_RATE", d.error_rate_percent)?,
            p95_ms: positive("ALERT_P95_MS", d.p95_ms)?,
        })
    }
}

/// The figures the score is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HealthInputs {
    /// Percent of one core.
    pub cpu_percent: f64,
    /// Percent of the memory limit.
    pub memory_percent: f64,
    /// Milliseconds.
    pub lag_ms: f64,
    /// Requests over the error-rate window.
    pub requests: u64,
    /// Errors over the same window.
    pub errors: u64,
    /// Milliseconds, over the latency window.
    pub p95_ms: f64,
}

impl HealthInputs {
    /// Errors as a percent of requests; 0 when there were too few requests to judge.
    pub fn error_rate_percent(&self) -> f64 {
        if self.requests < MIN_REQUESTS_FOR_ERROR_RATE {
            0.0
        } else {
            self.errors as f64 * 100.0 / self.requests as f64
        }
    }
}

/// Each figure over its threshold, by name: what the score took points off for.
pub fn penalties(i: &HealthInputs, t: &Thresholds) -> [(&'static str, bool); 5] {
    [
        ("cpu", i.cpu_percent > t.cpu_percent),
        ("memory", i.memory_percent > t.memory_percent),
        ("lag", i.lag_ms > t.lag_ms),
        ("errorRate", i.error_rate_percent() > t.error_rate_percent),
        ("p95", i.p95_ms > t.p95_ms),
    ]
}

/// 100 minus 20 for each figure over its threshold: 100, 80, 60, 40, 20 or 0.
pub fn score(i: &HealthInputs, t: &Thresholds) -> u8 {
    let over = penalties(i, t).iter().filter(|(_, over)| *over).count() as u8;
    100 - 20 * over
}

/// `healthy` above 50, else `degraded`.
pub fn status(score: u8) -> &'static str {
    if score > 50 { "healthy" } else { "degraded" }
}

/// One threshold crossed right now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `cluster` or `worker`.
    pub scope: &'static str,
    /// The worker's slot id, for worker alerts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<usize>,
    /// `errorRate`, `p95`, `memory` or `lag`.
    pub metric: &'static str,
    /// The figure now.
    pub value: f64,
    /// What it crossed.
    pub threshold: f64,
    /// `warning` or `critical` (twice the threshold).
    pub severity: &'static str,
    /// For people.
    pub message: String,
}

impl Alert {
    /// An alert if `value > threshold`.
    pub fn check(
        scope: &'static str,
        worker: Option<usize>,
        metric: &'static str,
        value: f64,
        threshold: f64,
        unit: &str,
    ) -> Option<Alert> {
        if value.is_nan() || value <= threshold {
            return None;
        }
        let who = match worker {
            Some(id) => format!("worker {id}"),
            None => "cluster".to_string(),
        };
        Some(Alert {
            scope,
            worker,
            metric,
            value: (value * 10.0).round() / 10.0,
            threshold,
            severity: if value > 2.0 * threshold {
                "critical"
            } else {
                "warning"
            },
            message: format!("{who}: {metric} {value:.1}{unit} is above {threshold}{unit}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calm() -> HealthInputs {
        HealthInputs {
            cpu_percent: 10.0,
            memory_percent: 10.0,
            lag_ms: 1.0,
            requests: 1000,
            errors: 0,
            p95_ms: 20.0,
        }
    }

    #[test]
    fn a_calm_worker_scores_100_and_is_healthy() {
        let t = Thresholds::default();
        assert_eq!(score(&calm(), &t), 100);
        assert_eq!(status(100), "healthy");
    }

    #[test]
    fn each_figure_over_its_threshold_costs_20() {
        let t = Thresholds::default();
        let busy = HealthInputs {
            cpu_percent: 95.0,
            ..calm()
        };
        assert_eq!(score(&busy, &t), 80);
        let worse = HealthInputs {
            lag_ms: 250.0,
            errors: 100,
            ..busy
        };
        // cpu, lag, errors (10% > 5%) = 3 penalties.
        assert_eq!(score(&worse, &t), 40);
        assert_eq!(status(60), "healthy");
        assert_eq!(status(40), "degraded");
        let everything = HealthInputs {
            cpu_percent: 100.0,
            memory_percent: 99.0,
            lag_ms: 500.0,
            requests: 100,
            errors: 50,
            p95_ms: 5000.0,
        };
        assert_eq!(score(&everything, &t), 0);
    }

    #[test]
    fn a_threshold_exactly_met_is_not_a_penalty() {
        let t = Thresholds::default();
        let edge = HealthInputs {
            cpu_percent: 80.0,
            lag_ms: 100.0,
            ..calm()
        };
        assert_eq!(score(&edge, &t), 100);
    }

    #[test]
    fn a_few_requests_are_too_few_to_judge_an_error_rate() {
        let one_of_two = HealthInputs {
            requests: 2,
            errors: 1,
            ..calm()
        };
        assert_eq!(one_of_two.error_rate_percent(), 0.0);
        assert_eq!(score(&one_of_two, &Thresholds::default()), 100);
    }

    #[test]
    fn thresholds_come_from_the_environment_with_clear_errors() {
        let t =
            Thresholds::from_source(&[("ALERT_P95_MS", "250"), ("ALERT_LAG_MS", "20")]).unwrap();
        assert_eq!(t.p95_ms, 250.0);
        assert_eq!(t.lag_ms, 20.0);
        assert_eq!(t.cpu_percent, 80.0);
        let err = Thresholds::from_source(&[("ALERT_ERROR_RATE", "-1")]).unwrap_err();
        assert_eq!(err.var, "ALERT_ERROR_RATE");
    }

    #[test]
    fn alerts_fire_above_the_threshold_and_are_critical_at_twice_it() {
        assert_eq!(
            Alert::check("cluster", None, "p95", 900.0, 1000.0, " ms"),
            None
        );
        let a = Alert::check("worker", Some(2), "lag", 150.0, 100.0, " ms").unwrap();
        assert_eq!(a.severity, "warning");
        assert_eq!(a.message, "worker 2: lag 150.0 ms is above 100 ms");
        let a = Alert::check("cluster", None, "errorRate", 12.0, 5.0, "%").unwrap();
        assert_eq!(a.severity, "critical");
    }
}
