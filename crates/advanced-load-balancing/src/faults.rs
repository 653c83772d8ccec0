//! Fault knobs: make one worker slow, failing or CPU-bound, to watch a strategy react.
//!
//! Set at start by environment for one worker (`FAULT_WORKER=2 FAULT_DELAY_MS=50`), or changed live
//! with `POST /lb/fault`, which the master passes to that worker over its control channel. Each
//! worker process has its own [`Faults`]; a replacement process starts from the environment again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One worker's faults, as set or reported (`POST /lb/fault`'s body without `worker`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FaultSpec {
    /// Extra milliseconds added to every response.
    pub delay_ms: u64,
    /// Percentage of requests answered with a 500 (0 to 100).
    pub error_rate: u32,
    /// Keep one core busy in a background thread, so the master samples high CPU for this worker.
    pub burn_cpu: bool,
    /// Milliseconds of CPU every request burns on this worker, blocking it: the worker's capacity
    /// drops, so requests sent to it faster than it can serve them queue up.
    pub cpu_ms: u64,
}

impl FaultSpec {
    /// Checks the ranges, so a bad request is refused instead of half-applied.
    pub fn validate(&self) -> Result<(), String> {
        if self.error_rate > 100 {
            return Err(format!(
                "errorRate {} is not a percentage (0 to 100)",
                self.error_rate
            ));
        }
        if self.cpu_ms > 1000 {
            return Err(format!("cpuMs {} is over the 1000 ms limit", self.cpu_ms));
        }
        if self.delay_ms > 60_000 {
            return Err(format!(
                "delayMs {} is over the 60000 ms limit",
                self.delay_ms
            ));
        }
        Ok(())
    }
}

/// The live faults of this worker process.
#[derive(Debug, Default)]
pub struct Faults {
    delay_ms: AtomicU64,
    error_rate: AtomicU32,
    cpu_ms: AtomicU64,
    /// True while the burner thread should run; the thread checks it between short busy spells.
    burn: Arc<AtomicBool>,
}

impl Faults {
    /// Replaces every fault with `spec`.
    pub fn apply(&self, spec: FaultSpec) {
        self.delay_ms.store(spec.delay_ms, Ordering::Relaxed);
        self.error_rate
            .store(spec.error_rate.min(100), Ordering::Relaxed);
        self.cpu_ms.store(spec.cpu_ms, Ordering::Relaxed);
        if spec.burn_cpu {
            // Only the call that flips the flag starts a thread, so there is at most one burner.
            if !self.burn.swap(true, Ordering::Relaxed) {
                let burn = self.burn.clone();
                std::thread::spawn(move || burn_cpu(&burn));
            }
        } else {
            self.burn.store(false, Ordering::Relaxed);
        }
    }

    /// The faults now in force.
    pub fn spec(&self) -> FaultSpec {
        FaultSpec {
            delay_ms: self.delay_ms.load(Ordering::Relaxed),
            error_rate: self.error_rate.load(Ordering::Relaxed),
            burn_cpu: self.burn.load(Ordering::Relaxed),
            cpu_ms: self.cpu_ms.load(Ordering::Relaxed),
        }
    }

    /// Burns this request's `cpuMs` on the calling thread (the worker's only one).
    pub fn burn_request(&self) {
        let ms = self.cpu_ms.load(Ordering::Relaxed);
        if ms > 0 {
            let until = std::time::Instant::now() + Duration::from_millis(ms);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
    }

    /// Extra latency to add to a response.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::Relaxed))
    }

    /// Whether this request should fail.
    pub fn should_fail(&self) -> bool {
        let rate = self.error_rate.load(Ordering::Relaxed);
        rate > 0 && rand::random_range(0..100) < rate
    }
}

/// Spins until `flag` is cleared, checking it every millisecond or so.
fn burn_cpu(flag: &AtomicBool) {
    while flag.load(Ordering::Relaxed) {
        let spell = std::time::Instant::now();
        while spell.elapsed() < Duration::from_millis(1) {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_parses_from_camel_case_json_with_defaults() {
        let spec: FaultSpec = serde_json::from_str(r#"{"delayMs": 50}"#).expect("valid");
        assert_eq!(
            spec,
            FaultSpec {
                delay_ms: 50,
                error_rate: 0,
                burn_cpu: false,
                cpu_ms: 0,
            }
        );
        assert!(
            serde_json::from_str::<FaultSpec>(r#"{"delay": 50}"#).is_err(),
            "typos are errors"
        );
        assert!(
            FaultSpec {
                error_rate: 101,
                ..FaultSpec::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn an_error_rate_of_100_always_fails_and_0_never() {
        let f = Faults::default();
        f.apply(FaultSpec {
            error_rate: 100,
            ..FaultSpec::default()
        });
        assert!((0..100).all(|_| f.should_fail()));
        f.apply(FaultSpec::default());
        assert!((0..100).all(|_| !f.should_fail()));
    }

    #[test]
    fn cpu_ms_blocks_the_calling_thread_for_that_long_and_is_capped() {
        let f = Faults::default();
        f.apply(FaultSpec {
            cpu_ms: 20,
            ..FaultSpec::default()
        });
        let started = std::time::Instant::now();
        f.burn_request();
        assert!(
            started.elapsed() >= Duration::from_millis(20),
            "{:?}",
            started.elapsed()
        );
        let too_much = FaultSpec {
            cpu_ms: 1001,
            ..FaultSpec::default()
        };
        assert!(too_much.validate().is_err());
    }

    #[test]
    fn the_burner_stops_when_cleared() {
        let f = Faults::default();
        f.apply(FaultSpec {
            burn_cpu: true,
            ..FaultSpec::default()
        });
        assert!(f.spec().burn_cpu);
        f.apply(FaultSpec::default());
        assert!(!f.spec().burn_cpu);
    }
}
