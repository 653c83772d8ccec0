//! Choosing a worker for a request.
//!
//! A [`Selector`] sees the request and the workers that are ready right now, and returns the index
//! of one. Health is filtered apart from selection: a selector never sees a worker that is starting,
//! draining or dead. In-flight counts are taken at dispatch by the edge and released when the
//! response body ends, so a selector reading them sees the truth, not a count that arrives late.
//!
//! Layout:
//! - [`selector`]: the [`Selector`] trait, the [`RequestInfo`] it reads and the [`Worker`] view it
//!   chooses among;
//! - one file per strategy: [`round_robin`], [`least_connections`], [`weighted`] (smooth weighted
//!   round-robin), [`least_response_time`] (EWMA latency × load), [`resource`] (CPU and memory),
//!   [`p2c`] (power of two choices), [`consistent_hash`] (a ring keyed by client or header);
//! - [`ring`]: the consistent-hash ring with virtual nodes, shared by `consistent_hash` and `sticky`;
//! - [`sticky`]: session affinity (the cookie names its slot; new clients by ring or strategy);
//! - [`outlier`]: passive outlier ejection wrapped around any selector;
//! - [`split`]: the version pool of a request, chosen before its worker (canary, blue-green);
//! - [`strategy`] and [`switch`]: strategies by name, and a selector that can be switched live;
//! - `rotor`: the rotating start and least-of scan several strategies share.
//!
//! Depends on `slot`, `config` and `session` (the sticky cookie); never on the edge. The strategies
//! and the ring are written here by hand on purpose: they are what the lessons teach.

pub mod consistent_hash;
pub mod least_connections;
pub mod least_response_time;
pub mod outlier;
pub mod p2c;
pub mod resource;
pub mod ring;
mod rotor;
pub mod round_robin;
pub mod selector;
pub mod split;
pub mod sticky;
pub mod strategy;
pub mod switch;
pub mod weighted;

pub use consistent_hash::ConsistentHash;
pub use least_connections::LeastConnections;
pub use least_response_time::LeastResponseTime;
pub use outlier::{Outlier, OutlierConfig};
pub use p2c::P2c;
pub use resource::ResourceBased;
pub use round_robin::RoundRobin;
pub use selector::{RequestInfo, Selector, Worker};
pub use split::{Placement, Split, TrafficSplit};
pub use strategy::Strategy;
pub use switch::{StrategyOptions, Switch};
pub use weighted::Weighted;
