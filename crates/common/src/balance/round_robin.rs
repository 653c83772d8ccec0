//! [`RoundRobin`]: each ready worker in turn, the cluster's default strategy.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::selector::{RequestInfo, Selector, Worker};

/// Each ready worker in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Selector for RoundRobin {
    fn select(&self, _req: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize> {
        // Relaxed is enough: the counter only has to spread picks, not order them.
        Some(self.next.fetch_add(1, Ordering::Relaxed) % ready.len())
    }

    fn name(&self) -> &'static str {
        "round-robin"
    }
}
