//! Exercise 02: load-balancing strategies. Read `README.md` beside this crate for the task and the hints,
//! then replace every `todo!` below. Check your work with `cargo test -p ex02-load-balancing` in
//! `exercises/`.
//!
//! Three strategies behind one small trait, with no sockets and no threads of their own:
//!
//! - [`LeastConnections`]: the worker with the fewest requests in flight; equal workers take turns.
//! - [`SmoothWeighted`]: nginx's smooth weighted round-robin: exact shares, no bursts.
//! - [`PowerOfTwoChoices`]: two distinct random candidates, the less busy one wins; seeded.
//!
//! [`Selector::select`] takes `&self`, as the real one in `common::balance` does: the cluster's edge
//! calls one selector from many threads at once, so whatever a strategy remembers between picks
//! lives in an atomic or behind a mutex.
//!
//! What is marked "given" is finished: use it, do not change it (the grader relies on it).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What a selector sees of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    /// The worker's id (its slot, 1..=N), stable while it lives.
    pub id: usize,
    /// Requests sent to it that have not finished.
    pub in_flight: u64,
    /// Its weight for [`SmoothWeighted`] (at least 1).
    pub weight: u32,
}

/// A load-balancing strategy.
pub trait Selector {
    /// The index in `workers` of the worker to use, or `None` if `workers` is empty.
    fn select(&self, workers: &[Worker]) -> Option<usize>;

    /// The strategy's name.
    fn name(&self) -> &'static str;
}

/// The worker with the fewest requests in flight; among equals, the first at or after a start
/// position that moves on by one every pick, so idle workers take turns.
#[derive(Debug, Default)]
#[allow(
    dead_code,
    reason = "the stub's select is todo!(), so nothing reads this field until you do"
)]
pub struct LeastConnections {
    /// How many picks have been made: the scan for pick `k` starts at index `k % workers.len()`.
    next: AtomicUsize,
}

impl LeastConnections {
    /// A new selector.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Selector for LeastConnections {
    fn select(&self, workers: &[Worker]) -> Option<usize> {
        todo!(
            "return the index of the worker with the fewest in flight among {workers:?}; among equals, \
             the first one at or after index (picks so far % workers.len()); None if there are none"
        )
    }

    fn name(&self) -> &'static str {
        "least-connections"
    }
}

/// nginx's smooth weighted round-robin.
#[derive(Debug, Default)]
pub struct SmoothWeighted {
    /// Each worker's running value, by worker id. A worker not in the map has 0.
    current: Mutex<BTreeMap<usize, i64>>,
}

impl SmoothWeighted {
    /// A new selector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Each worker's running value, by id (for the grader's pictures).
    pub fn current(&self) -> BTreeMap<usize, i64> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Selector for SmoothWeighted {
    fn select(&self, workers: &[Worker]) -> Option<usize> {
        todo!(
            "add each worker's weight to its running value for {workers:?}, pick the largest \
             (the first on a tie), subtract the total weight from it, return its index"
        )
    }

    fn name(&self) -> &'static str {
        "weighted"
    }
}

/// SplitMix64's increment (given).
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Two random candidates, fewer in flight wins (the first candidate on a tie).
#[derive(Debug)]
pub struct PowerOfTwoChoices {
    /// SplitMix64's state: the whole generator is this one counter.
    state: AtomicU64,
}

impl PowerOfTwoChoices {
    /// A selector whose choices are fixed by `seed` (given).
    pub fn from_seed(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// The next 64 random bits: SplitMix64 (given).
    pub fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random number in `0..n`, `n >= 1` (given).
    pub fn below(&self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Two distinct random indices in `0..n`, `n >= 2`: `a = below(n)`, then `b = below(n - 1)`,
    /// and `b` moves up by one if it is at or above `a`.
    pub fn two(&self, n: usize) -> (usize, usize) {
        todo!("draw a = below({n}), then b = below({n} - 1); if b >= a, b moves up by one")
    }
}

impl Selector for PowerOfTwoChoices {
    fn select(&self, workers: &[Worker]) -> Option<usize> {
        todo!(
            "None for no workers, 0 for one; otherwise take two candidates with self.two(n) from \
             {workers:?} and return the one with fewer in flight (the first on a tie)"
        )
    }

    fn name(&self) -> &'static str {
        "power-of-two-choices"
    }
}
