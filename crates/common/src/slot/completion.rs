//! How one proxied request ended, and the hook that is told.
//!
//! The edge is the source of truth for requests: every proxied request ends in one [`Completion`]
//! handed to each [`Observer`], whatever path it took (answered, failed, abandoned by its client).
//! Latency-aware balancing, outlier ejection and metrics all learn from that one call.

use std::sync::Arc;
use std::time::Duration;

/// How one proxied request ended, as the edge saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The slot that served it.
    pub slot: usize,
    /// The worker process that served it.
    pub pid: u32,
    /// The version pool the slot belongs to (0, the cluster's own, unless it runs several; see
    /// `supervisor::PoolSpec`): what per-version metrics are keyed by.
    pub pool: usize,
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
