//! The environment contract between master and worker: the variables a master sets when it
//! re-executes its binary as a worker, and the worker reads at start. Both sides import this file,
//! and neither imports the other, so the two ends of the contract cannot drift apart.
//!
//! Depends on nothing.

/// `true` in workers; absent in the master.
pub const WORKER: &str = "CLUSTER_WORKER";
/// The worker's slot, 1..=WORKERS.
pub const WORKER_ID: &str = "CLUSTER_WORKER_ID";
/// How many processes this slot had before.
pub const GENERATION: &str = "CLUSTER_GENERATION";
/// The inherited control channel's descriptor number.
pub const IPC_FD: &str = "CLUSTER_IPC_FD";
/// The Unix socket path to serve HTTP on.
pub const SOCKET: &str = "CLUSTER_SOCKET";
/// The master's pid, to detect being orphaned at start.
pub const MASTER_PID: &str = "CLUSTER_MASTER_PID";
/// How often to heartbeat, in milliseconds.
pub const HEARTBEAT_MS: &str = "CLUSTER_HEARTBEAT_MS";
/// In handoff mode, the datagram socket accepted connections arrive on.
pub const HANDOFF_FD: &str = "CLUSTER_HANDOFF_FD";

/// Variables of the master's own that a worker must not inherit: systemd's notify socket,
/// watchdog and socket-activation settings describe the master's relation to the service
/// manager (see `cluster::systemd`), and a worker that read them would speak for the master.
pub const MASTER_ONLY: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];
