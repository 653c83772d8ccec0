//! Least connections: send each request to the worker with the fewest requests in flight.
//!
//! The right default when request costs vary: a worker stuck on slow requests stops getting new ones
//! until it catches up. It is only as good as its counts. The Node course counted in the worker and
//! reported over IPC, so 40 concurrent requests all read the same stale zeros and split 27/13. Here
//! the edge counts a request at dispatch, in the master, before it leaves (see
//! [`Worker::in_flight`]), so the next pick already sees it.

use super::rotor::{Rotor, least_by};
use super::selector::{RequestInfo, Selector, Worker};

/// The worker with the fewest requests in flight; equal workers take turns.
#[derive(Debug, Default)]
pub struct LeastConnections {
    /// Where the tie-breaking scan starts, so idle workers share sequential traffic.
    rotor: Rotor,
}

impl LeastConnections {
    /// A new selector.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Selector for LeastConnections {
    fn select(&self, _req: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize> {
        least_by(ready, self.rotor.start(ready.len()), |b| b.in_flight())
    }

    fn name(&self) -> &'static str {
        "least-connections"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::rotor::testing::{backends, pick, sequence, set_in_flight};

    #[test]
    fn the_worker_with_fewer_requests_in_flight_is_chosen() {
        let ready = backends(&[1, 2, 3]);
        set_in_flight(&ready[0], 4);
        set_in_flight(&ready[1], 1);
        set_in_flight(&ready[2], 2);
        let lc = LeastConnections::new();
        for _ in 0..5 {
            assert_eq!(pick(&lc, &ready), 2, "in flight 4/1/2: slot 2 every time");
        }
    }

    #[test]
    fn idle_workers_take_turns() {
        let ready = backends(&[1, 2, 3]);
        let lc = LeastConnections::new();
        // All at 0 in flight: the rotating start makes it round-robin.
        //   pick:  1 2 3 1 2 3
        assert_eq!(sequence(&lc, &ready, 6), [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn forty_concurrent_requests_split_twenty_twenty() {
        // What the edge does with 40 requests arriving together: pick, then count the request in
        // flight before the next pick. The Node original split these 27/13.
        let ready = backends(&[1, 2]);
        let lc = LeastConnections::new();
        let mut got = [0; 3];
        for _ in 0..40 {
            let slot = pick(&lc, &ready);
            got[slot] += 1;
            let b = &ready[slot - 1];
            set_in_flight(b, b.in_flight() + 1);
        }
        assert_eq!((got[1], got[2]), (20, 20));
    }
}
