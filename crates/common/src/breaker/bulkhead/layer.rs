//! [`BulkheadLayer`]: wraps services in one shared [`Bulkhead`].

use std::time::Duration;

use tower::Layer;

use super::Bulkhead;
use super::service::BulkheadService;

/// Every service it wraps shares one set of places.
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// At most `max_concurrent` calls at once, each waiting at most `max_wait` for a place.
    pub fn new(max_concurrent: usize, max_wait: Duration) -> Self {
        Self {
            bulkhead: Bulkhead::new(max_concurrent, max_wait),
        }
    }

    /// The bulkhead, for its figures.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService::new(inner, self.bulkhead.clone())
    }
}
