//! Passive outlier detection: stop sending traffic to a worker that keeps failing, for a while.
//!
//! Health checks ask a worker how it is every few seconds; outlier detection watches what it does to
//! real requests. [`Outlier`] wraps any strategy. As an [`Observer`] it counts each slot's
//! consecutive errors (5xx responses, connect failures, workers dying mid-response); at
//! [`OutlierConfig::consecutive_errors`] in a row the worker is ejected: the inner strategy does not
//! see it until the ejection time has passed. This is Envoy's `consecutive_5xx` detector:
//!
//! - the ejection time is `base × number of times ejected`, capped at `max_ejection`, so a worker
//!   that fails again right after readmission stays out longer each time; the count starts over once
//!   a worker has gone `max_ejection` without being ejected;
//! - at most `max_ejection_percent` of the ready workers are ejected at once, and never the last
//!   one: if every worker fails, the problem is not one worker, and some service beats none;
//! - readmission is lazy: the first pick after the time has passed lets the worker back in; a new
//!   process in the slot (a restart) is readmitted at once, since the ejection was about the old one.
//!
//! The cost when nothing is ejected is one relaxed load per pick; a filtered list of workers is only
//! allocated while some worker is out.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::selector::{RequestInfo, Selector, Worker};
use crate::config::{self, ConfigError, Source};
use crate::slot::{Completion, Observer, Outcome};

/// Slots tracked (1..=256, the most `WORKERS` allows); others are never ejected.
const SLOTS: usize = 257;

/// When to eject and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// `OUTLIER_CONSECUTIVE_ERRORS`, default 5: errors in a row that eject a worker; 0 turns
    /// ejection off.
    pub consecutive_errors: u32,
    /// `OUTLIER_BASE_EJECTION_MS`, default 10000: the first ejection's length.
    pub base_ejection: Duration,
    /// `OUTLIER_MAX_EJECTION_MS`, default 300000: no ejection is longer.
    pub max_ejection: Duration,
    /// `OUTLIER_MAX_EJECTION_PERCENT`, default 50: the most of the ready workers out at once
    /// (rounded down, and always leaving one).
    pub max_ejection_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_errors: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

impl OutlierConfig {
    /// Reads the `OUTLIER_*` variables from `src`.
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let d = Self::default();
        let ms = Duration::from_millis;
        Ok(Self {
            consecutive_errors: config::number(
                src,
                "OUTLIER_CONSECUTIVE_ERRORS",
                d.consecutive_errors,
                0,
                1_000_000,
            )?,
            base_ejection: config::duration_ms(
                src,
                "OUTLIER_BASE_EJECTION_MS",
                d.base_ejection,
                ms(1),
            )?,
            max_ejection: config::duration_ms(
                src,
                "OUTLIER_MAX_EJECTION_MS",
                d.max_ejection,
                ms(1),
            )?,
            max_ejection_percent: config::number(
                src,
                "OUTLIER_MAX_EJECTION_PERCENT",
                d.max_ejection_percent,
                0,
                100,
            )?,
        })
    }
}

/// One slot's record.
#[derive(Debug, Default)]
struct SlotHealth {
    /// Errors in a row from the current process.
    consecutive: AtomicU32,
    /// The process that was ejected.
    ejected_pid: AtomicU32,
    /// End of the ejection in ms since the epoch, plus one; 0 means not ejected.
    ejected_until: AtomicU64,
    /// Ejections so far: the multiplier of the next ejection's length.
    ejections: AtomicU32,
    /// When the last ejection ended (ms since the epoch), to start the multiplier over.
    last_until: AtomicU64,
}

/// A worker's outlier state, for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierStatus {
    /// While ejected: when it will be readmitted.
    pub ejected_until: Option<Instant>,
    /// How many times the slot has been ejected (the current multiplier).
    pub ejections: u32,
    /// Errors in a row so far.
    pub consecutive_errors: u32,
}

/// Wraps a strategy `S`, hiding ejected workers from it. Use it as both the cluster's selector and
/// one of its observers (an `Arc` of it is both).
#[derive(Debug)]
pub struct Outlier<S> {
    inner: S,
    config: OutlierConfig,
    slots: Box<[SlotHealth]>,
    /// The zero of the stored times.
    epoch: Instant,
    /// Ejections not yet readmitted; 0 lets a pick skip the check entirely.
    ejected: AtomicUsize,
    /// Ready workers at the last pick: what the ejection cap is a percentage of.
    ready_len: AtomicUsize,
    /// Held only while deciding to eject, so two slots cannot both take the last allowed place.
    ejecting: Mutex<()>,
}

