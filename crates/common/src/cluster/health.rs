//! `/health`: the cluster's state in one answer, for people and for load balancers.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::slot::{SlotState, WorkerInfo};

/// `/health`'s body.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `ok`, `degraded` (some slot not Ready), `unavailable` (none Ready) or `shutting_down`.
    pub status: &'static str,
    /// Counts by state.
    pub workers: HealthCounts,
    /// Seconds since the master started.
    pub uptime: f64,
}

/// Worker counts in [`Health`].
#[derive(Debug, Clone, Serialize)]
pub struct HealthCounts {
    /// Slots that exist.
    pub total: usize,
    /// Slots taking traffic.
    pub ready: usize,
    /// Ready slots the health scorer is content with (all Ready slots without a scorer): the
    /// Node original's `healthy`.
    pub healthy: usize,
    /// Ready slots scoring 50 or less: the original's `degraded`.
    pub degraded: usize,
    /// Slots given up on.
    pub failed: usize,
    /// Per-slot detail.
    pub slots: Vec<SlotHealth>,
}

/// One slot in [`Health`]: its [`WorkerInfo`] and, when the cluster has a health scorer, its score.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotHealth {
    /// The slot.
    #[serde(flatten)]
    pub info: WorkerInfo,
    /// 0–100 from the scorer (see [`Cluster::health_scorer`](super::Cluster::health_scorer)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_score: Option<u8>,
    /// The scorer's verdict, e.g. `healthy` or `degraded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<&'static str>,
}

/// Scores each slot's health: `(slot id, score 0–100, verdict)`. A Ready slot scoring 50 or less
/// makes `/health` say `degraded`.
pub type HealthScorer = Arc<dyn Fn(&[WorkerInfo]) -> Vec<(usize, u8, &'static str)> + Send + Sync>;

impl Health {
    /// The health of a cluster whose slots are `workers`, scored by `scorer` if there is one.
    pub fn of(
        workers: Vec<WorkerInfo>,
        scorer: Option<&HealthScorer>,
        shutting_down: bool,
        uptime: Duration,
    ) -> Self {
        let scores = scorer.map(|score| score(&workers)).unwrap_or_default();
        let slots: Vec<SlotHealth> = workers
            .into_iter()
            .map(|info| {
                let score = scores.iter().find(|(id, _, _)| *id == info.id);
                SlotHealth {
                    health_score: score.map(|s| s.1),
                    health: score.map(|s| s.2),
                    info,
                }
            })
            .collect();
        let is_ready = |s: &&SlotHealth| s.info.state == SlotState::Ready;
        let ready = slots.iter().filter(is_ready).count();
        let degraded = slots
            .iter()
            .filter(is_ready)
            .filter(|s| s.health_score.is_some_and(|score| score <= 50))
            .count();
        let unwell = degraded > 0;
        let failed = slots
            .iter()
            .filter(|s| s.info.state == SlotState::Failed)
            .count();
        let status = if shutting_down {
            "shutting_down"
        } else if ready == 0 {
            "unavailable"
        } else if ready < slots.len() || unwell {
            "degraded"
        } else {
            "ok"
        };
        Health {
            status,
            workers: HealthCounts {
                total: slots.len(),
                ready,
                healthy: ready - degraded,
                degraded,
                failed,
                slots,
            },
            uptime: uptime.as_secs_f64(),
        }
    }
}
