//! The cluster runtime every lesson uses: a master that supervises worker processes and routes
//! HTTP to them.
//!
//! Start with [`Cluster`]: give it the axum `Router` each worker serves, optionally routes the
//! master answers itself and a balancing strategy, then call [`Cluster::run`] from `main`. The same
//! binary runs as the master and, re-executed with `CLUSTER_WORKER=true`, as each worker.
//!
//! Layout, one module a concept:
//! - [`cluster`]: the builder, [`ClusterHandle`] (events, worker info, scaling, signals, rolling
//!   restarts) and the master's main loop with its signal handling;
//! - [`supervisor`]: slot states, spawning, restart backoff, hang and memory checks;
//! - [`worker`]: the worker side: serve on a Unix socket, heartbeat, drain on request;
//! - [`ipc`]: typed length-delimited JSON messages over the inherited socketpair;
//! - [`edge`]: the master's HTTP server and reverse proxy with bounded per-worker pools;
//! - [`balance`]: the [`Selector`](balance::Selector) trait and seven strategies (round-robin,
//!   least-connections, weighted, least-response-time, resource-based, power-of-two-choices,
//!   consistent-hash), the live `Switch`, `Outlier` ejection, the hash ring and the sticky selector;
//! - [`metrics`]: per-slot counters, latency windows (hdrhistogram), health score, history,
//!   Prometheus and the observability routes;
//! - [`breaker`]: circuit-breaker and bulkhead tower layers over a pure, remotely drivable core;
//! - [`session`]: session ids that name their slot, the cookie, and stores (memory, Redis);
//! - [`config`]: environment parsing with errors that name the variable;
//! - [`shutdown`]: a fire-once notice many tasks can wait on;
//! - `sched`: the kernel scheduling policy the master and its workers run under (`SCHED_BATCH`);
//! - `h1`: the lean HTTP/1.1 loop the edge and the workers serve plain requests with (no body, no
//!   upgrade), handing a connection to hyper at its first request that is not plain;
//! - `socket`: the master↔worker Unix stream, watched for readability only until a write would
//!   block (spares a wake-up per request on each side);
//! - `watchdog`: one timer per HTTP connection for its header and upstream deadlines, and the loop
//!   that drives a connection until it ends or the shutdown notice comes.

pub mod balance;
pub mod breaker;
pub mod cluster;
pub mod config;
pub mod edge;
mod h1;
pub mod ipc;
pub mod metrics;
mod sched;
pub mod session;
pub mod shutdown;
mod socket;
pub mod supervisor;
mod watchdog;
pub mod worker;

pub use cluster::{Cluster, ClusterEvent, ClusterHandle, HealthScorer, is_worker};
pub use config::Config;
pub use edge::MasterRoutes;
pub use supervisor::{SlotState, WorkerInfo};
pub use worker::WorkerContext;

/// The error type for everything that only needs to be reported, not matched on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
