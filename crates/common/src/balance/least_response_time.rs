//! Least response time: prefer the worker that has been answering fastest, weighed by how busy it is.
//!
//! Each worker's score is `estimate × (1 + in flight)`, where the estimate is an exponentially
//! weighted moving average (EWMA) of the latencies the edge measured for it. Multiplying by the
//! in-flight count is what stops a herd: a fast worker is preferred only until it has enough queued
//! work to be slower than the others. This is the "peak EWMA" idea of Finagle and tower's
//! `PeakEwma`, without the peak.
//!
//! Three things the Node course got wrong, and what this does instead:
//! - **Cold start.** There every score was 0 until metrics arrived, so the first 40 requests all went
//!   to worker 1. Here a worker with no measurement (untried, or a new process in its slot) is given
//!   the best estimate among the measured ones (or a fixed one when none is measured), so it is
//!   explored at once, and the in-flight factor spreads a burst: from a cold start it behaves like
//!   least-connections.
//! - **Starvation.** A worker that was slow once, and so got no more traffic, would keep its bad
//!   estimate forever. Here an estimate is read as half as large for every [`HALF_LIFE`] without a
//!   new measurement, so an idle worker is tried again within a few half-lives; and old measurements
//!   weigh less in the average the older they are, so one fresh sample from a recovered worker
//!   mostly replaces what was known about it.
//! - **Fast failures.** A worker answering 500 in a millisecond looks like the fastest worker of all.
//!   Here an error counts as at least [`ERROR_PENALTY`], so failing fast does not attract traffic.
//!
//! The estimate is learned from the edge's [`Completion`]s: register the selector as an observer
//! too (`.observe(lrt.clone())`), or it never learns anything and stays a least-connections.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::rotor::{Rotor, least_by};
use super::selector::{RequestInfo, Selector, Worker};
use crate::slot::{Completion, Observer, Outcome};

/// Slots tracked (1..=256, the most `WORKERS` allows); a slot beyond is routed as untried.
const SLOTS: usize = 257;
/// How much a new measurement moves the estimate: 0.2 weighs the last ten or so most.
pub const ALPHA: f64 = 0.2;
/// An estimate not refreshed for this long counts half as much, so idle workers get retried.
pub const HALF_LIFE: Duration = Duration::from_secs(5);
/// The least an error counts for, so a worker that fails fast is not taken for a fast worker.
pub const ERROR_PENALTY: Duration = Duration::from_secs(1);
/// The estimate used when no worker has been measured yet; any value works, as all are equal then.
const DEFAULT_ESTIMATE_US: f64 = 10_000.0;

/// What is known about one slot's latency. Updated with plain loads and stores rather than a lock:
/// two completions racing may lose one measurement, which an average shrugs off.
#[derive(Debug, Default)]
struct SlotLatency {
    /// The process measured; a new process in the slot starts unmeasured.
    pid: AtomicU32,
    /// Measurements so far for `pid` (0: untried).
    samples: AtomicU64,
    /// The EWMA in microseconds, as `f64` bits.
    ewma_us: AtomicU64,
    /// When the EWMA was last updated, in nanoseconds since the selector's epoch.
    updated_ns: AtomicU64,
}

/// EWMA response time × (1 + in flight); unmeasured workers explored, idle estimates decaying.
#[derive(Debug)]
pub struct LeastResponseTime {
    slots: Box<[SlotLatency]>,
    /// The zero of `updated_ns`; an `Instant` cannot be stored in an atomic.
    epoch: Instant,
    rotor: Rotor,
}

impl Default for LeastResponseTime {
    fn default() -> Self {
        Self::new()
    }
}

