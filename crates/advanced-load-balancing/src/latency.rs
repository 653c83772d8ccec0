//! Each slot's response times as the edge measured them: average and 95th percentile for
//! `/lb-stats`.
//!
//! An [`Observer`], so it sees every proxied request when it ends. Latencies go into a log-linear
//! histogram (16 buckets per power of two: every reported value is within 1/16, about 6%, of the
//! truth) so a percentile costs a walk over a few hundred counters and memory stays fixed however
//! many requests pass. The figures cover everything since the master started, like the Node
//! original's `avgResponseTime`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use common::metrics::{Completion, Observer, Outcome};

/// Sub-buckets per power of two.
const SUB: u32 = 16;
/// Buckets: values up to 2^40 µs (12 days) fit.
const BUCKETS: usize = (40 * SUB) as usize;

/// One slot's histogram.
#[derive(Debug, Clone)]
struct Histogram {
    count: u64,
    sum_us: u64,
    buckets: Vec<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            count: 0,
            sum_us: 0,
            buckets: vec![0; BUCKETS],
        }
    }
}

/// The bucket holding `us`: exact below 16, then 16 per power of two.
fn bucket(us: u64) -> usize {
    if us < u64::from(SUB) {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // ≥ 4
    let sub = (us >> (exp - 4)) & u64::from(SUB - 1);
    (((exp - 3) * SUB) as usize + sub as usize).min(BUCKETS - 1)
}

/// The largest value in bucket `i` (what a percentile in it reports).
fn upper(i: usize) -> u64 {
    let i = i as u64;
    let sub = u64::from(SUB);
    if i < sub {
        return i;
    }
    let exp = i / sub + 3;
    let low = (sub + i % sub) << (exp - 4);
    low + (1 << (exp - 4)) - 1
}

impl Histogram {
    fn record(&mut self, us: u64) {
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.buckets[bucket(us)] += 1;
    }

    fn quantile(&self, q: f64) -> u64 {
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper(i);
            }
        }
        0
    }
}

/// Average and 95th percentile of one slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Requests measured.
    pub count: u64,
    /// Mean response time.
    pub avg: Duration,
    /// 95% of responses took at most this.
    pub p95: Duration,
}

/// Per-slot latency histograms.
#[derive(Debug, Default)]
pub struct Latency {
    /// Slot → histogram. One short lock per completed request: a handful of additions.
    slots: Mutex<BTreeMap<usize, Histogram>>,
}

impl Latency {
    /// Nothing measured yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one response time for `slot`.
    pub fn record(&self, slot: usize, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(slot).or_default().record(us);
    }

    /// `slot`'s figures, or `None` before its first response.
    pub fn summary(&self, slot: usize) -> Option<Summary> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let h = slots.get(&slot).filter(|h| h.count > 0)?;
        Some(Summary {
            count: h.count,
            avg: Duration::from_micros(h.sum_us / h.count),
            p95: Duration::from_micros(h.quantile(0.95)),
        })
    }
}

impl Observer for Latency {
    fn on_complete(&self, c: &Completion) {
        // Only whole responses: a request the client abandoned has no response time.
        if c.outcome != Outcome::Abandoned {
            self.record(c.slot, c.latency);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_within_a_sixteenth() {
        for us in [0u64, 1, 15, 16, 17, 100, 1_000, 12_345, 250_000, 3_000_000] {
            let up = upper(bucket(us));
            assert!(up >= us, "{us} µs lands in a bucket ending at {up}");
            assert!(up - us <= us / 16 + 1, "{us} µs reported as {up}");
        }
    }

    #[test]
    fn average_and_p95_of_a_known_set() {
        let l = Latency::new();
        // 1..=100 ms: mean 50.5 ms, 95th percentile 95 ms.
        for ms in 1..=100 {
            l.record(1, Duration::from_millis(ms));
        }
        let s = l.summary(1).expect("measured");
        assert_eq!(s.count, 100);
        assert_eq!(s.avg, Duration::from_micros(50_500));
        let p95 = s.p95.as_secs_f64() * 1000.0;
        assert!((95.0..=101.0).contains(&p95), "p95 {p95} ms");
        assert_eq!(l.summary(2), None);
    }
}
