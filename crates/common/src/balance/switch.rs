//! Changing strategy while the cluster serves.
//!
//! [`Switch`] builds every strategy once, up front, and keeps the index of the current one in an
//! atomic. A pick reads the index and delegates: no lock, no allocation, no reference count. A switch
//! is one store. Requests already placed are not touched, and every request after the store sees a
//! complete strategy, so nothing fails or waits across a switch. Strategies that learn from
//! completions (least-response-time) keep learning while they are not current, so switching to one
//! does not start it cold.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderName;

use super::consistent_hash::ConsistentHash;
use super::least_connections::LeastConnections;
use super::least_response_time::LeastResponseTime;
use super::p2c::P2c;
use super::resource::ResourceBased;
use super::round_robin::RoundRobin;
use super::selector::{RequestInfo, Selector, Worker};
use super::strategy::Strategy;
use super::weighted::Weighted;

/// How the strategies that take settings are built.
#[derive(Debug, Clone, Default)]
pub struct StrategyOptions {
    /// Weights for slots 1, 2, … (`WORKER_WEIGHTS`); missing ones weigh 1.
    pub weights: Vec<u32>,
    /// The power-of-two-choices seed; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// The consistent-hash header; without it (or without it on a request) the path is hashed.
    pub hash_header: Option<HeaderName>,
}

/// Every strategy, one of them current; switch with [`Switch::set`].
pub struct Switch {
    /// Indexed by [`Strategy::index`]; never changes after construction.
    table: Box<[Arc<dyn Selector>]>,
    current: AtomicUsize,
    weighted: Arc<Weighted>,
    least_response_time: Arc<LeastResponseTime>,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switch")
            .field("current", &self.current())
            .finish_non_exhaustive()
    }
}

impl Switch {
    /// Builds all seven strategies with `options` and starts with `initial`.
    ///
    /// Register [`Switch::least_response_time`] as an observer, or least-response-time never learns.
    pub fn new(initial: Strategy, options: &StrategyOptions) -> Self {
        let weighted = Arc::new(Weighted::new(&options.weights));
        let least_response_time = Arc::new(LeastResponseTime::new());
        let table: Box<[Arc<dyn Selector>]> = Strategy::ALL
            .map(|s| -> Arc<dyn Selector> {
                match s {
                    Strategy::RoundRobin => Arc::new(RoundRobin::default()),
                    Strategy::LeastConnections => Arc::new(LeastConnections::new()),
                    Strategy::Weighted => weighted.clone(),
                    Strategy::LeastResponseTime => least_response_time.clone(),
                    Strategy::ResourceBased => Arc::new(ResourceBased::new()),
                    Strategy::PowerOfTwoChoices => Arc::new(match options.seed {
                        Some(seed) => P2c::from_seed(seed),
                        None => P2c::from_entropy(),
                    }),
                    Strategy::ConsistentHash => {
                        Arc::new(ConsistentHash::new(options.hash_header.clone()))
                    }
                }
            })
            .into();
        Self {
            table,
            current: AtomicUsize::new(initial.index()),
            weighted,
            least_response_time,
        }
    }

    /// The strategy in use.
    pub fn current(&self) -> Strategy {
        Strategy::ALL[self.current.load(Ordering::Relaxed)]
    }

    /// Makes `next` current and returns the one it replaced.
    pub fn set(&self, next: Strategy) -> Strategy {
        Strategy::ALL[self.current.swap(next.index(), Ordering::Relaxed)]
    }

    /// The weighted strategy, to read each slot's weight.
    pub fn weighted(&self) -> &Arc<Weighted> {
        &self.weighted
    }

    /// The least-response-time strategy: register it as an observer so it learns latencies.
    pub fn least_response_time(&self) -> &Arc<LeastResponseTime> {
        &self.least_response_time
    }
}

impl Selector for Switch {
    fn select(&self, req: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize> {
        // Relaxed: the table is immutable, so whichever index a pick reads, it finds a whole
        // strategy; no other memory has to be ordered with the switch.
        self.table[self.current.load(Ordering::Relaxed)].select(req, ready)
    }

    fn name(&self) -> &'static str {
        self.current().name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::rotor::testing::{backends, sequence, set_in_flight};

    fn options() -> StrategyOptions {
        StrategyOptions {
            weights: vec![3, 1],
            seed: Some(1),
            hash_header: None,
        }
    }

    #[test]
    fn it_starts_with_the_initial_strategy_and_switches() {
        let sw = Switch::new(Strategy::Weighted, &options());
        assert_eq!(sw.current(), Strategy::Weighted);
        assert_eq!(sw.name(), "weighted");
        assert_eq!(sw.set(Strategy::LeastConnections), Strategy::Weighted);
        assert_eq!(sw.name(), "least-connections");
    }

    #[test]
    fn picks_follow_the_current_strategy() {
        let ready = backends(&[1, 2]);
        let sw = Switch::new(Strategy::Weighted, &options());
        // weighted 3:1 → 1 1 2 1
        assert_eq!(sequence(&sw, &ready, 4), [1, 1, 2, 1]);
        sw.set(Strategy::LeastConnections);
        set_in_flight(&ready[0], 5);
        // least-connections, slot 1 busy → 2 2 2 2
        assert_eq!(sequence(&sw, &ready, 4), [2, 2, 2, 2]);
        sw.set(Strategy::RoundRobin);
        let rr = sequence(&sw, &ready, 4);
        assert!(
            rr == [1, 2, 1, 2] || rr == [2, 1, 2, 1],
            "round-robin alternates: {rr:?}"
        );
    }

    #[test]
    fn every_strategy_is_in_the_table_under_its_own_name() {
        let sw = Switch::new(Strategy::RoundRobin, &options());
        for s in Strategy::ALL {
            sw.set(s);
            assert_eq!(sw.name(), s.name());
            assert_eq!(sw.table[s.index()].name(), s.name());
        }
    }
}
