//! [`RateLimitLayer`]: wraps a service in [`RateLimit`].

use std::sync::Arc;

use tower::Layer;

use super::limiter::Limiter;
use super::service::RateLimit;

/// Applies `limiter` to every request of the wrapped service. Clone it freely: every clone counts
/// against the same limiter.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
}

impl RateLimitLayer {
    /// A layer counting against `limiter`.
    pub fn new(limiter: Arc<Limiter>) -> Self {
        Self { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit::new(inner, self.limiter.clone())
    }
}
