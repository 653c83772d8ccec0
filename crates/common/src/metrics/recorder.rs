//! The edge-side [`Observer`] that feeds every slot's [`SlotWindow`].
//!
//! Hot-path cost, chosen on purpose: one clock read, one array index, one uncontended `Mutex` per
//! slot (held for two histogram increments and two counter bumps, well under a microsecond) and no
//! allocation. Why not atomics or per-thread shards: an hdrhistogram needs `&mut`, and with one lock
//! per slot two edge threads only meet when they finish requests of the same worker in the same
//! instant; readers (a scrape every second or so) hold it for one merge of at most 60 slices.
//! Measured by `scripts/bench-monitoring`.

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;

use super::window::{Counts, SlotWindow};
use super::{Completion, Observer};

/// The highest slot id recorded; the runtime never runs more than 256 slots.
pub const MAX_SLOTS: usize = 256;

/// Feeds per-slot windows from the edge's completions.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    /// Indexed by slot id. A slot's window (about 1 MB of histograms) is allocated by its first
    /// completed request, so recording never allocates afterwards and unused slots cost nothing.
    slots: Box<[OnceLock<Mutex<SlotWindow>>]>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder whose second 0 starts now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            slots: (0..=MAX_SLOTS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Whole seconds since the recorder started: the window's clock.
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// When the recorder started.
    pub fn started(&self) -> Instant {
        self.started
    }

    fn lock(cell: &Mutex<SlotWindow>) -> MutexGuard<'_, SlotWindow> {
        // A panic while recording cannot leave a counter half-written in a way that matters more
        // than losing every metric, so poison is ignored.
        cell.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `f` with slot `slot`'s window, if it has recorded anything.
    pub fn with_slot<R>(&self, slot: usize, f: impl FnOnce(&SlotWindow) -> R) -> Option<R> {
        let cell = self.slots.get(slot)?.get()?;
        Some(f(&Self::lock(cell)))
    }

    /// Records a completion in second `now` (tests pass their own clock).
    pub fn record_at(&self, now: u64, completion: &Completion) {
        let Some(cell) = self.slots.get(completion.slot) else {
            return;
        };
        let window = cell.get_or_init(|| Mutex::new(SlotWindow::new()));
        let latency_us = u64::try_from(completion.latency.as_micros()).unwrap_or(u64::MAX);
        Self::lock(window).record(now, latency_us, completion.is_error());
    }

    /// Since-start totals of `slot` (zero if it never served).
    pub fn totals(&self, slot: usize) -> Counts {
        self.with_slot(slot, SlotWindow::totals).unwrap_or_default()
    }

    /// Counts of `slot` over seconds `from..=to`.
    pub fn counts(&self, slot: usize, from: u64, to: u64) -> Counts {
        self.with_slot(slot, |w| w.counts(from, to))
            .unwrap_or_default()
    }

    /// Adds `slot`'s latencies over seconds `from..=to` into `into`.
    pub fn merge_latency(&self, slot: usize, from: u64, to: u64, into: &mut Histogram<u64>) {
        self.with_slot(slot, |w| w.merge_latency(from, to, into));
    }
}

impl Observer for Recorder {
    fn on_complete(&self, completion: &Completion) {
        // Read the clock before taking the lock, so the lock is held only for the updates.
        let now = self.now();
        self.record_at(now, completion);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::Outcome;
    use crate::metrics::window::{LatencySummary, window_histogram};

    fn done(slot: usize, ms: u64, status: Option<u16>) -> Completion {
        Completion {
            slot,
            pid: 1000 + slot as u32,
            pool: 0,
            latency: Duration::from_millis(ms),
            status,
            outcome: if status.is_some() {
                Outcome::Complete
            } else {
                Outcome::Failed
            },
        }
    }

    #[test]
    fn completions_are_kept_per_slot_and_errors_are_5xx_or_transport() {
        let r = Recorder::new();
        r.record_at(0, &done(1, 10, Some(200)));
        r.record_at(0, &done(1, 10, Some(503)));
        r.record_at(0, &done(2, 10, None));
        r.record_at(0, &done(2, 10, Some(404)));
        assert_eq!(
            r.totals(1),
            Counts {
                requests: 2,
                errors: 1
            }
        );
        assert_eq!(
            r.totals(2),
            Counts {
                requests: 2,
                errors: 1
            }
        );
        assert_eq!(r.totals(3), Counts::default(), "a slot that never served");
    }

    #[test]
    fn slots_beyond_the_limit_are_ignored_not_a_panic() {
        let r = Recorder::new();
        r.record_at(0, &done(MAX_SLOTS + 1, 1, Some(200)));
        assert_eq!(r.totals(MAX_SLOTS + 1), Counts::default());
    }

    #[test]
    fn slot_histograms_merge_into_a_cluster_view() {
        let r = Recorder::new();
        // Slot 1 is fast, slot 2 slow: the merged median sits between, the p99 at the slow one.
        for _ in 0..50 {
            r.record_at(1, &done(1, 10, Some(200)));
            r.record_at(1, &done(2, 100, Some(200)));
        }
        let mut h = window_histogram();
        r.merge_latency(1, 0, 1, &mut h);
        r.merge_latency(2, 0, 1, &mut h);
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 100);
        assert!((s.p99 - 100.0).abs() < 1.0, "{s:?}");
        assert!((s.min - 10.0).abs() < 0.1, "{s:?}");
    }
}
