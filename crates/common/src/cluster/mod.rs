//! The entry point a lesson calls: [`Cluster`] builds the cluster, [`ClusterHandle`] steers it.
//!
//! The same binary is both master and worker. [`Cluster::run`] looks at `CLUSTER_WORKER`: unset,
//! this process is the master (it binds the edge, starts the supervisor and the workers, handles
//! signals); set, it serves the lesson's worker `Router` on the socket the master chose.
//!
//! Layout:
//! - [`builder`]: [`Cluster`], what a lesson fills in, and [`is_worker`];
//! - [`handle`]: [`ClusterHandle`], which steers the running cluster;
//! - [`health`]: `/health`'s answer;
//! - [`scaling`]: the autoscaler's loop (`AUTOSCALE`);
//! - `master`: the master's life from bind to exit;
//! - `signals`, `run_dir`, `logging`: the master's signals, socket directory and log output;
//! - `access_lines`: the access log's lines, written without the general field formatter (and
//!   in the text format without an event: the trace layer's direct writer);
//! - `line_clock`: their timestamps, each second's date written once;
//! - `systemd`: readiness, status and watchdog notifications, and socket activation;
//! - `notify`: the messages to the service manager, which the handle sends too.
//!
//! The top of the crate: it imports everything below and nothing imports it.

mod access_lines;
pub mod builder;
pub mod handle;
pub mod health;
mod line_clock;
mod logging;
mod master;
mod notify;
mod run_dir;
pub mod scaling;
mod signals;
mod systemd;

pub use crate::supervisor::autoscale::{AutoscaleDecision, AutoscaleStatus};
pub use builder::{Cluster, config_with_workers, is_worker};
pub use handle::ClusterHandle;
pub use health::{Health, HealthCounts, HealthScorer, SlotHealth};
