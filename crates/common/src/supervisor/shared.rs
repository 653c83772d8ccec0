//! [`Shared`]: what the supervisor publishes for the rest of the master to read.
//!
//! The supervisor is the only writer: it puts Ready workers into the edge's upstreams, replaces the
//! slot list after every step and announces events. The cluster handle, the master's routes and the
//! edge only read, so none of them needs a lock held across a state change.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use tokio::sync::{broadcast, watch};

use crate::edge::Upstreams;
use crate::slot::{ClusterEvent, Observers, WorkerInfo};

/// State the master's tasks share; written by the supervisor, read by routes and the handle.
pub(crate) struct Shared {
    pub upstreams: Arc<Upstreams>,
    /// Replaced after every supervisor step; a watch so waiters learn of each change.
    pub workers: watch::Sender<Vec<WorkerInfo>>,
    pub events: broadcast::Sender<ClusterEvent>,
    pub shutting_down: AtomicBool,
    pub started: Instant,
    /// The master's private run directory (0700, removed at exit): the workers' sockets, and
    /// whatever a lesson keeps for the master's lifetime only.
    pub run_dir: std::path::PathBuf,
    /// Given to every backend: told about each proxied request as it ends.
    pub observers: Observers,
}
