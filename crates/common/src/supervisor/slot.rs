//! One worker slot's own state: its counters, its restart history, which process serves it and
//! which one is on the way, and whether it was given up on or scaled away.
//!
//! The slot's [`SlotState`] is not stored: it is derived, every time it is published, from these
//! facts and from the process that serves the slot (see [`Slot::state`]). A stored state would have
//! to be kept in step with every exit, Ready message and respawn timer; a derived one cannot drift.
//!
//! ```text
//!   no process, respawn due ──────────────▶ Starting ◀── a process started, not Ready yet
//!   the current process said Ready ───────▶ Ready
//!   no current process, an old one drains ▶ Draining
//!   nothing running, nothing coming ──────▶ Stopped
//!   restarted too often in the window ────▶ Failed (whatever else is true)
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::error::CommandError;
use crate::slot::{RestartRule, SlotCounters, SlotHistory, SlotState};

/// Told whether a replacement became Ready.
pub(super) type ReplaceReply = oneshot::Sender<Result<(), CommandError>>;

pub(super) struct Slot {
    pub(super) counters: Arc<SlotCounters>,
    /// The version pool it belongs to, for its whole life (see `supervisor::pool`).
    pub(super) pool: usize,
    /// When its unstable restarts happened, for the restart policy's window.
    pub(super) restarts: VecDeque<Instant>,
    /// The last unexpected exit and what was done about it, for `/health`.
    pub(super) history: SlotHistory,
    /// The rule and delay of the restart that `respawn_at` (or an immediate respawn) will carry out.
    pub(super) next_restart: Option<(RestartRule, std::time::Duration)>,
    pub(super) next_generation: u64,
    pub(super) current: Option<u64>,
    pub(super) replacement: Option<(u64, Option<ReplaceReply>)>,
    pub(super) respawn_at: Option<Instant>,
    pub(super) failed: bool,
    pub(super) removed: bool,
}

impl Slot {
    /// A new slot, continuing `counters` (those of an earlier slot with this id, if any).
    pub(super) fn new(counters: Arc<SlotCounters>) -> Self {
        Self {
            counters,
            pool: 0,
            restarts: VecDeque::new(),
            history: SlotHistory::default(),
            next_restart: None,
            next_generation: 0,
            current: None,
            replacement: None,
            respawn_at: None,
            failed: false,
            removed: false,
        }
    }

    /// The slot's state, given whether its current process (if it has one) is Ready and serving,
    /// and whether some older process of the slot is still draining.
    ///
    /// The order of the rules matters: Failed wins over everything (an operator must act); a
    /// current process decides next, because a slot whose new process is starting is Starting even
    /// while its old one drains (rolling restart, `MAX_MEMORY`); only with no current process does
    /// a pending respawn or a draining leftover say what the slot is.
    pub(super) fn state(&self, current_ready: Option<bool>, draining: bool) -> SlotState {
        match (self.failed, current_ready) {
            (true, _) => SlotState::Failed,
            (false, Some(true)) => SlotState::Ready,
            (false, Some(false)) => SlotState::Starting,
            (false, None) if self.respawn_at.is_some() => SlotState::Starting,
            (false, None) if draining => SlotState::Draining,
            (false, None) => SlotState::Stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn slot() -> Slot {
        Slot::new(Arc::default())
    }

    #[test]
    fn a_slot_with_a_process_that_has_not_said_ready_is_starting() {
        assert_eq!(slot().state(Some(false), false), SlotState::Starting);
    }

    #[test]
    fn a_slot_whose_current_process_said_ready_is_ready() {
        assert_eq!(slot().state(Some(true), false), SlotState::Ready);
    }

    #[test]
    fn a_slot_waiting_out_its_backoff_is_starting_not_stopped() {
        let mut s = slot();
        assert_eq!(s.state(None, false), SlotState::Stopped);
        s.respawn_at = Some(Instant::now() + Duration::from_secs(1));
        assert_eq!(s.state(None, false), SlotState::Starting);
    }

    #[test]
    fn a_slot_with_only_a_draining_process_is_draining_then_stopped() {
        let s = slot();
        assert_eq!(s.state(None, true), SlotState::Draining);
        assert_eq!(s.state(None, false), SlotState::Stopped);
    }

    #[test]
    fn a_new_process_starting_beside_a_draining_one_makes_the_slot_starting() {
        // A rolling restart: the replacement is current and not Ready; the old one drains.
        assert_eq!(slot().state(Some(false), true), SlotState::Starting);
        assert_eq!(slot().state(Some(true), true), SlotState::Ready);
    }

    #[test]
    fn a_failed_slot_stays_failed_whatever_else_is_true() {
        let mut s = slot();
        s.failed = true;
        s.respawn_at = Some(Instant::now());
        for (current, draining) in [(None, false), (Some(true), false), (Some(false), true)] {
            assert_eq!(
                s.state(current, draining),
                SlotState::Failed,
                "current={current:?} draining={draining}"
            );
        }
    }

    #[test]
    fn a_new_slot_continues_the_counters_it_is_given() {
        let counters = Arc::new(SlotCounters::default());
        counters
            .restarts
            .store(3, std::sync::atomic::Ordering::Relaxed);
        let s = Slot::new(counters.clone());
        assert!(Arc::ptr_eq(&s.counters, &counters));
        assert_eq!(s.next_generation, 0);
        assert!(s.current.is_none() && s.replacement.is_none() && !s.failed && !s.removed);
    }
}
