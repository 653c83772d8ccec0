//! [`PoolWindows`]: requests, errors and latency per version pool, over a window that is reset on
//! demand: what a canary analysis compares, step by step.
//!
//! Measured at the edge from each [`Completion`], so a worker that dies or hangs is counted as
//! the client saw it. A window is reset at the start of every rollout step, so a verdict compares
//! the canary with the stable pool over the same stretch of time and never carries the load of an
//! earlier step (the Node original never reset its figures).
//!
//! Cost: registered only by lessons with version pools. One uncontended `Mutex` per pool, held
//! for one histogram increment.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{Completion, Observer};

/// The most pools counted; completions of higher pools are ignored.
pub const MAX_POOLS: usize = 8;
/// Latencies above this (in µs) are recorded as this.
const MAX_US: u64 = 60_000_000;

#[derive(Debug)]
struct Window {
    requests: u64,
    errors: u64,
    latency_us: Histogram<u64>,
}

impl Window {
    fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            // Three significant figures over 1 µs..60 s: about 30 KB a pool.
            // Constant bounds that hdrhistogram accepts (the unit test builds one), so no failure.
            latency_us: Histogram::new_with_bounds(1, MAX_US, 3)
                .unwrap_or_else(|e| unreachable!("constant histogram bounds rejected: {e:?}")),
        }
    }
}

/// Counts per version pool since the last [`PoolWindows::reset`].
#[derive(Debug)]
pub struct PoolWindows {
    pools: Box<[Mutex<Window>]>,
    since: Mutex<Instant>,
}

impl Default for PoolWindows {
    fn default() -> Self {
        Self {
            pools: (0..MAX_POOLS).map(|_| Mutex::new(Window::new())).collect(),
            since: Mutex::new(Instant::now()),
        }
    }
}

/// One pool's figures over the current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStats {
    /// Requests that ended in the window (abandoned ones included).
    pub requests: u64,
    /// Of them, 5xx answers and transport failures.
    pub errors: u64,
    /// `errors / requests`, 0 when there were none.
    pub error_rate: f64,
    /// Latency percentiles and mean, in milliseconds.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    /// Requests a second over the window.
    pub requests_per_second: f64,
}

impl PoolWindows {
    fn lock(m: &Mutex<Window>) -> std::sync::MutexGuard<'_, Window> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a new window for every pool.
    pub fn reset(&self) {
        for pool in self.pools.iter() {
            *Self::lock(pool) = Window::new();
        }
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// How long the current window has run.
    pub fn elapsed(&self) -> Duration {
        self.since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// `pool`'s figures over the current window.
    pub fn stats(&self, pool: usize) -> PoolStats {
        let Some(cell) = self.pools.get(pool) else {
            return PoolStats::default();
        };
        let secs = self.elapsed().as_secs_f64().max(1e-3);
        let w = Self::lock(cell);
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &w.latency_us;
        let measured = !h.is_empty();
        PoolStats {
            requests: w.requests,
            errors: w.errors,
            error_rate: if w.requests == 0 {
                0.0
            } else {
                w.errors as f64 / w.requests as f64
            },
            p50_ms: if measured {
                ms(h.value_at_quantile(0.50))
            } else {
                0.0
            },
            p95_ms: if measured {
                ms(h.value_at_quantile(0.95))
            } else {
                0.0
            },
            p99_ms: if measured {
                ms(h.value_at_quantile(0.99))
            } else {
                0.0
            },
            mean_ms: if measured { h.mean() / 1000.0 } else { 0.0 },
            requests_per_second: w.requests as f64 / secs,
        }
    }
}

impl Observer for PoolWindows {
    fn on_complete(&self, c: &Completion) {
        let Some(cell) = self.pools.get(c.pool) else {
            return;
        };
        let us = (c.latency.as_micros() as u64).clamp(1, MAX_US);
        let mut w = Self::lock(cell);
        w.requests += 1;
        if c.is_error() {
            w.errors += 1;
        }
        let _ = w.latency_us.record(us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::Outcome;

    fn done(pool: usize, ms: u64, status: u16) -> Completion {
        Completion {
            slot: 1,
            pid: 1,
            pool,
            latency: Duration::from_millis(ms),
            status: Some(status),
            outcome: Outcome::Complete,
        }
    }

    #[test]
    fn each_pool_counts_its_own_requests_errors_and_latency_until_reset() {
        let w = PoolWindows::default();
        for i in 0..100 {
            w.on_complete(&done(0, 10, 200));
            w.on_complete(&done(1, 100, if i < 20 { 500 } else { 200 }));
        }
        let (stable, canary) = (w.stats(0), w.stats(1));
        assert_eq!((stable.requests, stable.errors), (100, 0));
        assert_eq!((canary.requests, canary.errors), (100, 20));
        assert!((canary.error_rate - 0.2).abs() < 1e-9);
        assert!((stable.p95_ms - 10.0).abs() < 0.1, "{stable:?}");
        assert!((canary.p95_ms - 100.0).abs() < 0.5, "{canary:?}");
        w.reset();
        assert_eq!(
            w.stats(1),
            PoolStats {
                requests_per_second: 0.0,
                ..PoolStats::default()
            }
        );
    }
}
