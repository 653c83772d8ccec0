//! What the master measures, and how it reports it.
//!
//! The edge is the source of truth for requests: every proxied request ends in one [`Completion`]
//! handed to each [`Observer`]. The supervisor samples each worker's CPU and RSS by pid, and workers
//! report their runtime lag in heartbeats; both land in the slot's [`SlotCounters`].
//!
//! Layout:
//! - [`window`]: one slot's ring of one-second slices (hdrhistogram latency, request and error
//!   counts) and its since-start histogram; rates and percentile summaries;
//! - [`recorder`]: the [`Observer`] that feeds those windows from the edge's hot path;
//! - [`health`]: the thresholds, the health score and alert rules;
//! - [`history`]: the bounded ring of one-second snapshots;
//! - [`monitor`]: [`Monitor`], which puts them together and builds the `/metrics` [`Report`];
//! - [`prometheus`]: the Prometheus text rendering (prometheus-client);
//! - [`routes`]: `/metrics`, `/metrics/prometheus`, `/alerts`, `/history` for a lesson to merge;
//! - [`versions`]: [`PoolWindows`], per version pool over a resettable window (canary analysis);
//! - [`view`]: [`ClusterView`], the cluster as metrics see it.
//!
//! The words it counts in ([`SlotCounters`], [`Completion`], [`Observer`]) are the cluster's
//! shared vocabulary and live in [`crate::slot`]; they are re-exported here, where a reader of
//! metrics looks for them. Depends on `slot`, `config` and `http::routes`; never on the edge or the
//! cluster, which it sees through [`ClusterView`].

pub mod health;
pub mod history;
pub mod monitor;
pub mod prometheus;
pub mod recorder;
pub mod routes;
pub mod versions;
pub mod view;
pub mod window;

pub use health::{Alert, Thresholds};
pub use monitor::{Monitor, Report};
pub use recorder::Recorder;
pub use versions::{PoolStats, PoolWindows};
pub use view::ClusterView;

pub use crate::slot::{Completion, Observer, Observers, Outcome, SlotCounters};
