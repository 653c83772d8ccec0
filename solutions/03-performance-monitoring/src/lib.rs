//! Reference answer to exercise 03: performance monitoring. The task and hints are in
//! `exercises/03-performance-monitoring/README.md`; the grader is that exercise's `tests/grader.rs`.
//!
//! - [`Window`]: requests of the last `window_ms` milliseconds, with their latency and whether they
//!   failed: how many, how many per second, what share failed, and latency percentiles.
//! - [`health_score`] and [`status`]: the course's score, 100 minus 20 per threshold crossed.
//!
//! Time is a parameter (`now_ms`), so everything is tested without a clock.

use std::collections::VecDeque;

/// One request: when it ended, how long it took, whether it failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When the request ended, in ms on the caller's clock.
    pub at_ms: u64,
    /// How long it took, in ms.
    pub latency_ms: f64,
    /// A 5xx or a transport failure.
    pub error: bool,
}

/// The requests of the last `window_ms` milliseconds.
///
/// A sample taken at `at_ms` is inside the window at `now_ms` when `at_ms <= now_ms` and
/// `now_ms - at_ms < window_ms`: with a 1000 ms window, a sample at 5000 counts at 5999, not at 6000.
#[derive(Debug, Clone)]
pub struct Window {
    window_ms: u64,
    /// Oldest first. Only samples still inside the window are kept, so memory is bounded by the
    /// traffic of one window, however long the tracker runs.
    samples: VecDeque<Sample>,
}

impl Window {
    /// An empty window reaching `window_ms` milliseconds back (at least 1).
    pub fn new(window_ms: u64) -> Self {
        Self {
            window_ms: window_ms.max(1),
            samples: VecDeque::new(),
        }
    }

    /// How far back the window reaches, in ms.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Samples held (including any not yet evicted).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Whether a sample taken at `at_ms` is inside the window at `now_ms`.
    fn inside(&self, at_ms: u64, now_ms: u64) -> bool {
        at_ms <= now_ms && now_ms - at_ms < self.window_ms
    }

    /// Drops every sample that is outside the window at `now_ms`.
    pub fn evict(&mut self, now_ms: u64) {
        while let Some(front) = self.samples.front() {
            if now_ms.saturating_sub(front.at_ms) >= self.window_ms {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// Records a request that ended at `now_ms`, first evicting what has left the window.
    pub fn record(&mut self, now_ms: u64, latency_ms: f64, error: bool) {
        self.evict(now_ms);
        self.samples.push_back(Sample {
            at_ms: now_ms,
            latency_ms,
            error,
        });
    }

    fn current(&self, now_ms: u64) -> impl Iterator<Item = &Sample> {
        self.samples
            .iter()
            .filter(move |s| self.inside(s.at_ms, now_ms))
    }

    /// Requests inside the window at `now_ms`.
    pub fn count(&self, now_ms: u64) -> u64 {
        self.current(now_ms).count() as u64
    }

    /// Requests per second over the window.
    pub fn rate(&self, now_ms: u64) -> f64 {
        self.count(now_ms) as f64 * 1000.0 / self.window_ms as f64
    }

    /// Failed requests as a percent of requests in the window; 0 when there were none.
    pub fn error_rate(&self, now_ms: u64) -> f64 {
        let (n, errors) = self
            .current(now_ms)
            .fold((0u64, 0u64), |(n, e), s| (n + 1, e + u64::from(s.error)));
        if n == 0 {
            0.0
        } else {
            errors as f64 * 100.0 / n as f64
        }
    }

    /// The `p`-th percentile (0 to 100) of latencies in the window by nearest rank; `None` if empty.
    pub fn percentile(&self, now_ms: u64, p: f64) -> Option<f64> {
        let mut latencies: Vec<f64> = self.current(now_ms).map(|s| s.latency_ms).collect();
        if latencies.is_empty() {
            return None;
        }
        latencies.sort_by(f64::total_cmp);
        let n = latencies.len();
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
        Some(latencies[rank.clamp(1, n) - 1])
    }
}

/// Where each figure starts to count against a worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Percent of one core.
    pub cpu_percent: f64,
    /// Percent of the memory limit.
    pub memory_percent: f64,
    /// Runtime lag, ms.
    pub lag_ms: f64,
    /// Percent of requests.
    pub error_rate_percent: f64,
    /// ms.
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

/// A worker's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Health {
    /// Percent of one core.
    pub cpu_percent: f64,
    /// Percent of the memory limit.
    pub memory_percent: f64,
    /// ms.
    pub lag_ms: f64,
    /// Percent of requests.
    pub error_rate_percent: f64,
    /// ms.
    pub p95_ms: f64,
}

/// 100 minus 20 for each figure strictly above its threshold.
pub fn health_score(h: &Health, t: &Thresholds) -> u8 {
    let over = [
        h.cpu_percent > t.cpu_percent,
        h.memory_percent > t.memory_percent,
        h.lag_ms > t.lag_ms,
        h.error_rate_percent > t.error_rate_percent,
        h.p95_ms > t.p95_ms,
    ]
    .iter()
    .filter(|o| **o)
    .count() as u8;
    100 - 20 * over
}

/// `"healthy"` above 50, else `"degraded"`.
pub fn status(score: u8) -> &'static str {
    if score > 50 { "healthy" } else { "degraded" }
}
