//! One slot's request history: a ring of one-second slices, each with a latency histogram and
//! request/error counts, plus a since-start histogram.
//!
//! Time is a parameter (`now`, whole seconds since the metrics started), so this is tested without a
//! clock. The slice for second `s` lives at index `s % WINDOW_SECS` and is valid only while
//! `head - WINDOW_SECS < s <= head`; older contents are cleared lazily when the ring advances, and
//! readers ignore slices outside that range, so reading never mutates.
//!
//! ```text
//!   second:   … 118 119 120 121 … 177 178 [179]   ← head (the current, partial second)
//!   index:    … 58  59  0   1   … 57  58  [59]
//!             └────────── the last 60 seconds ──────────┘
//! ```

use hdrhistogram::Histogram;
use serde::Serialize;

/// How far back the sliding window reaches, in one-second slices.
pub const WINDOW_SECS: u64 = 60;
/// The largest latency the histograms resolve, in microseconds (one hour); larger values are
/// recorded as this. Every hop of the edge times out long before.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant figures of the per-second histograms: 2 keeps each value within 1% and a slice at
/// about 20 KB, so a slot's 60 slices stay near 1 MB.
const WINDOW_SIGFIG: u8 = 2;
/// Significant figures of the since-start histogram (0.1%), which feeds Prometheus buckets.
const TOTAL_SIGFIG: u8 = 3;

/// A histogram shaped like the window's slices, for merging them.
pub fn window_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (checked by a unit test), so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, WINDOW_SIGFIG)
        .unwrap_or_else(|e| unreachable!("constant histogram bounds rejected: {e:?}"))
}

fn total_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, TOTAL_SIGFIG)
        .unwrap_or_else(|e| unreachable!("constant histogram bounds rejected: {e:?}"))
}

#[derive(Debug)]
struct Slice {
    latency: Histogram<u64>,
    requests: u64,
    errors: u64,
}

impl Slice {
    fn clear(&mut self) {
        // Resetting costs a pass over the counts array: skip slices that saw nothing.
        if self.requests > 0 {
            self.latency.reset();
        }
        self.requests = 0;
        self.errors = 0;
    }
}

/// Requests and errors counted over some seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests that ended in those seconds.
    pub requests: u64,
    /// Of which errors (5xx or transport failures).
    pub errors: u64,
}

/// One slot's sliding window and totals.
#[derive(Debug)]
pub struct SlotWindow {
    slices: Box<[Slice]>,
    /// The newest second the ring holds.
    head: u64,
    total: Histogram<u64>,
    /// Exact, unlike a histogram's mean: Prometheus's `_sum`.
    total_us: u64,
    requests: u64,
    errors: u64,
}

impl Default for SlotWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotWindow {
    /// An empty window starting at second 0. Allocates every histogram now, so recording never does.
    pub fn new() -> Self {
        let slices = (0..WINDOW_SECS)
            .map(|_| Slice {
                latency: window_histogram(),
                requests: 0,
                errors: 0,
            })
            .collect();
        Self {
            slices,
            head: 0,
            total: total_histogram(),
            total_us: 0,
            requests: 0,
            errors: 0,
        }
    }

    /// Records one request that ended in second `now` after `latency_us`.
    pub fn record(&mut self, now: u64, latency_us: u64, error: bool) {
        self.advance(now);
        // A caller that read the clock just before another one may arrive a second late: its second
        // is still in the ring unless it is a whole window behind, and then it counts as the newest.
        let second = if now + WINDOW_SECS > self.head {
            now
        } else {
            self.head
        };
        let slice = &mut self.slices[(second % WINDOW_SECS) as usize];
        let value = latency_us.max(1);
        slice.latency.saturating_record(value);
        slice.requests += 1;
        slice.errors += u64::from(error);
        self.total.saturating_record(value);
        self.total_us = self.total_us.saturating_add(latency_us);
        self.requests += 1;
        self.errors += u64::from(error);
    }

    /// Moves the head to `now`, clearing the slices of the seconds it passes over.
    fn advance(&mut self, now: u64) {
        if now <= self.head {
            return;
        }
        let first = (self.head + 1).max(now.saturating_sub(WINDOW_SECS - 1));
        for s in first..=now {
            self.slices[(s % WINDOW_SECS) as usize].clear();
        }
        self.head = now;
    }

    /// The slice holding second `s`, if the ring still (or already) holds it.
    fn slice(&self, s: u64) -> Option<&Slice> {
        (s <= self.head && s + WINDOW_SECS > self.head)
            .then(|| &self.slices[(s % WINDOW_SECS) as usize])
    }

    /// Requests and errors that ended in seconds `from..=to`.
    pub fn counts(&self, from: u64, to: u64) -> Counts {
        (from..=to)
            .filter_map(|s| self.slice(s))
            .fold(Counts::default(), |acc, s| Counts {
                requests: acc.requests + s.requests,
                errors: acc.errors + s.errors,
            })
    }

    /// Adds the latencies of seconds `from..=to` into `into` (a [`window_histogram`]).
    pub fn merge_latency(&self, from: u64, to: u64, into: &mut Histogram<u64>) {
        for s in (from..=to).filter_map(|s| self.slice(s)) {
            if s.requests > 0 {
                // Same bounds and precision, so adding cannot fail.
                let _ = into.add(&s.latency);
            }
        }
    }

    /// Every request since the start.
    pub fn totals(&self) -> Counts {
        Counts {
            requests: self.requests,
            errors: self.errors,
        }
    }

