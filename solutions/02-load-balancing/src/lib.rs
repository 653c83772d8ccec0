//! Reference answer to exercise 02: load-balancing strategies.
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
//! The grader is `exercises/02-load-balancing/tests/grader.rs`; this crate runs that very file.

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
        let n = workers.len();
        if n == 0 {
            return None;
        }
        // Relaxed: the counter spreads ties; no other memory is ordered by it.
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        // Scan n positions from `start`, wrapping; keep the first strictly-lower count, so an equal
        // count later in the scan does not displace an earlier one.
        (0..n)
            .map(|step| (start + step) % n)
            .min_by_key(|&i| workers[i].in_flight)
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
        // Nothing between the lock and the end can panic halfway through an update, so a poisoned
        // lock (another thread panicked while holding it) still holds consistent values.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, w) in workers.iter().enumerate() {
            let weight = i64::from(w.weight.max(1));
            let value = current.entry(w.id).or_insert(0);
            *value += weight;
            total += weight;
            // Strictly greater: on a tie the earlier worker keeps it, as in nginx.
            if best.is_none_or(|(_, b)| *value > b) {
                best = Some((i, *value));
            }
        }
        let (i, _) = best?;
        *current.entry(workers[i].id).or_insert(0) -= total;
        Some(i)
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
        let a = self.below(n);
        let b = self.below(n - 1);
        // Drawing from n - 1 and stepping over `a` gives every other index the same chance; drawing
        // again until b != a would too, but takes an unbounded number of draws.
        (a, if b >= a { b + 1 } else { b })
    }
}

impl Selector for PowerOfTwoChoices {
    fn select(&self, workers: &[Worker]) -> Option<usize> {
        match workers.len() {
            0 => None,
            1 => Some(0),
            n => {
                let (a, b) = self.two(n);
                Some(if workers[b].in_flight < workers[a].in_flight {
                    b
                } else {
                    a
                })
            }
        }
    }

    fn name(&self) -> &'static str {
        "power-of-two-choices"
    }
}
