//! [`RateLimit`]: the service that counts each request against its client's budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower::Service;

use super::future::{Headers, ResponseFuture};
use super::limiter::{Decision, Limiter};

/// The TCP peer of the request's connection, set as a request extension by whoever accepted it
/// (or given to the layer for a whole connection: [`RateLimitLayer::for_peer`]). A request with
/// neither is not counted: there is no key to count it by, and refusing it would refuse
/// everything in a server that forgot to set it.
///
/// [`RateLimitLayer::for_peer`]: super::RateLimitLayer::for_peer
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Counts every request against its client's budget; past it, answers 429 without calling the
/// inner service. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
    /// The connection's peer, for requests without a [`ClientAddr`].
    peer: Option<SocketAddr>,
}

impl<S> RateLimit<S> {
    /// `inner`, limited by `limiter`.
    pub fn new(inner: S, limiter: Arc<Limiter>) -> Self {
        Self::with_peer(inner, limiter, None)
    }

    /// `inner`, limited by `limiter`, with `peer` as the key of requests without a
    /// [`ClientAddr`].
    pub(super) fn with_peer(inner: S, limiter: Arc<Limiter>, peer: Option<SocketAddr>) -> Self {
        Self {
            inner,
            limiter,
            peer,
        }
    }
}

impl<S, B, R> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    R: From<Bytes>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The decision depends on the request's client, so it is made in `call`, not here.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limiter = &self.limiter;
        let peer = req
            .extensions()
            .get::<ClientAddr>()
            .map(|c| c.0)
            .or(self.peer)
            .map(|a| a.ip());
        let Some(peer) = peer.filter(|_| !limiter.is_exempt(req.uri().path())) else {
            return ResponseFuture::passed(self.inner.call(req), None);
        };
        let client = limiter.trusted.client_ip(peer, req.headers());
        let limit = limiter.limit_header.clone();
        match limiter.check(client) {
            Decision::Allowed { remaining, reset } => {
                let headers = Headers::new(limit, remaining, reset);
                ResponseFuture::passed(self.inner.call(req), Some(headers))
            }
            Decision::Limited { retry_after } => {
                tracing::debug!(%client, ?retry_after, "rate limited");
                ResponseFuture::limited(limit, retry_after)
            }
        }
    }
}
