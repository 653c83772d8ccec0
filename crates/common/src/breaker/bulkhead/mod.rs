//! A bulkhead: at most N calls in flight to one service, the rest waiting a bounded time for a
//! place and then refused.
//!
//! It sits beside the breaker, not inside it: the breaker stops calls to a service that fails,
//! the bulkhead stops a service that is merely slow from taking every connection and task the
//! caller has (the compartments of a ship's hull: one flooded compartment does not sink it).
//! Unlike tower's `ConcurrencyLimit`, which waits forever, a call here waits at most
//! `max_wait` and then gets [`BulkheadFull`], which the edge turns into a 503.

mod future;
mod layer;
mod service;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;

pub use future::ResponseFuture;
pub use layer::BulkheadLayer;
pub use service::BulkheadService;

/// The places one service's calls share: every clone of the layer's services draws on it.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    semaphore: Arc<Semaphore>,
    max_concurrent: usize,
    max_wait: Duration,
    rejected: AtomicU64,
}

impl Bulkhead {
    /// At most `max_concurrent` calls at once (at least 1); a call waits at most `max_wait` for
    /// a place (zero: refused at once when full).
    pub fn new(max_concurrent: usize, max_wait: Duration) -> Self {
        let max_concurrent = max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(Shared {
                semaphore: Arc::new(Semaphore::new(max_concurrent)),
                max_concurrent,
                max_wait,
                rejected: AtomicU64::new(0),
            }),
        }
    }

    /// Its figures, for a status route.
    pub fn stats(&self) -> BulkheadStats {
        let s = &self.inner;
        BulkheadStats {
            max_concurrent: s.max_concurrent,
            in_flight: s.max_concurrent - s.semaphore.available_permits().min(s.max_concurrent),
            max_wait_ms: s.max_wait.as_millis() as u64,
            total_rejections: s.rejected.load(Ordering::Relaxed),
        }
    }

    fn full(&self) -> BulkheadFull {
        self.inner.rejected.fetch_add(1, Ordering::Relaxed);
        BulkheadFull {
            max_concurrent: self.inner.max_concurrent,
            max_wait: self.inner.max_wait,
        }
    }
}

/// A bulkhead's figures (camelCase JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkheadStats {
    /// Places.
    pub max_concurrent: usize,
    /// Places taken now.
    pub in_flight: usize,
    /// How long a call waits for a place.
    pub max_wait_ms: u64,
    /// Calls refused because no place came free in time.
    pub total_rejections: u64,
}

/// No place came free within the bulkhead's wait; the service was not called.
#[derive(Debug, Clone)]
pub struct BulkheadFull {
    max_concurrent: usize,
    max_wait: Duration,
}

impl BulkheadFull {
    /// The bulkhead's places.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// How long the call waited.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bulkhead full: {} calls in flight, none finished within {} ms",
            self.max_concurrent,
            self.max_wait.as_millis()
        )
    }
}

impl std::error::Error for BulkheadFull {}

#[cfg(test)]
mod tests;
