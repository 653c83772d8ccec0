//! [`RateLimitLayer`]: wraps a service in [`RateLimit`].

use std::net::SocketAddr;
use std::sync::Arc;

use tower::Layer;

use super::limiter::Limiter;
use super::service::RateLimit;

/// Applies `limiter` to every request of the wrapped service. Clone it freely: every clone counts
/// against the same limiter.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
    peer: Option<SocketAddr>,
}

impl RateLimitLayer {
    /// A layer counting against `limiter`, keyed on each request's [`ClientAddr`] extension.
    ///
    /// [`ClientAddr`]: super::ClientAddr
    pub fn new(limiter: Arc<Limiter>) -> Self {
        Self {
            limiter,
            peer: None,
        }
    }

    /// The same layer for the requests of one connection, whose TCP peer is `peer`: its services
    /// key a request without a [`ClientAddr`] extension on `peer`. A server that wraps each
    /// connection's service (as the edge does) saves every request the extension, which costs
    /// it the allocations of its first map of extensions.
    ///
    /// [`ClientAddr`]: super::ClientAddr
    pub fn for_peer(&self, peer: SocketAddr) -> Self {
        Self {
            limiter: self.limiter.clone(),
            peer: Some(peer),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit::with_peer(inner, self.limiter.clone(), self.peer)
    }
}