impl LeastResponseTime {
    /// A selector that knows nothing yet.
    pub fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| SlotLatency::default()).collect(),
            epoch: Instant::now(),
            rotor: Rotor::default(),
        }
    }

    fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records one measured response of `latency` for `pid` in `slot`, as if it ended at `at`.
    pub fn record(&self, slot: usize, pid: u32, latency: Duration, at: Instant) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let sample = latency.as_secs_f64() * 1e6;
        let now = self.since_epoch(at);
        let next = if s.pid.load(Ordering::Relaxed) != pid || s.samples.load(Ordering::Relaxed) == 0
        {
            s.pid.store(pid, Ordering::Relaxed);
            s.samples.store(0, Ordering::Relaxed);
            sample
        } else {
            // Old measurements count for less the older they are: a worker measured once a minute
            // ago is mostly described by what it does now.
            let old = f64::from_bits(s.ewma_us.load(Ordering::Relaxed));
            let idle = now.saturating_sub(s.updated_ns.load(Ordering::Relaxed));
            sample + (old - sample) * (1.0 - ALPHA) * half_lives(idle)
        };
        s.ewma_us.store(next.to_bits(), Ordering::Relaxed);
        s.updated_ns.store(now, Ordering::Relaxed);
        s.samples.fetch_add(1, Ordering::Relaxed);
    }

    /// The current estimate for `backend` at `at`, or `None` if this process was never measured.
    pub fn estimate(&self, backend: &Worker, at: Instant) -> Option<Duration> {
        self.estimate_us(backend, self.since_epoch(at))
            .map(|us| Duration::from_secs_f64(us / 1e6))
    }

    fn estimate_us(&self, backend: &Worker, now_ns: u64) -> Option<f64> {
        let s = self.slots.get(backend.slot())?;
        if s.samples.load(Ordering::Relaxed) == 0 || s.pid.load(Ordering::Relaxed) != backend.pid()
        {
            return None;
        }
        Some(decayed(s, now_ns))
    }

    /// The pick at `at`; [`Selector::select`] calls it with `Instant::now()`, tests with their clock.
    pub fn select_at(&self, ready: &[Worker], at: Instant) -> Option<usize> {
        let now = self.since_epoch(at);
        // An unmeasured worker is as good as the best measured one: tried at once, but not flooded.
        let best_known = ready
            .iter()
            .filter_map(|b| self.estimate_us(b, now))
            .min_by(f64::total_cmp)
            .unwrap_or(DEFAULT_ESTIMATE_US);
        least_by(ready, self.rotor.start(ready.len()), |b| {
            let estimate = self.estimate_us(b, now).unwrap_or(best_known);
            estimate * (1.0 + b.in_flight() as f64)
        })
    }
}

/// The slot's EWMA as read at `now_ns`: halved for every [`HALF_LIFE`] since its last update. The
/// stored EWMA is not changed: the decay is a bonus for exploring, not a measurement.
fn decayed(s: &SlotLatency, now_ns: u64) -> f64 {
    let ewma = f64::from_bits(s.ewma_us.load(Ordering::Relaxed));
    ewma * half_lives(now_ns.saturating_sub(s.updated_ns.load(Ordering::Relaxed)))
}

/// `0.5 ^ (idle / HALF_LIFE)`.
fn half_lives(idle_ns: u64) -> f64 {
    0.5f64.powf(idle_ns as f64 / HALF_LIFE.as_nanos() as f64)
}

impl Selector for LeastResponseTime {
    fn select(&self, _req: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize> {
        self.select_at(ready, Instant::now())
    }

    fn name(&self) -> &'static str {
        "least-response-time"
    }
}

