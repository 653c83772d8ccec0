//! Power of two choices: pick two workers at random and send the request to the less busy one.
//!
//! Why two and not all: comparing every worker needs every worker's count at the same instant, and
//! with many balancers (or many threads) all of them pick the same "least" worker at once and herd
//! onto it. Two random candidates almost never agree across pickers, yet (Mitzenmacher, 2001) the
//! busiest worker's load drops from `log n / log log n` to `log log n`: nearly all of the benefit of
//! least-connections with none of its herding. tower's `p2c::Balance` and Envoy's default
//! "least request" both work this way.
//!
//! Random, but reproducible: the generator is SplitMix64 seeded by the caller ([`P2c::from_seed`]),
//! as tower's `Balance::from_rng` takes a seedable RNG, so a test sees the same candidates every run.
//! SplitMix64's whole state is one counter, so it lives in an atomic and picking takes no lock.

use std::sync::atomic::{AtomicU64, Ordering};

use super::selector::{RequestInfo, Selector, Worker};

/// SplitMix64's increment, the golden ratio in 64 bits (Steele, Lea and Flood, 2014).
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Two random candidates, fewer in flight wins.
#[derive(Debug)]
pub struct P2c {
    state: AtomicU64,
}

impl P2c {
    /// A selector whose random choices are fixed by `seed`.
    pub fn from_seed(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A selector seeded from the operating system's randomness.
    pub fn from_entropy() -> Self {
        Self::from_seed(rand::random())
    }

    /// The next 64 random bits.
    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (Lemire's multiply-shift: no division, negligible bias for small `n`).
    fn below(&self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Two distinct indices in `0..n`, `n >= 2`.
    fn two(&self, n: usize) -> (usize, usize) {
        let a = self.below(n);
        let b = self.below(n - 1);
        // Drawing the second from n - 1 and skipping over `a` keeps the pair distinct and uniform.
        (a, if b >= a { b + 1 } else { b })
    }
}

impl Selector for P2c {
    fn select(&self, _req: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize> {
        match ready.len() {
            0 => None,
            1 => Some(0),
            n => {
                let (a, b) = self.two(n);
                // On a tie the first candidate wins; it was random, so the tie is broken at random.
                Some(if ready[b].in_flight() < ready[a].in_flight() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::rotor::testing::{backends, pick, sequence, set_in_flight};

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let ready = backends(&[1, 2, 3, 4]);
        let a = sequence(&P2c::from_seed(7), &ready, 50);
        let b = sequence(&P2c::from_seed(7), &ready, 50);
        assert_eq!(a, b);
        let c = sequence(&P2c::from_seed(8), &ready, 50);
        assert_ne!(a, c, "another seed, other choices");
    }

    #[test]
    fn the_less_busy_candidate_wins() {
        // With two workers both are always the candidates, so the less busy one always wins.
        let ready = backends(&[1, 2]);
        set_in_flight(&ready[0], 3);
        let p = P2c::from_seed(1);
        for _ in 0..20 {
            assert_eq!(pick(&p, &ready), 2);
        }
    }

    #[test]
    fn the_busiest_worker_is_never_picked_among_four() {
        // The busiest of four can only win against itself, and the candidates are distinct.
        let ready = backends(&[1, 2, 3, 4]);
        for (b, n) in ready.iter().zip([1, 2, 9, 1]) {
            set_in_flight(b, n);
        }
        let p = P2c::from_seed(42);
        assert!(sequence(&p, &ready, 1000).iter().all(|s| *s != 3));
    }

    #[test]
    fn idle_workers_share_evenly() {
        let ready = backends(&[1, 2, 3, 4]);
        let picks = sequence(&P2c::from_seed(3), &ready, 40_000);
        for slot in 1..=4 {
            let n = picks.iter().filter(|s| **s == slot).count();
            assert!((9_500..=10_500).contains(&n), "slot {slot}: {n} of 40000");
        }
    }

    #[test]
    fn candidates_are_two_distinct_workers() {
        let p = P2c::from_seed(9);
        for n in 2..6 {
            for _ in 0..1000 {
                let (a, b) = p.two(n);
                assert!(a != b && a < n && b < n, "{a}, {b} of {n}");
            }
        }
    }
}
