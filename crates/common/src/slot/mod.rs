//! The shared vocabulary of a cluster: what a worker slot is, what is counted about it, and what
//! can happen to it. Every layer above speaks these words (the supervisor writes them, the edge
//! bumps the counters, metrics and balancing read them), so they live below all of them.
//!
//! Layout:
//! - this file: [`SlotState`] and [`WorkerInfo`], a slot as the outside world sees it;
//! - [`counters`]: [`SlotCounters`], per-slot totals that survive restarts;
//! - [`completion`]: how one proxied request ended ([`Completion`], [`Outcome`]) and the
//!   [`Observer`] hook the edge tells;
//! - [`event`]: [`ClusterEvent`], what happened to a worker.
//!
//! Depends on nothing else in the crate.

pub mod completion;
pub mod counters;
pub mod event;

pub use completion::{Completion, Observer, Observers, Outcome};
pub use counters::SlotCounters;
pub use event::{ClusterEvent, RestartRule};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

/// Where a slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// A process was started (or is about to be, after a backoff) and has not said Ready.
    Starting,
    /// Taking traffic.
    Ready,
    /// Finishing in-flight requests before it exits; takes no new ones.
    Draining,
    /// No process and none coming (scaled down, or shut down).
    Stopped,
    /// Restarted too often inside the window; left down until an operator acts.
    Failed,
}

/// A worker slot as the outside world sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInfo {
    /// The slot id, 1..=N.
    pub id: usize,
    /// The version pool the slot belongs to; 0, and left out of the JSON, in a one-pool cluster.
    #[serde(skip_serializing_if = "is_zero")]
    pub pool: usize,
    /// The serving (or starting) process, if any.
    pub pid: Option<u32>,
    /// The slot's state.
    pub state: SlotState,
    /// Replacements after crashes, kills and hangs (not rolling restarts) since the master started.
    pub restarts: u64,
    /// How long the current process has run, in milliseconds.
    pub uptime_ms: u64,
    /// How many processes this slot has had before the current one.
    pub generation: u64,
    /// Requests the edge sent to this slot, across restarts.
    pub requests: u64,
    /// Requests to this slot that ended in a 5xx or a transport error.
    pub errors: u64,
    /// Requests dispatched to this slot and not finished yet.
    pub in_flight: u64,
    /// How the slot's last process ended and what the restart policy did about it.
    #[serde(flatten)]
    pub history: SlotHistory,
    /// The live counters, so readers see current figures rather than the last snapshot's.
    #[serde(skip)]
    pub(crate) counters: Arc<SlotCounters>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The last unexpected exit of a slot's process and the restart that followed, for `/health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotHistory {
    /// The last process of the slot that ended without being asked to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<LastExit>,
    /// The last restart (or the decision to give up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_restart: Option<LastRestart>,
}

/// How a process ended, in [`SlotHistory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastExit {
    /// Its pid.
    pub pid: u32,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// `outside` (a signal sent to it) or `own` (it crashed, or the supervisor killed it for a fault).
    pub cause: &'static str,
    /// Why the supervisor killed it, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killed_for: Option<&'static str>,
    /// How long it had been Ready, in milliseconds; absent if it never was.
    pub ready_ms: Option<u64>,
}

/// What the restart policy decided, in [`SlotHistory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastRestart {
    /// The rule that applied; `None` when the slot was given up on.
    pub rule: Option<RestartRule>,
    /// The delay before the restart, in milliseconds.
    pub delay_ms: u64,
    /// Whether the slot was marked Failed instead.
    pub gave_up: bool,
}

impl WorkerInfo {
    /// Re-reads the request counters from the slot.
    pub(crate) fn refresh(&mut self) {
        self.requests = self.counters.requests.load(Ordering::Relaxed);
        self.errors = self.counters.errors.load(Ordering::Relaxed);
        self.in_flight = self.counters.in_flight.load(Ordering::Relaxed);
    }
}
