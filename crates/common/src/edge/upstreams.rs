//! [`Upstreams`]: the workers that may take traffic right now, as the edge and the selectors see
//! them.
//!
//! Copy-on-write: the set is replaced whole when a worker becomes ready or leaves (rare), so the
//! request path only clones one `Arc` under a read lock (every request). Each entry is kept twice,
//! as the selector's plain [`Worker`] view and as the edge's [`Backend`], in the same order, so a
//! selector's index names the backend without a lookup or an allocation.

use std::sync::{Arc, RwLock};

use super::pool::Backend;
use crate::balance::{RequestInfo, Selector, Worker};

/// The ready workers, replaced whole on every change (see the module docs).
#[derive(Debug, Default)]
pub struct Upstreams {
    ready: RwLock<Arc<Ready>>,
}

/// One version of the ready set: the same workers twice, in slot order.
#[derive(Debug, Default)]
pub struct Ready {
    workers: Box<[Worker]>,
    backends: Box<[Arc<Backend>]>,
}

impl Ready {
    fn new(backends: Vec<Arc<Backend>>) -> Self {
        Self {
            workers: backends.iter().map(|b| b.worker().clone()).collect(),
            backends: backends.into(),
        }
    }

    /// The workers as a selector sees them.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    /// How many are ready.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// Asks `selector` to place `req`, leaving out the process `exclude` (a worker that just
    /// failed this request); `None` when no worker is left or the selector refuses.
    pub(crate) fn select(
        &self,
        selector: &dyn Selector,
        req: &RequestInfo<'_>,
        exclude: Option<u32>,
    ) -> Option<Arc<Backend>> {
        let Some(pid) = exclude.filter(|pid| self.workers.iter().any(|w| w.pid() == *pid)) else {
            // The common case: the selector sees the shared set, nothing is copied.
            if self.is_empty() {
                return None;
            }
            let i = selector.select(req, &self.workers)?;
            return self.backends.get(i).cloned();
        };
        // A retry: rare, so a filtered copy is fine.
        let rest = Ready::new(
            self.backends
                .iter()
                .filter(|b| b.pid() != pid)
                .cloned()
                .collect(),
        );
        rest.select(selector, req, None)
    }
}

impl Upstreams {
    /// The current ready set.
    pub fn snapshot(&self) -> Arc<Ready> {
        self.ready.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds `backend`, replacing any other process of the same slot.
    pub(crate) fn insert(&self, backend: Arc<Backend>) {
        let mut ready = self.ready.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<_> = ready
            .backends
            .iter()
            .filter(|b| b.slot() != backend.slot())
            .cloned()
            .collect();
        next.push(backend);
        next.sort_by_key(|b| b.slot());
        *ready = Arc::new(Ready::new(next));
    }

    /// Removes the process `pid` if it is in the set; true if it was.
    pub(crate) fn remove_pid(&self, pid: u32) -> bool {
        let mut ready = self.ready.write().unwrap_or_else(|p| p.into_inner());
        if !ready.backends.iter().any(|b| b.pid() == pid) {
            return false;
        }
        let next = ready
            .backends
            .iter()
            .filter(|b| b.pid() != pid)
            .cloned()
            .collect();
        *ready = Arc::new(Ready::new(next));
        true
    }
}
