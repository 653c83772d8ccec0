//! What the master measures, and how it reports it.
//!
//! The edge is the source of truth for requests: every proxied request ends in one [`Completion`]
//! handed to each [`Observer`]. The supervisor samples each worker's CPU and RSS by pid, and workers
//! report their runtime lag in heartbeats; both land in the slot's [`SlotCounters`].
//!
//! Layout:
//! - this file: [`SlotCounters`] (per-slot totals that survive restarts), [`Completion`],
//!   [`Outcome`] and the [`Observer`] hook;
//! - [`window`]: one slot's ring of one-second slices (hdrhistogram latency, request and error
//!   counts) and its since-start histogram; rates and percentile summaries;
//! - [`recorder`]: the [`Observer`] that feeds those windows from the edge's hot path;
//! - [`health`]: the thresholds, the health score and alert rules;
//! - [`history`]: the bounded ring of one-second snapshots;
//! - [`monitor`]: [`Monitor`], which puts them together and builds the `/metrics` [`Report`];
//! - [`prometheus`]: the Prometheus text rendering (prometheus-client);
//! - [`routes`]: `/metrics`, `/metrics/prometheus`, `/alerts`, `/history` for a lesson to merge.
//!
//! The counters below live in the slot, not in the process, so a respawned worker inherits its
//! predecessor's totals (the Bungate gateway reset them on every respawn, which made its restart
//! limits meaningless). The edge bumps them on the request path with relaxed atomics: each counter
//! is read on its own, so no ordering between them is needed.

pub mod health;
pub mod history;
pub mod monitor;
pub mod prometheus;
pub mod recorder;
pub mod routes;
pub mod window;

pub use health::{Alert, Thresholds};
pub use monitor::{Monitor, Report};
pub use recorder::Recorder;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Totals and gauges for one slot, shared by the edge, the supervisor and the stats routes.
#[derive(Debug, Default)]
pub struct SlotCounters {
    /// Requests the edge sent to this slot.
    pub requests: AtomicU64,
    /// Responses with status 5xx, and requests that failed in transport.
    pub errors: AtomicU64,
    /// Requests dispatched to this slot whose response body has not ended yet.
    pub in_flight: AtomicU64,
    /// Times this slot's worker was replaced after exiting on its own or being killed.
    pub restarts: AtomicU64,
    /// Resident memory of the current worker, sampled by the master.
    pub rss_bytes: AtomicU64,
    /// CPU use of the current worker in hundredths of a percent of one core.
    pub cpu_centi_percent: AtomicU64,
    /// The worker's last reported runtime lag, in microseconds.
    pub runtime_lag_us: AtomicU64,
}

/// How one proxied request ended, as the edge saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The slot that served it.
    pub slot: usize,
    /// The worker process that served it.
    pub pid: u32,
    /// From dispatch (before any queueing for a pool connection) to the end of the response body,
    /// or to the failure.
    pub latency: Duration,
    /// The response status, or `None` if no response head arrived (connect failure, reset, timeout).
    pub status: Option<u16>,
    /// How it ended.
    pub outcome: Outcome,
}

/// The end of a proxied request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The whole response reached the client.
    Complete,
    /// The worker or the connection to it failed (no response, or a body cut short by the worker).
    Failed,
    /// The client went away before the body ended; not the worker's fault.
    Abandoned,
}

impl Completion {
    /// A 5xx or a transport failure: what error rates and outlier detection count.
    pub fn is_error(&self) -> bool {
        self.outcome == Outcome::Failed || self.status.is_some_and(|s| s >= 500)
    }
}

/// Told about every proxied request when it ends. Called on the request path, so it must be quick
/// and must not block: update atomics or a short-held lock.
pub trait Observer: Send + Sync + 'static {
    /// One request ended.
    fn on_complete(&self, completion: &Completion);
}

impl<O: Observer + ?Sized> Observer for Arc<O> {
    fn on_complete(&self, completion: &Completion) {
        (**self).on_complete(completion)
    }
}

/// The observers a cluster was built with, shared by every backend.
pub type Observers = Arc<[Arc<dyn Observer>]>;
