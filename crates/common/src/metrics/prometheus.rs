//! `GET /metrics/prometheus`: the Prometheus text format (0.0.4), rendered with prometheus-client.
//!
//! The figures already live in the recorder and the slot counters, so nothing is registered ahead of
//! time: a [`Collector`] encodes them at scrape time. Every family has HELP and TYPE; units are base
//! units (seconds, bytes, ratios); counters end in `_total`.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `http_requests_total` | counter | `worker` |
//! | `http_request_errors_total` | counter | `worker` |
//! | `http_request_duration_seconds` | histogram (since start) | `worker` |
//! | `http_requests_in_flight` | gauge | `worker` |
//! | `cluster_worker_up` | gauge (1 = ready) | `worker` |
//! | `cluster_worker_cpu_ratio` | gauge (1 = one core) | `worker` |
//! | `cluster_worker_resident_memory_bytes` | gauge | `worker` |
//! | `cluster_worker_runtime_lag_seconds` | gauge | `worker` |
//! | `cluster_worker_health_score` | gauge (0–100) | `worker` |
//! | `cluster_worker_restarts_total` | counter | `worker` |
//! | `cluster_uptime_seconds` | gauge | |

use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::monitor::{Monitor, Report};
use super::window::Counts;
use crate::slot::SlotState;

/// The `Content-Type` of the output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Histogram bucket bounds in seconds: 0.5 ms to 60 s, roughly 1-2.5-5 per decade.
pub const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// One worker's series.
#[derive(Debug)]
struct Series {
    worker: String,
    up: bool,
    counts: Counts,
    in_flight: u64,
    cpu_ratio: f64,
    rss_bytes: u64,
    lag_seconds: f64,
    health: u8,
    restarts: u64,
    /// Non-cumulative counts per bucket of [`BUCKETS`]; the encoder accumulates them.
    buckets: Vec<(f64, u64)>,
    sum_seconds: f64,
}

#[derive(Debug)]
struct Scrape {
    series: Vec<Series>,
    uptime: f64,
}

/// Splits a since-start histogram (µs) into [`BUCKETS`]; all zero without one.
fn buckets(h: Option<&Histogram<u64>>) -> Vec<(f64, u64)> {
    let mut below = 0;
    BUCKETS
        .iter()
        .map(|&le| {
            let cumulative = match h {
                Some(h) if !h.is_empty() => h.count_between(0, (le * 1e6) as u64),
                _ => 0,
            };
            let n = cumulative.saturating_sub(below);
            below = below.max(cumulative);
            (le, n)
        })
        .collect()
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        fn family<M: EncodeMetric>(
            encoder: &mut DescriptorEncoder,
            series: &[Series],
            name: &str,
            help: &str,
            metric_type: MetricType,
            metric: impl Fn(&Series) -> M,
        ) -> Result<(), fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
            for s in series {
                let labels = [("worker", s.worker.as_str())];
                metric(s).encode(family.encode_family(&labels)?)?;
            }
            Ok(())
        }
        let s = &self.series;
        // Counter names are given without `_total`: the encoder appends it.
        family(
            &mut encoder,
            s,
            "http_requests",
            "Requests the edge finished, by the worker that served them.",
            MetricType::Counter,
            |s| ConstCounter::new(s.counts.requests),
        )?;
        family(
            &mut encoder,
            s,
            "http_request_errors",
            "Requests that ended in a 5xx response or a transport failure.",
            MetricType::Counter,
            |s| ConstCounter::new(s.counts.errors),
        )?;
        {
            let mut fam = encoder.encode_descriptor(
                "http_request_duration_seconds",
                "Time from dispatch to the end of the response body, as the edge measured it.",
                None,
                MetricType::Histogram,
            )?;
            for s in s {
                let labels = [("worker", s.worker.as_str())];
                fam.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    s.sum_seconds,
                    s.counts.requests,
                    &s.buckets,
                    None,
                )?;
            }
        }
        family(
            &mut encoder,
            s,
            "http_requests_in_flight",
            "Requests dispatched to the worker whose response has not ended.",
            MetricType::Gauge,
            |s| ConstGauge::new(s.in_flight as i64),
        )?;
        family(
            &mut encoder,
            s,
            "cluster_worker_up",
            "1 if the worker slot is ready to take traffic, else 0.",
            MetricType::Gauge,
            |s| ConstGauge::new(i64::from(s.up)),
        )?;
        family(
            &mut encoder,
            s,
            "cluster_worker_cpu_ratio",
            "CPU used by the worker process, in cores (1 = one core busy).",
            MetricType::Gauge,
            |s| ConstGauge::new(s.cpu_ratio),
        )?;
        family(
            &mut encoder,
            s,
            "cluster_worker_resident_memory_bytes",
            "Resident memory of the worker process.",
            MetricType::Gauge,
            |s| ConstGauge::new(s.rss_bytes as i64),
        )?;
        family(
            &mut encoder,
            s,
            "cluster_worker_runtime_lag_seconds",
            "How late the worker runtime's timer fired, as the worker last reported.",
            MetricType::Gauge,
            |s| ConstGauge::new(s.lag_seconds),
        )?;
        family(
            &mut encoder,
            s,
            "cluster_worker_health_score",
            "Health score, 100 minus 20 per threshold crossed (CPU, memory, lag, errors, p95).",
            MetricType::Gauge,
            |s| ConstGauge::new(i64::from(s.health)),
        )?;
        family(
            &mut encoder,
            s,
            "cluster_worker_restarts",
            "Times the worker slot was restarted after a crash, kill or hang.",
            MetricType::Counter,
            |s| ConstCounter::new(s.restarts),
        )?;
        let gauge = ConstGauge::new(self.uptime);
        let m = encoder.encode_descriptor(
            "cluster_uptime_seconds",
            "Seconds since the master started.",
            None,
            MetricType::Gauge,
        )?;
        gauge.encode(m)
    }
}

