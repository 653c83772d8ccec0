//! [`ClusterView`]: what metrics need to know about a running cluster, and nothing more.
//!
//! Metrics stand below the cluster in the crate's layers, so they cannot name `ClusterHandle`;
//! the handle implements this trait instead (a test can implement it with a plain list).

use std::time::Duration;

use crate::slot::WorkerInfo;

/// A running cluster as metrics see it.
pub trait ClusterView: Clone + Send + Sync + 'static {
    /// Every slot, with its current counters.
    fn workers(&self) -> Vec<WorkerInfo>;

    /// How long the master has run.
    fn uptime(&self) -> Duration;
}
