//! [`ClusterEvent`]: something that happened to a worker, as the supervisor announces it.

use serde::Serialize;

/// Something that happened to a worker; see `ClusterHandle::events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// A worker said it is accepting requests.
    Ready {
        /// Its slot.
        slot: usize,
        /// Its pid.
        pid: u32,
    },
    /// A worker process ended.
    Exited {
        /// Its slot.
        slot: usize,
        /// Its pid.
        pid: u32,
        /// Its exit code, if it exited.
        code: Option<i32>,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
    },
    /// A replacement was started for a worker that exited unexpectedly.
    Restarted {
        /// The slot.
        slot: usize,
        /// The new process.
        pid: u32,
        /// The slot's restarts so far, this one included.
        restarts: u64,
    },
    /// A slot restarted too often and was given up on.
    Failed {
        /// The slot.
        slot: usize,
    },
    /// The number of worker slots was set.
    Scaled {
        /// The new number.
        workers: usize,
    },
}