/// Renders `report` (for the slot figures) and the monitor's since-start histograms.
pub fn render(monitor: &Monitor, report: &Report) -> String {
    let totals = monitor.totals_by_slot();
    let mut series: Vec<Series> = Vec::new();
    for w in &report.workers {
        let (counts, hist, sum_us) = totals
            .iter()
            .find(|(slot, ..)| *slot == w.id)
            .map(|(_, c, h, s)| (*c, Some(h), *s))
            .unwrap_or((Counts::default(), None, 0));
        series.push(Series {
            worker: w.id.to_string(),
            up: w.state == SlotState::Ready,
            counts,
            in_flight: w.metrics.active_connections,
            cpu_ratio: w.metrics.cpu_usage / 100.0,
            rss_bytes: w.metrics.rss_bytes,
            lag_seconds: w.metrics.event_loop_lag / 1000.0,
            health: w.health_score,
            restarts: w.restarts,
            buckets: buckets(hist),
            sum_seconds: sum_us as f64 / 1e6,
        });
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        series,
        uptime: report.cluster.uptime,
    }));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        // Writing to a String cannot fail; say so in the output rather than panic if it ever does.
        out.clear();
        let _ = writeln!(out, "# encoding failed: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::metrics::{Completion, Outcome, Thresholds};
    use crate::slot::WorkerInfo;

    fn worker(id: usize) -> WorkerInfo {
        WorkerInfo {
            id,
            pool: 0,
            pid: Some(100 + id as u32),
            state: SlotState::Ready,
            restarts: 2,
            uptime_ms: 1000,
            generation: 0,
            requests: 0,
            errors: 0,
            in_flight: 0,
            history: Default::default(),
            counters: Arc::default(),
        }
    }

    #[test]
    fn every_family_has_help_and_type_and_the_histogram_adds_up() {
        let m = Monitor::new(Thresholds::default(), Some(1 << 30));
        // Slot 1: 3 requests of 2 ms, 1 of 200 ms that failed.
        for (ms, status) in [(2, 200), (2, 200), (2, 200), (200, 502)] {
            m.recorder().record_at(
                0,
                &Completion {
                    slot: 1,
                    pid: 101,
                    pool: 0,
                    latency: Duration::from_millis(ms),
                    status: Some(status),
                    outcome: Outcome::Complete,
                },
            );
        }
        let report = m.report(&[worker(1), worker(2)], Duration::from_secs(5));
        let text = render(&m, &report);
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or(""))
            .collect();
        for f in &families {
            assert!(
                text.contains(&format!("# HELP {f} ")),
                "{f} has no HELP:\n{text}"
            );
        }
        assert!(families.contains(&"http_requests_total"), "{text}");
        assert!(
            families.contains(&"http_request_duration_seconds"),
            "{text}"
        );
        assert!(
            families.contains(&"cluster_worker_restarts_total"),
            "{text}"
        );
        for line in [
            "http_requests_total{worker=\"1\"} 4",
            "http_request_errors_total{worker=\"1\"} 1",
            "http_requests_total{worker=\"2\"} 0",
            "http_request_duration_seconds_bucket{worker=\"1\",le=\"0.001\"} 0",
            "http_request_duration_seconds_bucket{worker=\"1\",le=\"0.0025\"} 3",
            "http_request_duration_seconds_bucket{worker=\"1\",le=\"0.25\"} 4",
            "http_request_duration_seconds_bucket{worker=\"1\",le=\"+Inf\"} 4",
            "http_request_duration_seconds_count{worker=\"1\"} 4",
            "http_request_duration_seconds_sum{worker=\"1\"} 0.206",
            "cluster_worker_restarts_total{worker=\"2\"} 2",
            "cluster_worker_up{worker=\"1\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
