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
/// (the edge does when a rate limit is on). A request without it is not counted: there is no key
/// to count it by, and refusing it would refuse everything in a server that forgot to set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Counts every request against its client's budget; past it, answers 429 without calling the
/// inner service. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S> RateLimit<S> {
    /// `inner`, limited by `limiter`.
    pub fn new(inner: S, limiter: Arc<Limiter>) -> Self {
        Self { inner, limiter }
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
        let peer = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
        let Some(peer) = peer.filter(|_| !limiter.is_exempt(req.uri().path())) else {
            return ResponseFuture::passed(self.inner.call(req), None);
        };
        let client = limiter.trusted.client_ip(peer, req.headers());
        let limit = limiter.rate().burst.get();
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