    /// The since-start latency histogram, in microseconds.
    pub fn total_latency(&self) -> &Histogram<u64> {
        &self.total
    }

    /// The exact sum of every latency since the start, in microseconds.
    pub fn total_latency_us(&self) -> u64 {
        self.total_us
    }
}

/// Requests or errors per second over the last `window` complete seconds before `now`.
///
/// The current second is partial, so it is left out; in the first seconds after the start the
/// divisor is the seconds that have passed, not the full window, so the rate is not understated.
pub fn rate(count_in_window: u64, window: u64, now: u64) -> f64 {
    let span = window.min(now);
    if span == 0 {
        0.0
    } else {
        count_in_window as f64 / span as f64
    }
}

/// The seconds `rate` counts for a `window` ending before `now`: `(from, to)`, empty when `now` is 0.
pub fn complete_seconds(window: u64, now: u64) -> Option<(u64, u64)> {
    let to = now.checked_sub(1)?;
    Some((now.saturating_sub(window), to))
}

/// A latency distribution in milliseconds; all zero when nothing was recorded (never null).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Requests summarised.
    pub count: u64,
    /// Fastest.
    pub min: f64,
    /// Slowest.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl LatencySummary {
    /// Summarises a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| round3(us as f64 / 1000.0);
        Self {
            count: h.len(),
            min: ms(h.min()),
            max: ms(h.max()),
            mean: round3(h.mean() / 1000.0),
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
        }
    }
}

/// Rounds to three decimals: microsecond resolution for milliseconds, and short JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_bounds_are_accepted_and_small() {
        let h = window_histogram();
        // Two significant figures over 1 µs .. 1 h: a few thousand counters, not hundreds of thousands.
        assert!(h.distinct_values() < 4096, "{}", h.distinct_values());
        let _ = total_histogram();
    }

    #[test]
    fn percentiles_are_within_one_percent_of_what_was_recorded() {
        let mut w = SlotWindow::new();
        // 1..=1000 ms, one each: p50 = 500 ms, p99 = 990 ms.
        for ms in 1..=1000u64 {
            w.record(5, ms * 1000, false);
        }
        let mut h = window_histogram();
        w.merge_latency(0, 5, &mut h);
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 500.0).abs() <= 5.0, "p50 {}", s.p50);
        assert!((s.p99 - 990.0).abs() <= 9.9, "p99 {}", s.p99);
        assert!((s.min - 1.0).abs() <= 0.01, "min {}", s.min);
        assert!((s.max - 1000.0).abs() <= 10.0, "max {}", s.max);
        assert!((s.mean - 500.5).abs() <= 5.0, "mean {}", s.mean);
    }

    #[test]
    fn counts_cover_only_the_seconds_asked_for() {
        let mut w = SlotWindow::new();
        // second: 0  1  2  3
        // reqs:   1  2  0  3 (one error in second 3)
        w.record(0, 10, false);
        w.record(1, 10, false);
        w.record(1, 10, false);
        for i in 0..3 {
            w.record(3, 10, i == 0);
        }
        assert_eq!(
            w.counts(1, 2),
            Counts {
                requests: 2,
                errors: 0
            }
        );
        assert_eq!(
            w.counts(0, 3),
            Counts {
                requests: 6,
                errors: 1
            }
        );
        assert_eq!(w.totals().requests, 6);
    }

    #[test]
    fn seconds_older_than_the_window_are_forgotten_but_totals_are_not() {
        let mut w = SlotWindow::new();
        w.record(0, 1000, true);
        w.record(WINDOW_SECS - 1, 2000, false);
        assert_eq!(
            w.counts(0, WINDOW_SECS).requests,
            2,
            "both inside the window"
        );
        // Second 60 reuses second 0's slice.
        w.record(WINDOW_SECS, 3000, false);
        assert_eq!(w.counts(0, WINDOW_SECS).requests, 2, "second 0 fell out");
        assert_eq!(w.counts(0, WINDOW_SECS).errors, 0);
        // A long idle gap clears everything in the ring.
        w.record(10 * WINDOW_SECS, 4000, false);
        assert_eq!(w.counts(0, 10 * WINDOW_SECS).requests, 1);
        let mut h = window_histogram();
        w.merge_latency(0, 10 * WINDOW_SECS, &mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(
            w.totals(),
            Counts {
                requests: 4,
                errors: 1
            }
        );
        assert_eq!(w.total_latency().len(), 4);
    }

    #[test]
    fn a_late_caller_lands_in_its_own_second() {
        let mut w = SlotWindow::new();
        w.record(10, 10, false);
        w.record(9, 10, false);
        assert_eq!(w.counts(9, 9).requests, 1);
        assert_eq!(w.counts(10, 10).requests, 1);
    }

    #[test]
    fn rates_divide_by_the_seconds_that_have_passed() {
        // 30 requests in the first 3 seconds: 10/s, not 30/60.
        assert_eq!(rate(30, 60, 3), 10.0);
        assert_eq!(rate(600, 60, 100), 10.0);
        assert_eq!(rate(5, 1, 0), 0.0);
        assert_eq!(complete_seconds(10, 0), None);
        assert_eq!(complete_seconds(10, 3), Some((0, 2)));
        assert_eq!(complete_seconds(10, 100), Some((90, 99)));
    }

    #[test]
    fn an_empty_summary_is_zeros() {
        assert_eq!(
            LatencySummary::of(&window_histogram()),
            LatencySummary::default()
        );
    }
}
