//! A rate limit per client IP: GCRA (the generic cell rate algorithm) through `governor`, keyed by
//! the client's address, as a tower middleware.
//!
//! Put in front of the whole edge, one limiter holds for the whole cluster however many workers
//! serve: a limiter per worker would let N times the limit through. Answers past the limit are
//! `429 Too Many Requests` (RFC 6585 §4) with `Retry-After`; every answer carries the
//! `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` headers of the IETF httpapi
//! draft, so a well-behaved client can slow down before it is refused.
//!
//! Layout (as tower's own middleware):
//! - [`Rate`]: `RATE_LIMIT` (`100/min`, `10/s`, `5000/hour`) and `RATE_LIMIT_BURST`, parsed;
//! - [`Limiter`]: the keyed GCRA state, bounded: idle keys are dropped by
//!   [`Limiter::retain_recent`] (on a timer) and at most `max_keys` are kept;
//! - [`RateLimitLayer`], [`RateLimit`] (the service) and [`ResponseFuture`];
//! - [`ClientAddr`]: the request extension the service keys on.
//!
//! Depends on `http::forwarded` (whose `X-Forwarded-For` to believe) and nothing else.

mod future;
mod layer;
mod limiter;
mod service;

pub use future::ResponseFuture;
pub use layer::RateLimitLayer;
pub use limiter::{Decision, Limiter, Rate};
pub use service::{ClientAddr, RateLimit};

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Request, Response};
    use tower::{Layer, ServiceExt};

    use super::*;

    async fn call(layer: &RateLimitLayer, path: &str, from: Option<&str>) -> Response<Bytes> {
        let inner = tower::service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Bytes::from_static(b"inner")))
        });
        let mut req = Request::get(path).body(()).unwrap();
        if let Some(addr) = from {
            let addr: SocketAddr = addr.parse().unwrap();
            req.extensions_mut().insert(ClientAddr(addr));
        }
        layer.layer(inner).oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn past_the_burst_the_service_answers_429_without_calling_inside() {
        let limiter = Limiter::new(Rate::parse("2/min").unwrap(), 10).exempt(&["/health"]);
        let layer = RateLimitLayer::new(Arc::new(limiter));
        let a = "10.0.0.1:5000";
        let first = call(&layer, "/", Some(a)).await;
        assert_eq!(first.status(), 200);
        assert_eq!(first.headers()["ratelimit-limit"], "2");
        assert_eq!(first.headers()["ratelimit-remaining"], "1");
        assert_eq!(call(&layer, "/", Some(a)).await.status(), 200);
        let third = call(&layer, "/", Some(a)).await;
        assert_eq!(third.status(), 429);
        assert_eq!(
            third.headers()["retry-after"],
            "30",
            "one request back every 30 s"
        );
        assert_ne!(third.body().as_ref(), b"inner");
        // Another port of the same address is the same client; another address is not.
        assert_eq!(call(&layer, "/", Some("10.0.0.1:6000")).await.status(), 429);
        assert_eq!(call(&layer, "/", Some("10.0.0.2:5000")).await.status(), 200);
        // Exempt paths and requests with no known peer are not counted.
        let probe = call(&layer, "/health", Some(a)).await;
        assert_eq!(probe.status(), 200);
        assert!(probe.headers().get("ratelimit-limit").is_none());
        assert_eq!(call(&layer, "/", None).await.status(), 200);
    }

    #[tokio::test]
    async fn a_layer_for_a_connection_counts_its_requests_against_its_peer() {
        let limiter = Limiter::new(Rate::parse("1/min").unwrap(), 10);
        let layer = RateLimitLayer::new(Arc::new(limiter));
        let conn = layer.for_peer("10.0.0.1:5000".parse().unwrap());
        assert_eq!(call(&conn, "/", None).await.status(), 200);
        assert_eq!(call(&conn, "/", None).await.status(), 429);
        // The same limiter: the peer is spent through the plain layer too.
        assert_eq!(call(&layer, "/", Some("10.0.0.1:7000")).await.status(), 429);
        // A request's own `ClientAddr` comes before the connection's peer.
        assert_eq!(call(&conn, "/", Some("10.0.0.2:5000")).await.status(), 200);
    }
}
