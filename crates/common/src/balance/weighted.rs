//! Smooth weighted round-robin, as nginx does it: a worker of weight 3 gets three picks in every
//! four against a worker of weight 1, spread out (`a a b a`), not in a burst (`a a a b`).
//!
//! The algorithm (nginx `ngx_http_upstream_get_peer`): every worker keeps a running value. On each
//! pick, every worker's value grows by its weight; the largest value wins and drops by the sum of
//! all weights. Over one period (the sum of the weights) each worker wins exactly its weight in
//! picks, and the winners interleave as evenly as the weights allow.
//!
//! The Node course's "weighted" picked at random in proportion to weights computed from response
//! time, errors and CPU: no fixed share, and bursts whenever the random numbers clustered. Here the
//! weights are what the operator set (`WORKER_WEIGHTS=3,1`) and the share is exact.
//!
//! The running values are shared by every pick, so they sit behind one mutex held for a few
//! additions; nginx holds a per-upstream lock for the same reason.

use std::sync::Mutex;

use super::selector::{RequestInfo, Selector, Worker};

/// Smooth weighted round-robin over per-slot weights.
#[derive(Debug)]
pub struct Weighted {
    /// Weight of slot `i + 1`; slots past the end weigh 1.
    weights: Box<[u32]>,
    /// Each slot's running value, indexed by slot; grown when a new slot first appears.
    current: Mutex<Vec<i64>>,
}

impl Weighted {
    /// Weights for slots 1, 2, … in order; a slot without one weighs 1. A weight of 0 is taken as 1:
    /// a worker that should get nothing should not be running.
    pub fn new(weights: &[u32]) -> Self {
        Self {
            weights: weights.iter().map(|w| (*w).max(1)).collect(),
            current: Mutex::new(Vec::new()),
        }
    }

    /// Parses `WORKER_WEIGHTS`: comma-separated whole numbers from 1 to 1000, e.g. `3,1`.
    pub fn parse_weights(list: &str) -> Option<Vec<u32>> {
        list.split(',')
            .map(|w| {
                w.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|w| (1..=1000).contains(w))
            })
            .collect()
    }

    /// The weight of `slot` (1-based).
    pub fn weight(&self, slot: usize) -> u32 {
        slot.checked_sub(1)
            .and_then(|i| self.weights.get(i))
            .copied()
            .unwrap_or(1)
    }
}

impl Selector for Weighted {
    fn select(&self, _req: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize> {
        // A panic cannot happen between the updates below, so a poisoned lock holds sane values.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let top = ready.iter().map(|b| b.slot()).max()?;
        if current.len() <= top {
            current.resize(top + 1, 0);
        }
        let mut total = 0i64;
        let mut best: Option<(usize, usize)> = None; // (index in ready, slot)
        for (i, b) in ready.iter().enumerate() {
            let slot = b.slot();
            let w = i64::from(self.weight(slot));
            current[slot] += w;
            total += w;
            // Strictly greater: on a tie the earlier worker wins, as in nginx.
            if best.is_none_or(|(_, s)| current[slot] > current[s]) {
                best = Some((i, slot));
            }
        }
        let (i, slot) = best?;
        current[slot] -= total;
        Some(i)
    }

    fn name(&self) -> &'static str {
        "weighted"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::rotor::testing::{backends, sequence};

    #[test]
    fn three_to_one_is_smooth() {
        let ready = backends(&[1, 2]);
        let w = Weighted::new(&[3, 1]);
        // running values (slot1, slot2) before → after each pick; total weight 4
        //   ( 0, 0) +w ( 3, 1) → 1 wins → (-1, 1)
        //   (-1, 1) +w ( 2, 2) → tie, 1 wins → (-2, 2)
        //   (-2, 2) +w ( 1, 3) → 2 wins → ( 1,-1)
        //   ( 1,-1) +w ( 4, 0) → 1 wins → ( 0, 0)   period over, back to the start
        assert_eq!(sequence(&w, &ready, 8), [1, 1, 2, 1, 1, 1, 2, 1]);
    }

    #[test]
    fn five_one_one_interleaves_the_light_workers() {
        // nginx's own example: weights {a:5, b:1, c:1} give a a b a c a a, not a a a a a b c.
        let ready = backends(&[1, 2, 3]);
        let w = Weighted::new(&[5, 1, 1]);
        assert_eq!(sequence(&w, &ready, 7), [1, 1, 2, 1, 3, 1, 1]);
    }

    #[test]
    fn each_worker_gets_exactly_its_share_and_no_long_bursts() {
        let ready = backends(&[1, 2]);
        let w = Weighted::new(&[3, 1]);
        let picks = sequence(&w, &ready, 4000);
        let heavy = picks.iter().filter(|s| **s == 1).count();
        assert_eq!(heavy, 3000, "3:1 over 4000 picks");
        let longest = picks
            .chunk_by(|a, b| a == b)
            .map(<[usize]>::len)
            .max()
            .unwrap_or(0);
        assert!(longest <= 3, "longest run of one worker: {longest}");
    }

    #[test]
    fn slots_without_a_weight_weigh_one() {
        let ready = backends(&[1, 2, 3]);
        let w = Weighted::new(&[2]);
        assert_eq!((w.weight(1), w.weight(2), w.weight(3)), (2, 1, 1));
        // weights 2,1,1: (2,1,1)→1 (-2,1,1) → (0,2,2)→2 (0,-2,2) → (2,-1,3)→3 (2,-1,-1) → (4,0,0)→1
        assert_eq!(sequence(&w, &ready, 4), [1, 2, 3, 1]);
    }

    #[test]
    fn weights_parse_from_a_comma_separated_list() {
        assert_eq!(Weighted::parse_weights("3,1"), Some(vec![3, 1]));
        assert_eq!(Weighted::parse_weights(" 5 , 1 ,1"), Some(vec![5, 1, 1]));
        assert_eq!(Weighted::parse_weights("3,0"), None, "0 is not a weight");
        assert_eq!(Weighted::parse_weights("3,x"), None);
        assert_eq!(Weighted::parse_weights(""), None);
    }
}
