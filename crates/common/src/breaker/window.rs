//! The sliding windows the failure and slow-call rates are computed over, O(1) per call.
//!
//! Both keep running totals and subtract what leaves the window (resilience4j's
//! "subtract-on-evict"), so reading a rate never walks the window.

use std::time::Instant;

#[cfg(test)]
use std::time::Duration;

use super::config::SlidingWindow;

/// Calls, failures and slow calls in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Calls recorded.
    pub calls: u32,
    /// Of them, failures.
    pub failures: u32,
    /// Of them, slower than `slow_call_duration` (failed or not).
    pub slow: u32,
}

impl Totals {
    fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failures += u32::from(failed);
        self.slow += u32::from(slow);
    }

    fn sub(&mut self, other: Totals) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }

    /// Failures as a percent of calls; 0 with no calls.
    pub fn failure_rate(&self) -> f64 {
        percent(self.failures, self.calls)
    }

    /// Slow calls as a percent of calls; 0 with no calls.
    pub fn slow_call_rate(&self) -> f64 {
        percent(self.slow, self.calls)
    }
}

fn percent(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) * 100.0 / f64::from(whole)
    }
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

/// Either kind of window.
#[derive(Debug, Clone)]
pub enum Window {
    /// The last N calls: a ring of one byte per call.
    Count {
        /// How many calls it holds (`Vec::capacity` may round up).
        size: usize,
        ring: Vec<u8>,
        /// Where the next call goes.
        next: usize,
        totals: Totals,
    },
    /// The last N seconds: a ring of one bucket per second, indexed by the second's number.
    Time {
        origin: Instant,
        buckets: Vec<Bucket>,
        /// The newest second a call was recorded in (seconds since `origin`).
        head: u64,
        totals: Totals,
    },
}

/// One second of a time window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bucket {
    second: u64,
    totals: Totals,
}

impl Window {
    /// An empty window; `now` anchors the seconds of a time window.
    pub fn new(kind: SlidingWindow, now: Instant) -> Self {
        match kind {
            SlidingWindow::Count(n) => Window::Count {
                size: n.max(1) as usize,
                ring: Vec::with_capacity(n.max(1) as usize),
                next: 0,
                totals: Totals::default(),
            },
            SlidingWindow::Time(secs) => Window::Time {
                origin: now,
                buckets: vec![Bucket::default(); secs.max(1) as usize],
                head: 0,
                totals: Totals::default(),
            },
        }
    }

    /// Adds one call's result at `now`.
    pub fn record(&mut self, failed: bool, slow: bool, now: Instant) {
        match self {
            Window::Count {
                size,
                ring,
                next,
                totals,
            } => {
                let flags = if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
                if ring.len() < *size {
                    ring.push(flags);
                } else {
                    let old = ring[*next];
                    totals.sub(Totals {
                        calls: 1,
                        failures: u32::from(old & FAILED != 0),
                        slow: u32::from(old & SLOW != 0),
                    });
                    ring[*next] = flags;
                }
                // Not `%`: a division per call is most of what this function would cost.
                *next += 1;
                if *next == *size {
                    *next = 0;
                }
                totals.add(failed, slow);
            }
            Window::Time { .. } => {
                let bucket = self.roll(now);
                if let Window::Time {
                    buckets, totals, ..
                } = self
                {
                    buckets[bucket].totals.add(failed, slow);
                    totals.add(failed, slow);
                }
            }
        }
    }

    /// Adds `n` successes at `now`, as `n` calls of [`Window::record`] would: at most one lap
    /// of a count window's ring, one bucket of a time window.
    pub fn record_successes(&mut self, n: u64, now: Instant) {
        match self {
            Window::Count { size, .. } => {
                let laps = n.min(*size as u64);
                for _ in 0..laps {
                    self.record(false, false, now);
                }
            }
            Window::Time { .. } => {
                let bucket = self.roll(now);
                if let Window::Time {
                    buckets, totals, ..
                } = self
                {
                    let n = u32::try_from(n).unwrap_or(u32::MAX);
                    buckets[bucket].totals.calls = buckets[bucket].totals.calls.saturating_add(n);
                    totals.calls = totals.calls.saturating_add(n);
                }
            }
        }
    }

    /// A count window's calls (no clock needed); `None` for a time window.
    pub fn count_calls(&self) -> Option<u32> {
        match self {
            Window::Count { totals, .. } => Some(totals.calls),
            Window::Time { .. } => None,
        }
    }

