//! The [`Selector`] trait: what every balancing strategy implements, and what it may look at.
//!
//! Depends on `slot` only: a selector sees workers as plain [`Worker`] views, never the edge's
//! upstreams, so strategies are tested without processes or sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderMap, Method, Uri};

use crate::slot::SlotCounters;

/// A worker as a selector sees it: which slot and process it is, and its live counters. The edge
/// keeps one beside each of its upstreams, so selecting costs no allocation and a selector never
/// touches the edge's connection pools. Tests build these directly.
#[derive(Debug, Clone)]
pub struct Worker {
    slot: usize,
    pid: u32,
    generation: u64,
    counters: Arc<SlotCounters>,
}

impl Worker {
    /// Slot `slot` (1..=N) served by process `pid`, the slot's `generation`-th, with `counters`.
    pub fn new(slot: usize, pid: u32, generation: u64, counters: Arc<SlotCounters>) -> Self {
        Self {
            slot,
            pid,
            generation,
            counters,
        }
    }

    /// The worker's slot id (1..=N), stable across restarts.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Which process of this slot this is (0 for the first, then one more per replacement).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Requests dispatched to this slot that have not finished.
    pub fn in_flight(&self) -> u64 {
        self.counters.in_flight.load(Ordering::Relaxed)
    }

    /// The slot's counters (requests, errors, CPU, memory, runtime lag).
    pub fn counters(&self) -> &Arc<SlotCounters> {
        &self.counters
    }
}

/// What a selector may look at to place a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request target.
    pub uri: &'a Uri,
    /// The request headers (cookies, affinity keys).
    pub headers: &'a HeaderMap,
    /// The TCP peer.
    pub client: SocketAddr,
}

/// A load-balancing strategy.
pub trait Selector: Send + Sync + 'static {
    /// The index in `ready` of the worker to use, or `None` to refuse (the edge answers 503).
    /// `ready` is never empty when this is called.
    fn select(&self, req: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize>;

    /// The strategy's name, as shown in stats.
    fn name(&self) -> &'static str;
}

/// A shared selector is a selector, so a lesson can keep an `Arc` to read its stats.
impl<S: Selector + ?Sized> Selector for Arc<S> {
    fn select(&self, req: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize> {
        (**self).select(req, ready)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }
}
