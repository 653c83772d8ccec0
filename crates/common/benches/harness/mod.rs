//! What both breaker benchmarks measure: the layer over a service that does nothing.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};

use common::breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
use futures_util::FutureExt;
use http::Response;
use tower::{Layer, Service};

/// The cheapest possible inner service, so what is measured is the layer.
#[derive(Clone, Copy)]
pub struct Ok200;

impl Service<()> for Ok200 {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

/// poll_ready, call and one poll of the response: what a proxy does per request.
pub fn once<S: Service<(), Response = Response<()>>>(svc: &mut S, cx: &mut Context<'_>) {
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the bench service is always ready"),
    }
    let res = svc.call(()).now_or_never();
    black_box(res.map(|r| r.is_ok()));
}

pub fn layered(config: BreakerConfig) -> impl Service<(), Response = Response<()>> + Clone + Send {
    CircuitBreakerLayer::new(CircuitBreaker::new("bench", config)).layer(Ok200)
}
