//! The strategies by name, as `STRATEGY=…` and `POST /lb/strategy` spell them.

use std::fmt;
use std::str::FromStr;

use crate::config::{self, ConfigError, Source};

/// A load-balancing strategy that [`Switch`](super::switch::Switch) can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// [`RoundRobin`](super::RoundRobin): each worker in turn.
    RoundRobin,
    /// [`LeastConnections`](super::least_connections::LeastConnections): fewest in flight.
    LeastConnections,
    /// [`Weighted`](super::weighted::Weighted): smooth weighted round-robin.
    Weighted,
    /// [`LeastResponseTime`](super::least_response_time::LeastResponseTime): EWMA × (1 + in flight).
    LeastResponseTime,
    /// [`ResourceBased`](super::resource::ResourceBased): sampled CPU and memory × (1 + in flight).
    ResourceBased,
    /// [`P2c`](super::p2c::P2c): two random candidates, fewer in flight wins.
    PowerOfTwoChoices,
    /// [`ConsistentHash`](super::consistent_hash::ConsistentHash): by header or path on a ring.
    ConsistentHash,
}

impl Strategy {
    /// Every strategy, in the order the guide presents them.
    pub const ALL: [Strategy; 7] = [
        Strategy::RoundRobin,
        Strategy::LeastConnections,
        Strategy::Weighted,
        Strategy::LeastResponseTime,
        Strategy::ResourceBased,
        Strategy::PowerOfTwoChoices,
        Strategy::ConsistentHash,
    ];

    /// The name used in `STRATEGY`, the API and stats.
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::LeastConnections => "least-connections",
            Strategy::Weighted => "weighted",
            Strategy::LeastResponseTime => "least-response-time",
            Strategy::ResourceBased => "resource-based",
            Strategy::PowerOfTwoChoices => "power-of-two-choices",
            Strategy::ConsistentHash => "consistent-hash",
        }
    }

    /// Its position in [`Strategy::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The valid names, comma-separated, for error messages.
    pub fn valid_names() -> String {
        Self::ALL.map(Strategy::name).join(", ")
    }

    /// Reads `STRATEGY` from `src`; `default` when unset. An unknown name is an error listing the
    /// valid ones: the Node original silently fell back to least-connections, hiding the typo.
    pub fn from_source(src: &impl Source, default: Strategy) -> Result<Strategy, ConfigError> {
        let expected = format!("one of {}", Self::valid_names());
        Ok(config::var(src, "STRATEGY", &expected, |s| s.parse().ok())?.unwrap_or(default))
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStrategy(pub String);

impl fmt::Display for UnknownStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown strategy {:?}: expected one of {}",
            self.0,
            Strategy::valid_names()
        )
    }
}

impl std::error::Error for UnknownStrategy {}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownStrategy(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_strategy() {
        for (i, s) in Strategy::ALL.into_iter().enumerate() {
            assert_eq!(s.name().parse::<Strategy>(), Ok(s));
            assert_eq!(s.index(), i);
        }
    }

    #[test]
    fn an_unknown_strategy_names_the_valid_ones() {
        let err = Strategy::from_source(&[("STRATEGY", "fastest")], Strategy::RoundRobin)
            .expect_err("fastest is not a strategy");
        assert_eq!(err.var, "STRATEGY");
        assert_eq!(
            err.to_string(),
            "invalid STRATEGY=\"fastest\": expected one of round-robin, least-connections, weighted, \
             least-response-time, resource-based, power-of-two-choices, consistent-hash"
        );
        assert_eq!(
            Strategy::from_source(&[], Strategy::LeastConnections),
            Ok(Strategy::LeastConnections)
        );
    }
}