    /// The totals inside the window at `now` (a time window first drops the seconds that have
    /// passed out of it).
    pub fn totals(&mut self, now: Instant) -> Totals {
        if let Window::Time { .. } = self {
            self.roll(now);
        }
        match self {
            Window::Count { totals, .. } | Window::Time { totals, .. } => *totals,
        }
    }

    /// Forgets every call.
    pub fn clear(&mut self, now: Instant) {
        match self {
            Window::Count {
                ring, next, totals, ..
            } => {
                ring.clear();
                *next = 0;
                *totals = Totals::default();
            }
            Window::Time {
                origin,
                buckets,
                head,
                totals,
            } => {
                *origin = now;
                buckets.iter_mut().for_each(|b| *b = Bucket::default());
                *head = 0;
                *totals = Totals::default();
            }
        }
    }

    /// Moves a time window's head to `now`'s second, emptying the buckets it passes (at most
    /// one lap: O(window) after a long idle spell, O(1) per call in steady traffic). Returns the
    /// bucket of `now`.
    fn roll(&mut self, now: Instant) -> usize {
        let Window::Time {
            origin,
            buckets,
            head,
            totals,
        } = self
        else {
            return 0;
        };
        let second = now.saturating_duration_since(*origin).as_secs();
        let len = buckets.len() as u64;
        // A call that finishes "in the past" (its clock read raced another's) goes in the head.
        let second = second.max(*head);
        let passed = (second - *head).min(len);
        for s in (second + 1 - passed)..=second {
            let b = &mut buckets[(s % len) as usize];
            if b.second != s {
                totals.sub(b.totals);
                *b = Bucket {
                    second: s,
                    totals: Totals::default(),
                };
            }
        }
        *head = second;
        (second % len) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_window_forgets_the_oldest_call_when_full() {
        let now = Instant::now();
        let mut w = Window::new(SlidingWindow::Count(4), now);
        // F F s s | then s: the first F leaves
        for failed in [true, true, false, false] {
            w.record(failed, false, now);
        }
        assert_eq!(
            w.totals(now),
            Totals {
                calls: 4,
                failures: 2,
                slow: 0
            }
        );
        w.record(false, true, now);
        assert_eq!(
            w.totals(now),
            Totals {
                calls: 4,
                failures: 1,
                slow: 1
            }
        );
        w.record(false, false, now);
        assert_eq!(
            w.totals(now).failures,
            0,
            "both failures have left the last 4 calls"
        );
        assert_eq!(w.totals(now).failure_rate(), 0.0);
    }

    #[test]
    fn a_time_window_drops_buckets_as_the_seconds_roll_over() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Window::new(SlidingWindow::Time(3), t0);
        w.record(true, false, t0); //                  second 0: F
        w.record(false, false, t0 + s(1)); //          second 1: ok
        w.record(true, true, t0 + s(2)); //            second 2: F slow
        assert_eq!(
            w.totals(t0 + s(2)),
            Totals {
                calls: 3,
                failures: 2,
                slow: 1
            }
        );
        // At second 3, second 0 has left a 3-second window.
        assert_eq!(
            w.totals(t0 + s(3)),
            Totals {
                calls: 2,
                failures: 1,
                slow: 1
            }
        );
        // Same bucket index as second 0, but a new second: starts empty, not with the old F.
        w.record(false, false, t0 + s(3));
        assert_eq!(
            w.totals(t0 + s(3)),
            Totals {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        // A long idle spell empties it all, in one lap.
        assert_eq!(w.totals(t0 + s(1000)), Totals::default());
        w.record(true, false, t0 + s(1000));
        assert_eq!(w.totals(t0 + s(1000)).failure_rate(), 100.0);
    }

    #[test]
    fn a_time_window_counts_calls_within_the_same_second_together() {
        let t0 = Instant::now();
        let mut w = Window::new(SlidingWindow::Time(2), t0);
        for i in 0..10 {
            w.record(i % 2 == 0, false, t0 + Duration::from_millis(i * 90));
        }
        assert_eq!(w.totals(t0 + Duration::from_millis(999)).calls, 10);
        assert_eq!(
            w.totals(t0 + Duration::from_millis(1999)).calls,
            10,
            "second 0 is still in a 2 s window"
        );
        assert_eq!(w.totals(t0 + Duration::from_millis(2000)).calls, 0);
    }
}