impl<S: Selector> Outlier<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, config: OutlierConfig) -> Self {
        Self {
            inner,
            config,
            slots: (0..SLOTS).map(|_| SlotHealth::default()).collect(),
            epoch: Instant::now(),
            ejected: AtomicUsize::new(0),
            ready_len: AtomicUsize::new(0),
            ejecting: Mutex::new(()),
        }
    }

    /// The wrapped strategy.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The settings.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// `backend`'s state at `at`.
    pub fn status(&self, backend: &Worker, at: Instant) -> OutlierStatus {
        let Some(h) = self.slots.get(backend.slot()) else {
            return OutlierStatus {
                ejected_until: None,
                ejections: 0,
                consecutive_errors: 0,
            };
        };
        let until = h.ejected_until.load(Ordering::Relaxed);
        let ejected = until != 0
            && h.ejected_pid.load(Ordering::Relaxed) == backend.pid()
            && self.ms(at) < until - 1;
        OutlierStatus {
            ejected_until: ejected.then(|| self.epoch + Duration::from_millis(until - 1)),
            ejections: h.ejections.load(Ordering::Relaxed),
            consecutive_errors: h.consecutive.load(Ordering::Relaxed),
        }
    }

    /// Counts one completion that ended at `at` ([`Observer::on_complete`] with a clock).
    pub fn record_at(&self, c: &Completion, at: Instant) {
        if self.config.consecutive_errors == 0 || c.outcome == Outcome::Abandoned {
            return;
        }
        let Some(h) = self.slots.get(c.slot) else {
            return;
        };
        if !c.is_error() {
            h.consecutive.store(0, Ordering::Relaxed);
            return;
        }
        // Requests that were already on their way to an ejected worker fail too; they are not news.
        if h.ejected_until.load(Ordering::Relaxed) != 0
            && h.ejected_pid.load(Ordering::Relaxed) == c.pid
        {
            return;
        }
        let n = h.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.config.consecutive_errors {
            self.eject(c.slot, c.pid, n, at);
        }
    }

    fn eject(&self, slot: usize, pid: u32, errors: u32, at: Instant) {
        let _deciding = self.ejecting.lock().unwrap_or_else(|p| p.into_inner());
        let h = &self.slots[slot];
        h.consecutive.store(0, Ordering::Relaxed);
        if h.ejected_until.load(Ordering::Relaxed) != 0 {
            return;
        }
        let now = self.ms(at);
        let ready = self.ready_len.load(Ordering::Relaxed);
        let out = self
            .slots
            .iter()
            .filter(|s| {
                let until = s.ejected_until.load(Ordering::Relaxed);
                until != 0 && now < until - 1
            })
            .count();
        let cap = (ready * usize::from(self.config.max_ejection_percent) / 100)
            .min(ready.saturating_sub(1));
        if out >= cap {
            tracing::warn!(
                slot,
                pid,
                errors,
                ejected = out,
                ready,
                "worker failing but not ejected: the max ejection percentage is reached"
            );
            return;
        }
        let last = h.last_until.load(Ordering::Relaxed);
        let quiet = Duration::from_millis(now.saturating_sub(last));
        let times = if last != 0 && quiet >= self.config.max_ejection {
            1
        } else {
            h.ejections.load(Ordering::Relaxed).saturating_add(1)
        };
        let length = self
            .config
            .base_ejection
            .saturating_mul(times)
            .min(self.config.max_ejection);
        let until = now.saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX));
        h.ejections.store(times, Ordering::Relaxed);
        h.ejected_pid.store(pid, Ordering::Relaxed);
        h.last_until.store(until, Ordering::Relaxed);
        h.ejected_until.store(until + 1, Ordering::Relaxed);
        self.ejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            slot,
            pid,
            errors,
            ejection_ms = length.as_millis() as u64,
            times,
            "worker ejected after consecutive errors"
        );
    }

    /// Whether `b` is ejected at `now_ms`; readmits it (once, whichever thread sees it first) if
    /// its time is up or it is a new process.
    fn is_ejected(&self, b: &Worker, now_ms: u64) -> bool {
        let Some(h) = self.slots.get(b.slot()) else {
            return false;
        };
        let until = h.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        let same_process = h.ejected_pid.load(Ordering::Relaxed) == b.pid();
        if same_process && now_ms < until - 1 {
            return true;
        }
        if h.ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            h.consecutive.store(0, Ordering::Relaxed);
            self.ejected.fetch_sub(1, Ordering::Relaxed);
            let why = if same_process {
                "ejection time over"
            } else {
                "new process in the slot"
            };
            tracing::info!(slot = b.slot(), pid = b.pid(), why, "worker readmitted");
        }
        false
    }

    /// The pick at `at` ([`Selector::select`] with a clock).
    pub fn select_at(&self, req: &RequestInfo<'_>, ready: &[Worker], at: Instant) -> Option<usize> {
        if self.ready_len.load(Ordering::Relaxed) != ready.len() {
            self.ready_len.store(ready.len(), Ordering::Relaxed);
        }
        if self.ejected.load(Ordering::Relaxed) == 0 {
            return self.inner.select(req, ready);
        }
        let now = self.ms(at);
        // Evaluate every backend (readmitting those whose time is up) before deciding.
        let out: Vec<bool> = ready.iter().map(|b| self.is_ejected(b, now)).collect();
        let serving = out.iter().filter(|o| !**o).count();
        if serving == ready.len() || serving == 0 {
            // Nothing to hide; or everything would be hidden, and some service beats none.
            return self.inner.select(req, ready);
        }
        let (kept, index): (Vec<Worker>, Vec<usize>) = ready
            .iter()
            .enumerate()
            .filter(|(i, _)| !out[*i])
            .map(|(i, b)| (b.clone(), i))
            .unzip();
        let i = self.inner.select(req, &kept)?;
        index.get(i).copied()
    }
}

