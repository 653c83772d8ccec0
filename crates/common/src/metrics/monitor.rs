//! [`Monitor`]: the recorder, the thresholds and the history together, and the `/metrics` report
//! built from them and the supervisor's per-slot samples.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::health::{self, Alert, HealthInputs, Thresholds};
use super::history::{History, HistoryPoint, WorkerPoint};
use super::recorder::{MAX_SLOTS, Recorder};
use super::view::ClusterView;
use super::window::{
    Counts, LatencySummary, WINDOW_SECS, complete_seconds, rate, round3, window_histogram,
};
use super::{Completion, Observer};
use crate::slot::{SlotState, WorkerInfo};

/// The rate windows, in seconds.
pub const RATE_WINDOWS: [u64; 3] = [1, 10, 60];
/// The window `requestsPerSecond` and `errorsPerSecond` use: long enough to be steady, short enough
/// to follow a change.
pub const HEADLINE_RATE_WINDOW: u64 = 10;

/// Everything the master measures about its workers. Cheap to clone; give one to
/// `Cluster::observe` and keep one for the routes.
#[derive(Clone, Debug)]
pub struct Monitor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    recorder: Recorder,
    thresholds: Thresholds,
    /// What memory percentages are a share of: `MAX_MEMORY`, or the machine's RAM.
    memory_limit: u64,
    /// Wall-clock start, for `startTime`.
    start_time_ms: u64,
    history: Mutex<History>,
}

impl Observer for Monitor {
    fn on_complete(&self, completion: &Completion) {
        self.inner.recorder.on_complete(completion);
    }
}

/// `GET /metrics`: the cluster, then each worker. Names follow the Node original; every figure is a
/// number (zero when there is nothing to measure yet), never null.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The whole cluster.
    pub cluster: ClusterSummary,
    /// Each slot, in id order.
    pub workers: Vec<WorkerReport>,
}

/// Requests and errors per second over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RatePair {
    /// Requests per second.
    pub requests: f64,
    /// Errors per second.
    pub errors: f64,
}

/// Rates over the last 1, 10 and 60 complete seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Last second.
    #[serde(rename = "1s")]
    pub s1: RatePair,
    /// Last 10 seconds.
    #[serde(rename = "10s")]
    pub s10: RatePair,
    /// Last 60 seconds.
    #[serde(rename = "60s")]
    pub s60: RatePair,
}

/// Response times over one window, in ms, under the Node original's field names (flattened
/// into the cluster's and each worker's part of the report).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseTimes {
    /// The mean.
    pub avg_response_time: f64,
    /// The fastest.
    pub min_response_time: f64,
    /// The slowest.
    pub max_response_time: f64,
    /// The median.
    pub p50: f64,
    /// 95% of responses were at least this fast.
    pub p95: f64,
    /// 99% were.
    pub p99: f64,
    /// 99.9% were.
    pub p999: f64,
}

impl From<&LatencySummary> for ResponseTimes {
    fn from(l: &LatencySummary) -> Self {
        Self {
            avg_response_time: l.mean,
            min_response_time: l.min,
            max_response_time: l.max,
            p50: l.p50,
            p95: l.p95,
            p99: l.p99,
            p999: l.p999,
        }
    }
}

/// The cluster part of [`Report`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSummary {
    /// When the master started, ms since the Unix epoch.
    pub start_time: u64,
    /// Requests the edge finished since the start (all workers, past and present).
    pub total_requests: u64,
    /// Of which 5xx or transport failures.
    pub total_errors: u64,
    /// Over the last 10 s.
    pub requests_per_second: f64,
    /// Over the last 10 s.
    pub errors_per_second: f64,
    /// Errors as a percent of requests over the last 60 s.
    pub error_rate: f64,
    /// Response times over the last 60 s, merged from every worker's histogram.
    #[serde(flatten)]
    pub latency: ResponseTimes,
    /// Requests in flight.
    pub active_connections: u64,
    /// Seconds since the master started.
    pub uptime: f64,
    /// Worker slots.
    pub workers: usize,
    /// Ready workers whose status is healthy.
    pub healthy_workers: usize,
    /// Every rate window.
    pub rates: Rates,
    /// Latency since the start, ms.
    pub since_start: LatencySummary,
}

