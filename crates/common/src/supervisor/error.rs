//! [`CommandError`]: why the supervisor could not do what a `ClusterHandle`
//! asked. One enum, so the reason travels to the caller as a value, not as a string each layer
//! rewrites.

use std::fmt;
use std::process::ExitStatus;

/// Why a command to the supervisor failed.
#[derive(Debug)]
pub enum CommandError {
    /// The slot has no process serving it (never started, exited, or scaled away).
    NoWorker {
        /// The slot asked about.
        slot: usize,
    },
    /// The slot was scaled away while its replacement was starting.
    ScaledAway {
        /// The slot.
        slot: usize,
    },
    /// A new process could not be started for the slot.
    CouldNotStart {
        /// The slot.
        slot: usize,
    },
    /// The replacement exited before it said Ready; the old process keeps serving.
    ExitedBeforeReady {
        /// The slot.
        slot: usize,
        /// How it ended.
        status: ExitStatus,
    },
    /// The cluster is shutting down and takes no more commands.
    ShuttingDown,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::NoWorker { slot } => write!(f, "slot {slot} has no running worker"),
            CommandError::ScaledAway { slot } => write!(f, "slot {slot} was scaled away"),
            CommandError::CouldNotStart { slot } => {
                write!(f, "could not start a new worker for slot {slot}")
            }
            CommandError::ExitedBeforeReady { slot, status } => write!(
                f,
                "the new worker for slot {slot} exited before it was ready ({status})"
            ),
            CommandError::ShuttingDown => f.write_str("the cluster is shutting down"),
        }
    }
}

impl std::error::Error for CommandError {}