impl<S: Selector> Selector for Outlier<S> {
    fn select(&self, req: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize> {
        self.select_at(req, ready, Instant::now())
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

impl<S: Selector> Observer for Outlier<S> {
    fn on_complete(&self, c: &Completion) {
        self.record_at(c, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::RoundRobin;
    use crate::balance::rotor::testing::{Req, backend, backends};

    const SEC: Duration = Duration::from_secs(1);

    fn config() -> OutlierConfig {
        OutlierConfig {
            consecutive_errors: 3,
            base_ejection: 10 * SEC,
            max_ejection: 25 * SEC,
            max_ejection_percent: 50,
        }
    }

    fn done(b: &Worker, status: u16) -> Completion {
        Completion {
            slot: b.slot(),
            pid: b.pid(),
            pool: 0,
            latency: Duration::from_millis(5),
            status: Some(status),
            outcome: Outcome::Complete,
        }
    }

    /// `n` picks at `at`, as slots.
    fn picks(o: &Outlier<RoundRobin>, ready: &[Worker], n: usize, at: Instant) -> Vec<usize> {
        let req = Req::get("/");
        (0..n)
            .map(|_| ready[o.select_at(&req.info(), ready, at).expect("a pick")].slot())
            .collect()
    }

    /// Times are kept to the millisecond, so compare to within one.
    fn assert_until(got: Option<Instant>, want: Instant, what: &str) {
        let got = got.unwrap_or_else(|| panic!("{what}: not ejected, expected until {want:?}"));
        let off = got.max(want) - got.min(want);
        assert!(
            off <= Duration::from_millis(1),
            "{what}: until {got:?}, expected {want:?}"
        );
    }

    fn fail(o: &Outlier<RoundRobin>, b: &Worker, times: usize, at: Instant) {
        for _ in 0..times {
            o.record_at(&done(b, 500), at);
        }
    }

    #[test]
    fn consecutive_errors_eject_and_the_time_readmits() {
        let ready = backends(&[1, 2, 3, 4]);
        let o = Outlier::new(RoundRobin::default(), config());
        let t0 = Instant::now();
        assert_eq!(picks(&o, &ready, 4, t0), [1, 2, 3, 4]);
        // Slot 2: 500, 500, 500 → ejected for 10 s (first ejection: base × 1).
        fail(&o, &ready[1], 3, t0);
        assert!(o.status(&ready[1], t0).ejected_until.is_some());
        let out = picks(&o, &ready, 6, t0 + SEC);
        assert!(!out.contains(&2), "slot 2 is out: {out:?}");
        // At 10 s it is back.
        let back = picks(&o, &ready, 4, t0 + 10 * SEC);
        assert!(back.contains(&2), "slot 2 readmitted: {back:?}");
        assert_eq!(o.status(&ready[1], t0 + 10 * SEC).ejected_until, None);
    }

    #[test]
    fn a_success_resets_the_count() {
        let ready = backends(&[1, 2]);
        let o = Outlier::new(RoundRobin::default(), config());
        let t0 = Instant::now();
        // 500 500 200 500 500: never three in a row.
        for status in [500, 500, 200, 500, 500] {
            o.record_at(&done(&ready[1], status), t0);
        }
        assert_eq!(o.status(&ready[1], t0).ejected_until, None);
        assert_eq!(o.status(&ready[1], t0).consecutive_errors, 2);
    }

    #[test]
    fn each_ejection_is_longer_up_to_the_cap() {
        let ready = backends(&[1, 2]);
        let o = Outlier::new(RoundRobin::default(), config());
        let mut t = Instant::now();
        // ejection 1: 10 s; 2: 20 s; 3: 30 s capped at 25 s
        for (n, want) in [(1, 10), (2, 20), (3, 25)] {
            picks(&o, &ready, 1, t); // the ready count the cap is taken from
            fail(&o, &ready[1], 3, t);
            let s = o.status(&ready[1], t);
            assert_eq!(s.ejections, n);
            assert_until(s.ejected_until, t + want * SEC, &format!("ejection {n}"));
            t += want * SEC;
            picks(&o, &ready, 2, t); // readmitted
        }
    }

    #[test]
    fn the_multiplier_starts_over_after_a_quiet_spell() {
        let ready = backends(&[1, 2]);
        let o = Outlier::new(RoundRobin::default(), config());
        let t0 = Instant::now();
        picks(&o, &ready, 1, t0);
        fail(&o, &ready[1], 3, t0);
        // Out 10 s, then 25 s (max_ejection) of good behaviour: the next ejection is base × 1 again.
        let t = t0 + 35 * SEC;
        picks(&o, &ready, 2, t);
        fail(&o, &ready[1], 3, t);
        assert_eq!(o.status(&ready[1], t).ejections, 1);
        assert_until(
            o.status(&ready[1], t).ejected_until,
            t + 10 * SEC,
            "after a quiet spell",
        );
    }

    #[test]
    fn never_more_than_the_max_percentage_and_never_the_last_worker() {
        let ready = backends(&[1, 2]);
        let o = Outlier::new(RoundRobin::default(), config());
        let t0 = Instant::now();
        picks(&o, &ready, 1, t0);
        // 50% of 2 is 1: slot 1 goes out, slot 2 may not follow.
        fail(&o, &ready[0], 3, t0);
        fail(&o, &ready[1], 3, t0);
        assert!(o.status(&ready[0], t0).ejected_until.is_some());
        assert_eq!(o.status(&ready[1], t0).ejected_until, None);
        assert_eq!(picks(&o, &ready, 3, t0), [2, 2, 2]);

        // With one worker nothing is ever ejected.
        let alone = backends(&[1]);
        let o = Outlier::new(RoundRobin::default(), config());
        picks(&o, &alone, 1, t0);
        fail(&o, &alone[0], 10, t0);
        assert_eq!(o.status(&alone[0], t0).ejected_until, None);
    }

    #[test]
    fn if_only_ejected_workers_are_ready_they_still_serve() {
        let o = Outlier::new(RoundRobin::default(), config());
        let t0 = Instant::now();
        let both = backends(&[1, 2]);
        picks(&o, &both, 1, t0);
        fail(&o, &both[0], 3, t0);
        // Slot 2 then leaves (restarting): slot 1 is all there is, ejected or not.
        assert_eq!(picks(&o, &both[..1], 2, t0), [1, 1]);
    }

    #[test]
    fn a_new_process_in_the_slot_is_readmitted_at_once() {
        let o = Outlier::new(RoundRobin::default(), config());
        let t0 = Instant::now();
        let ready = backends(&[1, 2]);
        picks(&o, &ready, 1, t0);
        fail(&o, &ready[1], 3, t0);
        let replaced = vec![ready[0].clone(), backend(2, 7777)];
        let got = picks(&o, &replaced, 2, t0 + SEC);
        assert!(got.contains(&2), "pid 7777 in slot 2 serves: {got:?}");
    }

    #[test]
    fn stragglers_from_an_ejected_worker_do_not_count_again() {
        let ready = backends(&[1, 2, 3, 4]);
        let o = Outlier::new(RoundRobin::default(), config());
        let t0 = Instant::now();
        picks(&o, &ready, 1, t0);
        fail(&o, &ready[1], 3, t0);
        fail(&o, &ready[1], 10, t0);
        assert_eq!(o.status(&ready[1], t0).ejections, 1);
        assert_eq!(o.status(&ready[1], t0).consecutive_errors, 0);
    }

    #[test]
    fn zero_errors_turns_it_off() {
        let ready = backends(&[1, 2]);
        let o = Outlier::new(
            RoundRobin::default(),
            OutlierConfig {
                consecutive_errors: 0,
                ..config()
            },
        );
        let t0 = Instant::now();
        picks(&o, &ready, 1, t0);
        fail(&o, &ready[1], 100, t0);
        assert_eq!(o.status(&ready[1], t0).ejected_until, None);
    }

    #[test]
    fn the_settings_come_from_the_environment() {
        let c = OutlierConfig::from_source(&[
            ("OUTLIER_CONSECUTIVE_ERRORS", "7"),
            ("OUTLIER_BASE_EJECTION_MS", "1500"),
        ])
        .expect("valid settings");
        assert_eq!(c.consecutive_errors, 7);
        assert_eq!(c.base_ejection, Duration::from_millis(1500));
        assert_eq!(c.max_ejection_percent, 50);
        let err = OutlierConfig::from_source(&[("OUTLIER_MAX_EJECTION_PERCENT", "150")])
            .expect_err("150 is not a percentage");
        assert_eq!(err.var, "OUTLIER_MAX_EJECTION_PERCENT");
    }
}
