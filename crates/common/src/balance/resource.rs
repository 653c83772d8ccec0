//! Resource-based: prefer the worker using the least CPU and memory, weighed by how busy it is.
//!
//! The master samples each worker's CPU and resident memory by pid every `METRICS_INTERVAL` (see
//! [`SlotCounters`](crate::slot::SlotCounters)). Those samples are seconds old, so on their own
//! they herd: every request until the next sample goes to whichever worker looked idle last time.
//! The score therefore multiplies the sampled load by `1 + in flight`, the count taken at dispatch:
//!
//! ```text
//! score = (1 + CPU_WEIGHT × cores busy + memory / largest worker's memory) × (1 + in flight)
//! ```
//!
//! A worker burning a whole core scores as if it already had [`CPU_WEIGHT`] requests queued.
//! Memory is relative to the largest worker, so it only separates a worker that grows apart from
//! the rest (a leak). Before the first sample every load is 0 and the rule is least-connections:
//! the Node course's resource strategy sent 40 of 40 requests to one worker right there, and read
//! its CPU figure as cumulative seconds rather than a percentage.

use std::sync::atomic::Ordering;

use super::rotor::{Rotor, least_by};
use super::selector::{RequestInfo, Selector, Worker};

/// How many queued requests one fully busy core is worth in the score.
pub const CPU_WEIGHT: f64 = 4.0;

/// Sampled CPU and memory × (1 + in flight).
#[derive(Debug, Default)]
pub struct ResourceBased {
    rotor: Rotor,
}

impl ResourceBased {
    /// A new selector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The score of `b` when the largest worker holds `max_rss` bytes; lower is better.
    pub fn score(b: &Worker, max_rss: u64) -> f64 {
        let c = b.counters();
        // cpu_centi_percent is hundredths of a percent of one core: 10_000 is one core.
        let cores = c.cpu_centi_percent.load(Ordering::Relaxed) as f64 / 10_000.0;
        let memory = if max_rss == 0 {
            0.0
        } else {
            c.rss_bytes.load(Ordering::Relaxed) as f64 / max_rss as f64
        };
        (1.0 + CPU_WEIGHT * cores + memory) * (1.0 + b.in_flight() as f64)
    }
}

impl Selector for ResourceBased {
    fn select(&self, _req: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize> {
        let max_rss = ready
            .iter()
            .map(|b| b.counters().rss_bytes.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        least_by(ready, self.rotor.start(ready.len()), |b| {
            Self::score(b, max_rss)
        })
    }

    fn name(&self) -> &'static str {
        "resource-based"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::rotor::testing::{backends, pick, sequence, set_in_flight};

    fn sample(b: &Worker, cpu_percent: u64, rss: u64) {
        b.counters()
            .cpu_centi_percent
            .store(cpu_percent * 100, Ordering::Relaxed);
        b.counters().rss_bytes.store(rss, Ordering::Relaxed);
    }

    #[test]
    fn before_any_sample_it_spreads_like_least_connections() {
        let ready = backends(&[1, 2]);
        let r = ResourceBased::new();
        assert_eq!(sequence(&r, &ready, 4), [1, 2, 1, 2]);
    }

    #[test]
    fn a_worker_burning_a_core_gets_new_traffic_only_when_the_other_is_queued() {
        let ready = backends(&[1, 2]);
        sample(&ready[0], 5, 50 << 20);
        sample(&ready[1], 100, 50 << 20);
        let r = ResourceBased::new();
        // slot 1: (1 + 4×0.05 + 1) × (1 + f) = 2.2 × (1 + f)
        // slot 2: (1 + 4×1.00 + 1) × (1 + 0) = 6
        //   f = 0, 1 → 2.2, 4.4 < 6 → slot 1;  f = 2 → 6.6 > 6 → slot 2
        for (f, want) in [(0, 1), (1, 1), (2, 2)] {
            set_in_flight(&ready[0], f);
            assert_eq!(pick(&r, &ready), want, "slot 1 with {f} in flight");
        }
    }

    #[test]
    fn memory_counts_relative_to_the_largest_worker() {
        let ready = backends(&[1, 2]);
        sample(&ready[0], 0, 400 << 20);
        sample(&ready[1], 0, 100 << 20);
        // slot 1: 1 + 0 + 1.0 = 2.0; slot 2: 1 + 0 + 0.25 = 1.25 → slot 2
        let r = ResourceBased::new();
        assert_eq!(sequence(&r, &ready, 3), [2, 2, 2]);
    }
}
