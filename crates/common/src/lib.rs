//! The cluster runtime every lesson uses: a master that supervises worker processes and routes
//! HTTP to them.
//!
//! Start with [`Cluster`]: give it the axum `Router` each worker serves, optionally routes the
//! master answers itself and a balancing strategy, then call [`Cluster::run`] from `main`. The same
//! binary runs as the master and, re-executed with `CLUSTER_WORKER=true`, as each worker.
//!
//! Layout, bottom to top (a module imports only from the layers below it; see `ARCHITECTURE.md`):
//!
//! 1. vocabulary: [`error`] (the error alias), [`config`] (environment parsing with errors that
//!    name the variable), [`shutdown`] (a fire-once notice), [`slot`] (slot states, worker info,
//!    counters, completions, events), `sched` (the kernel scheduling policy, `SCHED_BATCH`),
//!    `log_buffer` (log lines gathered and written to stderr in batches, off the request path);
//! 2. the wire between master and worker: [`wire`] (the environment contract, IPC frames, the
//!    worker socket, the handoff fd channel);
//! 3. [`http`]: the plain-request server, the worker client, the header policy, per-connection
//!    deadlines, the master's route table, and two tower middlewares a lesson may put in front of
//!    the edge: the per-client rate limit ([`http::rate_limit`]) and the request trace
//!    ([`http::trace`]);
//! 4. what the master decides with: [`balance`] (the [`Selector`](balance::Selector) trait and
//!    the strategies), [`metrics`] (latency windows, health scores, Prometheus), [`session`]
//!    (session ids, the cookie, memory and Redis stores), [`breaker`] (circuit-breaker and
//!    bulkhead tower layers over a pure, remotely drivable core), [`flags`] (feature flags: the
//!    master's store and routes, the workers' client), [`ab`] (A/B tests: assignment, exposures,
//!    conversions and their significance), [`db`] (PostgreSQL primary and replica pools, feature
//!    `db`, and the notes repository), `cache` (feature `cache`: a per-process moka cache in front
//!    of Redis, invalidated over pub/sub);
//! 5. the processes' main parts: [`edge`] (the master's HTTP server and reverse proxy; with
//!    feature `uring`, `edge::uring`, an io_uring prototype of its plain path for benchmarks),
//!    [`supervisor`] (slots, spawning, restarts, hang and memory checks), [`worker`] (the worker
//!    side: serve on a Unix socket, heartbeat, drain);
//! 6. [`cluster`]: the builder, [`ClusterHandle`] and the master's main loop.

pub mod ab;
pub mod balance;
pub mod breaker;
#[cfg(feature = "cache")]
pub mod cache;
pub mod cluster;
pub mod config;
pub mod db;
pub mod edge;
pub mod error;
pub mod flags;
pub mod http;
mod log_buffer;
pub mod metrics;
mod sched;
pub mod session;
pub mod shutdown;
pub mod slot;
pub mod supervisor;
pub mod wire;
pub mod worker;

pub use cluster::{Cluster, ClusterHandle, HealthScorer, is_worker};
pub use config::Config;
pub use error::BoxError;
pub use http::routes::MasterRoutes;
pub use slot::{ClusterEvent, SlotState, WorkerInfo};
pub use worker::WorkerContext;

/// What every property test (`prop_*`) shares: how many cases it runs.
#[cfg(test)]
pub(crate) mod prop {
    /// `PROPTEST_CASES` cases per property (`scripts/fuzz N` sets it), 2000 when unset; failures
    /// are printed with their minimal input, not saved to files in the source tree.
    pub(crate) fn config() -> proptest::prelude::ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        proptest::prelude::ProptestConfig {
            cases,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        }
    }
}
