//! [`SlotCounters`]: the totals and gauges of one slot.
//!
//! They live in the slot, not in the process, so a respawned worker inherits its predecessor's
//! totals (the Bungate gateway reset them on every respawn, which made its restart limits
//! meaningless). The edge bumps them on the request path with relaxed atomics: each counter is read
//! on its own, so no ordering between them is needed.

use std::sync::atomic::AtomicU64;

/// Totals and gauges for one slot, shared by the edge, the supervisor and the stats routes.
#[derive(Debug, Default)]
pub struct SlotCounters {
    /// Requests the edge sent to this slot.
    pub requests: AtomicU64,
    /// Responses with status 5xx, and requests that failed in transport.
    pub errors: AtomicU64,
    /// Requests dispatched to this slot whose response body has not ended yet.
    pub in_flight: AtomicU64,
    /// Times this slot's worker was replaced after exiting on its own or being killed.
    pub restarts: AtomicU64,
    /// Resident memory of the current worker, sampled by the master.
    pub rss_bytes: AtomicU64,
    /// CPU use of the current worker in hundredths of a percent of one core.
    pub cpu_centi_percent: AtomicU64,
    /// The worker's last reported runtime lag, in microseconds.
    pub runtime_lag_us: AtomicU64,
}