/// One slot in [`Report`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerReport {
    /// Slot id, 1..=N.
    pub id: usize,
    /// The current process, 0 while there is none.
    pub pid: u32,
    /// The slot's lifecycle state.
    pub state: SlotState,
    /// `healthy` or `degraded` for a ready worker, else its state (`starting`, `failed`, …).
    pub status: String,
    /// 0 to 100; see the [`health`] module.
    pub health_score: u8,
    /// What the score took points off for.
    pub penalties: Vec<&'static str>,
    /// Seconds the current process has run.
    pub uptime: f64,
    /// Replacements after crashes, kills and hangs.
    pub restarts: u64,
    /// The figures.
    pub metrics: WorkerMetrics,
}

/// The figures of one worker.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerMetrics {
    /// Requests the edge finished on this slot since the start.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// In flight now.
    pub active_connections: u64,
    /// Response times over the last 60 s.
    #[serde(flatten)]
    pub latency: ResponseTimes,
    /// Percent of one core, sampled every `METRICS_INTERVAL`.
    pub cpu_usage: f64,
    /// RSS as a percent of the memory limit.
    pub memory_usage: f64,
    /// RSS in MiB.
    #[serde(rename = "memoryMB")]
    pub memory_mb: f64,
    /// RSS in bytes, for Prometheus (JSON keeps the original's MiB).
    #[serde(skip)]
    pub rss_bytes: u64,
    /// Runtime lag the worker last reported, ms.
    pub event_loop_lag: f64,
    /// Over the last 10 s.
    pub requests_per_second: f64,
    /// Over the last 10 s.
    pub errors_per_second: f64,
    /// Errors as a percent of requests over the last 60 s (0 below 20 requests).
    pub error_rate: f64,
    /// Every rate window.
    pub rates: Rates,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn machine_memory() -> u64 {
    use sysinfo::{MemoryRefreshKind, RefreshKind, System};
    let sys = System::new_with_specifics(
        RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    sys.total_memory()
}

impl Monitor {
    /// A monitor judging workers by `thresholds`; memory percentages are of `memory_limit` (pass
    /// `MAX_MEMORY`) or, when `None`, of the machine's RAM.
    pub fn new(thresholds: Thresholds, memory_limit: Option<u64>) -> Self {
        let memory_limit = memory_limit.unwrap_or_else(machine_memory).max(1);
        Self {
            inner: Arc::new(Inner {
                recorder: Recorder::new(),
                thresholds,
                memory_limit,
                start_time_ms: unix_ms(),
                history: Mutex::new(History::default()),
            }),
        }
    }

    /// The thresholds health and alerts use.
    pub fn thresholds(&self) -> &Thresholds {
        &self.inner.thresholds
    }

    /// The per-slot windows.
    pub fn recorder(&self) -> &Recorder {
        &self.inner.recorder
    }

    fn rates(&self, slot: usize, now: u64) -> Rates {
        let pair = |window| match complete_seconds(window, now) {
            Some((from, to)) => {
                let c = self.inner.recorder.counts(slot, from, to);
                RatePair {
                    requests: round3(rate(c.requests, window, now)),
                    errors: round3(rate(c.errors, window, now)),
                }
            }
            None => RatePair::default(),
        };
        Rates {
            s1: pair(RATE_WINDOWS[0]),
            s10: pair(RATE_WINDOWS[1]),
            s60: pair(RATE_WINDOWS[2]),
        }
    }

    /// Each Ready worker's health score and verdict, as `Cluster::health_scorer` wants them, so
    /// `/health` says `degraded` when one scores 50 or less.
    pub fn scores(&self, workers: &[WorkerInfo]) -> Vec<(usize, u8, &'static str)> {
        self.report(workers, Duration::ZERO)
            .workers
            .iter()
            .filter(|w| w.state == SlotState::Ready)
            .map(|w| (w.id, w.health_score, health::status(w.health_score)))
            .collect()
    }

    /// The `/metrics` report for `workers` (from [`ClusterView::workers`]).
    pub fn report(&self, workers: &[WorkerInfo], uptime: Duration) -> Report {
        let rec = &self.inner.recorder;
        let t = &self.inner.thresholds;
        let now = rec.now();
        let from = now.saturating_sub(WINDOW_SECS - 1);
        let mut reports = Vec::with_capacity(workers.len());
        for w in workers {
            let mut h = window_histogram();
            rec.merge_latency(w.id, from, now, &mut h);
            let latency = LatencySummary::of(&h);
            let totals = rec.totals(w.id);
            let window = rec.counts(w.id, from, now);
            let rates = self.rates(w.id, now);
            let c = &w.counters;
            let cpu = c
                .cpu_centi_percent
                .load(std::sync::atomic::Ordering::Relaxed) as f64
                / 100.0;
            let rss = c.rss_bytes.load(std::sync::atomic::Ordering::Relaxed);
            let lag_ms =
                c.runtime_lag_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0;
            let inputs = HealthInputs {
                cpu_percent: cpu,
                memory_percent: rss as f64 * 100.0 / self.inner.memory_limit as f64,
                lag_ms,
                requests: window.requests,
                errors: window.errors,
                p95_ms: latency.p95,
            };
            let ready = w.state == SlotState::Ready;
            let score = if ready { health::score(&inputs, t) } else { 0 };
            let status = if ready {
                health::status(score).to_string()
            } else {
                format!("{:?}", w.state).to_lowercase()
            };
            reports.push(WorkerReport {
                id: w.id,
                pid: w.pid.unwrap_or(0),
                state: w.state,
                status,
                health_score: score,
                penalties: health::penalties(&inputs, t)
                    .iter()
                    .filter(|(_, over)| *over && ready)
                    .map(|(name, _)| *name)
                    .collect(),
                uptime: round3(w.uptime_ms as f64 / 1000.0),
                restarts: w.restarts,
                metrics: WorkerMetrics {
                    requests: totals.requests,
                    errors: totals.errors,
                    active_connections: w.in_flight,
                    latency: ResponseTimes::from(&latency),
                    cpu_usage: round1(cpu),
                    memory_usage: round1(inputs.memory_percent),
                    memory_mb: round1(rss as f64 / (1024.0 * 1024.0)),
                    rss_bytes: rss,
                    event_loop_lag: round3(lag_ms),
                    requests_per_second: rates_over(&rates, HEADLINE_RATE_WINDOW).requests,
                    errors_per_second: rates_over(&rates, HEADLINE_RATE_WINDOW).errors,
                    error_rate: round1(inputs.error_rate_percent()),
                    rates,
                },
            });
        }

        // The cluster: every slot that ever served, including ones scaled away since.
        let mut window_h = window_histogram();
        let mut total_h = window_histogram();
        let mut totals = Counts::default();
        let mut window = Counts::default();
        let mut rates = Rates::default();
        for slot in 0..=MAX_SLOTS {
            let seen = rec.with_slot(slot, |w| {
                w.merge_latency(from, now, &mut window_h);
                // Different precision: `add` re-records, which is slower but exact enough.
                let _ = total_h.add(w.total_latency());
                (w.totals(), w.counts(from, now))
            });
            if let Some((t, c)) = seen {
                totals.requests += t.requests;
                totals.errors += t.errors;
                window.requests += c.requests;
                window.errors += c.errors;
                let r = self.rates(slot, now);
                for (sum, add) in [
                    (&mut rates.s1, r.s1),
                    (&mut rates.s10, r.s10),
                    (&mut rates.s60, r.s60),
                ] {
                    sum.requests = round3(sum.requests + add.requests);
                    sum.errors = round3(sum.errors + add.errors);
                }
            }
        }
        let latency = LatencySummary::of(&window_h);
        let cluster_inputs = HealthInputs {
            requests: window.requests,
            errors: window.errors,
            ..HealthInputs::default()
        };
        let cluster = ClusterSummary {
            start_time: self.inner.start_time_ms,
            total_requests: totals.requests,
            total_errors: totals.errors,
            requests_per_second: rates_over(&rates, HEADLINE_RATE_WINDOW).requests,
            errors_per_second: rates_over(&rates, HEADLINE_RATE_WINDOW).errors,
            error_rate: round1(cluster_inputs.error_rate_percent()),
            latency: ResponseTimes::from(&latency),
            active_connections: workers.iter().map(|w| w.in_flight).sum(),
            uptime: round3(uptime.as_secs_f64()),
            workers: workers.len(),
            healthy_workers: reports.iter().filter(|w| w.status == "healthy").count(),
            rates,
            since_start: LatencySummary::of(&total_h),
        };
        Report {
            cluster,
            workers: reports,
        }
    }

    /// [`Monitor::report`] for a running cluster.
    pub fn report_for(&self, cluster: &impl ClusterView) -> Report {
        self.report(&cluster.workers(), cluster.uptime())
    }

    /// The alerts `report` raises: cluster error rate and p95; each ready worker's error rate, p95,
    /// memory and lag.
    pub fn alerts(&self, report: &Report) -> Vec<Alert> {
        let t = &self.inner.thresholds;
        let c = &report.cluster;
        let mut alerts: Vec<Alert> = [
            Alert::check(
                "cluster",
                None,
                "errorRate",
                c.error_rate,
                t.error_rate_percent,
                "%",
            ),
            Alert::check("cluster", None, "p95", c.latency.p95, t.p95_ms, " ms"),
        ]
        .into_iter()
        .flatten()
        .collect();
        for w in report
            .workers
            .iter()
            .filter(|w| w.state == SlotState::Ready)
        {
            let m = &w.metrics;
            let id = Some(w.id);
            alerts.extend(
                [
                    Alert::check(
                        "worker",
                        id,
                        "errorRate",
                        m.error_rate,
                        t.error_rate_percent,
                        "%",
                    ),
                    Alert::check("worker", id, "p95", m.latency.p95, t.p95_ms, " ms"),
                    Alert::check(
                        "worker",
                        id,
                        "memory",
                        m.memory_usage,
                        t.memory_percent,
                        "%",
                    ),
                    Alert::check("worker", id, "lag", m.event_loop_lag, t.lag_ms, " ms"),
                ]
                .into_iter()
                .flatten(),
            );
        }
        alerts
    }

    /// Since-start latency histograms and totals per slot that ever served, for Prometheus.
    pub(crate) fn totals_by_slot(&self) -> Vec<(usize, Counts, Histogram<u64>, u64)> {
        (0..=MAX_SLOTS)
            .filter_map(|slot| {
                self.inner.recorder.with_slot(slot, |w| {
                    (
                        slot,
                        w.totals(),
                        w.total_latency().clone(),
                        w.total_latency_us(),
                    )
                })
            })
            .collect()
    }

    /// A snapshot of the last complete second, appended to the history.
    pub fn record_history(&self, report: &Report) {
        let rec = &self.inner.recorder;
        let now = rec.now();
        let mut h = window_histogram();
        if let Some((from, to)) = complete_seconds(1, now) {
            for slot in 0..=MAX_SLOTS {
                rec.merge_latency(slot, from, to, &mut h);
            }
        }
        let last = LatencySummary::of(&h);
        let point = HistoryPoint {
            time: unix_ms(),
            requests_per_second: report.cluster.rates.s1.requests,
            errors_per_second: report.cluster.rates.s1.errors,
            p50: last.p50,
            p95: last.p95,
            p99: last.p99,
            active_connections: report.cluster.active_connections,
            workers: report
                .workers
                .iter()
                .map(|w| WorkerPoint {
                    id: w.id,
                    cpu_usage: w.metrics.cpu_usage,
                    memory_mb: w.metrics.memory_mb,
                    event_loop_lag: w.metrics.event_loop_lag,
                    health_score: w.health_score,
                    requests_per_second: w.metrics.rates.s1.requests,
                })
                .collect(),
        };
        self.inner
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(point);
    }

    /// The last `seconds` snapshots, oldest first.
    pub fn history(&self, seconds: usize) -> Vec<HistoryPoint> {
        self.inner
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last(seconds)
    }

    /// Snapshots `cluster` into the history every `every` (one second for `/history`);
    /// runs until the runtime stops. Spawn it from `Cluster::on_start`.
    pub async fn keep_history(self, cluster: impl ClusterView, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let report = self.report_for(&cluster);
            self.record_history(&report);
        }
    }
}

