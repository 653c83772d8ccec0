//! The autoscaler's loop (`AUTOSCALE=min..max`): measures the requests in flight at the edge,
//! asks [`Autoscaler`] what to do each interval, and scales through the supervisor like any
//! other `scale_to`. Each decision is logged, sent as [`ClusterEvent::Autoscaled`] and kept
//! (the last [`DECISIONS_KEPT`]) for [`ClusterHandle::autoscale`], which an admin route shows.
//!
//! Only started when `AUTOSCALE` is set. A manual `scale_to` (an admin route, SIGTTIN) while it
//! runs lasts until the next decision, as with a Deployment under an HPA.

use std::time::{Duration, Instant};

use super::handle::ClusterHandle;
use crate::config::Autoscale;
use crate::shutdown::Shutdown;
use crate::slot::{ClusterEvent, SlotState};
use crate::supervisor::autoscale::{
    AutoscaleDecision, AutoscaleStatus, Autoscaler, DECISIONS_KEPT,
};

/// Starts the loop; it ends when `stopped` fires.
pub(super) fn spawn(handle: ClusterHandle, policy: Autoscale, stopped: Shutdown) {
    handle.set_autoscale(AutoscaleStatus::new(&policy));
    tokio::spawn(run(handle, policy, stopped));
}

async fn run(handle: ClusterHandle, policy: Autoscale, stopped: Shutdown) {
    let mut scaler = Autoscaler::new(policy);
    // Ten samples an interval: in-flight is a level that moves with every request, and one
    // reading would be whatever instant it fell on.
    let step = (policy.interval / 10).max(Duration::from_millis(1));
    let mut tick = tokio::time::interval(step);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stopped.wait();
    tokio::pin!(stop);
    let (mut sum, mut samples) = (0.0, 0u32);
    let mut decide_at = Instant::now() + policy.interval;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => return,
        }
        let workers = handle.workers();
        sum += workers.iter().map(|w| w.in_flight).sum::<u64>() as f64;
        samples += 1;
        let now = Instant::now();
        if now < decide_at {
            continue;
        }
        decide_at = now + policy.interval;
        let in_flight = sum / f64::from(samples.max(1));
        (sum, samples) = (0.0, 0);
        // Slots on their way out no longer count; starting ones do (they are what a scale-up
        // already asked for).
        let current = workers
            .iter()
            .filter(|w| !matches!(w.state, SlotState::Stopped | SlotState::Draining))
            .count();
        let wanted = scaler.wanted(in_flight);
        handle.update_autoscale(|s| {
            s.in_flight = in_flight;
            s.wanted = wanted;
        });
        let Some(d) = scaler.decide(now, current, in_flight) else {
            continue;
        };
        tracing::info!(from = d.from, to = d.to, reason = %d.reason, "autoscale");
        if let Err(e) = handle.scale_to(d.to).await {
            tracing::warn!(error = %e, "autoscale: cannot scale");
            continue;
        }
        let at_ms = handle.uptime().as_millis() as u64;
        handle.update_autoscale(|s| {
            if s.decisions.len() == DECISIONS_KEPT {
                s.decisions.pop_front();
            }
            s.decisions.push_back(AutoscaleDecision {
                at_ms,
                from: d.from,
                to: d.to,
                reason: d.reason.clone(),
            });
        });
        handle.emit(ClusterEvent::Autoscaled {
            from: d.from,
            to: d.to,
            reason: d.reason,
        });
    }
}