impl Observer for LeastResponseTime {
    fn on_complete(&self, c: &Completion) {
        // A client that hung up says nothing about the worker's speed.
        if c.outcome == Outcome::Abandoned {
            return;
        }
        let latency = if c.is_error() {
            c.latency.max(ERROR_PENALTY)
        } else {
            c.latency
        };
        self.record(c.slot, c.pid, latency, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::rotor::testing::{backends, set_in_flight};

    const MS: Duration = Duration::from_millis(1);

    fn pick_at(lrt: &LeastResponseTime, ready: &[Worker], at: Instant) -> usize {
        ready[lrt.select_at(ready, at).expect("a pick")].slot()
    }

    #[test]
    fn the_faster_worker_is_preferred_while_idle() {
        let ready = backends(&[1, 2]);
        let lrt = LeastResponseTime::new();
        let t = Instant::now();
        lrt.record(1, 1001, 20 * MS, t);
        lrt.record(2, 1002, 70 * MS, t);
        for _ in 0..5 {
            assert_eq!(
                pick_at(&lrt, &ready, t),
                1,
                "20 ms vs 70 ms, nothing in flight"
            );
        }
    }

    #[test]
    fn in_flight_requests_make_the_fast_worker_share() {
        let ready = backends(&[1, 2]);
        let lrt = LeastResponseTime::new();
        let t = Instant::now();
        lrt.record(1, 1001, 20 * MS, t);
        lrt.record(2, 1002, 70 * MS, t);
        // score = estimate × (1 + in flight)
        //   slot 1 with 2 in flight: 20 × 3 = 60  < 70 → slot 1
        //   slot 1 with 3 in flight: 20 × 4 = 80  > 70 → slot 2
        set_in_flight(&ready[0], 2);
        assert_eq!(pick_at(&lrt, &ready, t), 1);
        set_in_flight(&ready[0], 3);
        assert_eq!(pick_at(&lrt, &ready, t), 2);
    }

    #[test]
    fn from_a_cold_start_a_burst_is_spread_not_sent_to_one_worker() {
        // The Node original sent 40 of 40 to one worker here: every score was 0.
        let ready = backends(&[1, 2]);
        let lrt = LeastResponseTime::new();
        let t = Instant::now();
        let mut got = [0; 3];
        for _ in 0..40 {
            let slot = pick_at(&lrt, &ready, t);
            got[slot] += 1;
            let b = &ready[slot - 1];
            set_in_flight(b, b.in_flight() + 1);
        }
        assert_eq!((got[1], got[2]), (20, 20));
    }

    #[test]
    fn an_untried_worker_is_explored_at_once() {
        let ready = backends(&[1, 2]);
        let lrt = LeastResponseTime::new();
        let t = Instant::now();
        lrt.record(1, 1001, 20 * MS, t);
        // Slot 2 is unmeasured: it counts as 20 ms too (the best known), so the tie goes by rotation
        // and slot 2 is picked within two tries.
        let picks = [pick_at(&lrt, &ready, t), pick_at(&lrt, &ready, t)];
        assert!(picks.contains(&2), "picks {picks:?}");
    }

    #[test]
    fn a_new_process_in_the_slot_starts_unmeasured() {
        let lrt = LeastResponseTime::new();
        let t = Instant::now();
        lrt.record(2, 1002, 500 * MS, t);
        let old = &backends(&[2])[0];
        assert_eq!(lrt.estimate(old, t), Some(500 * MS));
        let replaced = crate::balance::rotor::testing::backend(2, 4242);
        assert_eq!(
            lrt.estimate(&replaced, t),
            None,
            "pid 4242 was never measured"
        );
    }

    #[test]
    fn an_idle_slow_worker_is_retried_after_its_estimate_decays() {
        let ready = backends(&[1, 2]);
        let lrt = LeastResponseTime::new();
        let t0 = Instant::now();
        lrt.record(1, 1001, 20 * MS, t0);
        lrt.record(2, 1002, 80 * MS, t0);
        // Slot 1 keeps being measured at 20 ms; slot 2's 80 ms halves every 5 s:
        //   t = 0 s: 80 → slot 1     t = 5 s: 40 → slot 1     t = 10 s: 20 → tie
        //   t = 11 s: 17.4 → slot 2 (retried, so a recovered worker gets traffic back)
        for (secs, want) in [(0, 1), (5, 1), (11, 2)] {
            let t = t0 + Duration::from_secs(secs);
            lrt.record(1, 1001, 20 * MS, t);
            assert_eq!(pick_at(&lrt, &ready, t), want, "at {secs} s");
        }
    }

    #[test]
    fn an_error_counts_as_slow_however_fast_it_came() {
        let lrt = LeastResponseTime::new();
        lrt.on_complete(&Completion {
            slot: 1,
            pid: 1001,
            pool: 0,
            latency: MS,
            status: Some(500),
            outcome: Outcome::Complete,
        });
        let b = &backends(&[1])[0];
        let est = lrt.estimate(b, Instant::now()).expect("measured");
        assert!(
            est >= ERROR_PENALTY - MS,
            "a 1 ms 500 is recorded as {est:?}"
        );
    }

    #[test]
    fn the_average_moves_by_alpha() {
        let lrt = LeastResponseTime::new();
        let t = Instant::now();
        lrt.record(1, 1001, 100 * MS, t);
        lrt.record(1, 1001, 200 * MS, t);
        // 0.2 × 200 + 0.8 × 100 = 120
        let b = &backends(&[1])[0];
        let est = lrt.estimate(b, t).expect("measured");
        assert!((est.as_secs_f64() - 0.120).abs() < 1e-9, "{est:?}");
    }
}