fn rates_over(rates: &Rates, window: u64) -> RatePair {
    match window {
        1 => rates.s1,
        60 => rates.s60,
        _ => rates.s10,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::metrics::{Outcome, SlotCounters};

    fn worker(id: usize, counters: Arc<SlotCounters>) -> WorkerInfo {
        WorkerInfo {
            id,
            pool: 0,
            pid: Some(4000 + id as u32),
            state: SlotState::Ready,
            restarts: 0,
            uptime_ms: 1500,
            generation: 0,
            requests: 0,
            errors: 0,
            in_flight: 0,
            history: Default::default(),
            counters,
        }
    }

    fn done(slot: usize, ms: u64, status: u16) -> Completion {
        Completion {
            slot,
            pid: 1,
            pool: 0,
            latency: Duration::from_millis(ms),
            status: Some(status),
            outcome: Outcome::Complete,
        }
    }

    #[test]
    fn the_report_has_the_original_names_and_no_nulls() {
        let m = Monitor::new(Thresholds::default(), Some(1 << 30));
        for _ in 0..10 {
            m.recorder().record_at(0, &done(1, 20, 200));
        }
        let c = Arc::new(SlotCounters::default());
        c.cpu_centi_percent.store(9_500, Ordering::Relaxed);
        c.rss_bytes.store(100 << 20, Ordering::Relaxed);
        c.runtime_lag_us.store(1500, Ordering::Relaxed);
        let workers = [worker(1, c), worker(2, Arc::default())];
        let r = m.report(&workers, Duration::from_secs(3));
        let json = serde_json::to_value(&r).unwrap();
        for key in [
            "startTime",
            "totalRequests",
            "totalErrors",
            "requestsPerSecond",
            "p50",
            "p95",
            "p99",
            "activeConnections",
            "uptime",
            "workers",
        ] {
            assert!(
                json["cluster"].get(key).is_some(),
                "cluster.{key} in {json}"
            );
        }
        let w = &json["workers"][0];
        for key in ["id", "pid", "status", "healthScore", "uptime"] {
            assert!(w.get(key).is_some(), "workers[0].{key} in {w}");
        }
        for key in [
            "requests",
            "errors",
            "activeConnections",
            "avgResponseTime",
            "minResponseTime",
            "maxResponseTime",
            "p50",
            "p95",
            "p99",
            "cpuUsage",
            "memoryMB",
            "eventLoopLag",
            "requestsPerSecond",
            "errorsPerSecond",
        ] {
            assert!(w["metrics"].get(key).is_some(), "metrics.{key} in {w}");
        }
        assert!(!json.to_string().contains("null"), "no nulls: {json}");
        assert_eq!(r.cluster.total_requests, 10);
        assert_eq!(r.workers[0].metrics.requests, 10);
        assert_eq!(r.workers[1].metrics.requests, 0);
        assert_eq!(r.workers[0].metrics.cpu_usage, 95.0);
        assert_eq!(r.workers[0].metrics.memory_mb, 100.0);
        assert_eq!(r.workers[0].metrics.event_loop_lag, 1.5);
        // CPU over 80% is one penalty: still healthy.
        assert_eq!(r.workers[0].health_score, 80);
        assert_eq!(r.workers[0].penalties, ["cpu"]);
        assert_eq!(r.workers[0].status, "healthy");
        assert!(
            (r.workers[0].metrics.latency.p50 - 20.0).abs() < 0.3,
            "{:?}",
            r.workers[0].metrics
        );
    }

    #[test]
    fn alerts_name_the_worker_and_the_metric() {
        let m = Monitor::new(Thresholds::default(), Some(1000));
        let c = Arc::new(SlotCounters::default());
        c.rss_bytes.store(900, Ordering::Relaxed);
        c.runtime_lag_us.store(250_000, Ordering::Relaxed);
        let r = m.report(&[worker(3, c)], Duration::from_secs(1));
        let alerts = m.alerts(&r);
        let names: Vec<(Option<usize>, &str)> =
            alerts.iter().map(|a| (a.worker, a.metric)).collect();
        assert_eq!(names, [(Some(3), "memory"), (Some(3), "lag")], "{alerts:?}");
        assert_eq!(
            alerts[1].severity, "critical",
            "250 ms is over twice 100 ms"
        );
    }

    #[test]
    fn history_points_follow_the_reports() {
        let m = Monitor::new(Thresholds::default(), Some(1 << 30));
        let r = m.report(&[worker(1, Arc::default())], Duration::from_secs(1));
        m.record_history(&r);
        m.record_history(&r);
        let h = m.history(10);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].workers.len(), 1);
        assert_eq!(m.history(1).len(), 1);
    }
}
