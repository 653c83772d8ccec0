//! [`ClusterEvent`]: something that happened to a worker, as the supervisor announces it.

use serde::Serialize;

/// Which rule of the restart policy a restart followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartRule {
    /// It was Ready and a signal from outside ended it (SIGKILL, SIGTERM, SIGINT, SIGHUP):
    /// restarted at once, not counted toward `MAX_RESTARTS`.
    Killed,
    /// It ended on its own at least `MIN_UPTIME` after Ready: restarted at once, not counted.
    Stable,
    /// It ended before Ready, or on its own sooner than `MIN_UPTIME` after Ready: backs off and
    /// counts toward `MAX_RESTARTS`.
    Unstable,
}

impl RestartRule {
    /// The rule's name, as events and `/health` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartRule::Killed => "killed",
            RestartRule::Stable => "stable",
            RestartRule::Unstable => "unstable",
        }
    }
}

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
        /// Which restart rule applied (see `supervisor::backoff`).
        reason: RestartRule,
        /// How long the slot waited before this restart, in milliseconds (0: at once).
        delay_ms: u64,
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
    /// The autoscaler (`AUTOSCALE`) decided to change the number of workers.
    Autoscaled {
        /// The count before.
        from: usize,
        /// The count asked for.
        to: usize,
        /// What was measured, against what.
        reason: String,
    },
}
