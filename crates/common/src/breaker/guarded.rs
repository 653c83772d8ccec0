//! [`guarded`]: one call through a breaker, as a boxed `Send` future an axum handler can await.

use std::future::Future;
use std::pin::Pin;

use tower::{Layer, Service, ServiceExt};

use super::classify::{Classify, DefaultClassifier};
use super::layer::CircuitBreakerLayer;
use super::shared::CircuitBreaker;
use crate::error::BoxError;

/// The future of [`guarded`].
pub type Guarded<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// One call of `service` with `request` through `breaker`. An open circuit fails at once with a
/// [`CircuitOpen`](super::CircuitOpen) inside the error (find it with `downcast_ref`).
///
/// A plain generic function rather than the layer inline in a handler: inline, the compiler
/// checks the handler's future for `Send` under a higher-ranked lifetime and cannot prove the
/// breaker's `Into<BoxError>` bound for it (a known rustc limitation); here the bounds are
/// stated once and the check passes.
pub fn guarded<S, Req>(breaker: &CircuitBreaker, service: S, request: Req) -> Guarded<S::Response>
where
    S: Service<Req, Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Send + 'static,
    DefaultClassifier: Classify<S::Response, BoxError>,
{
    Box::pin(
        CircuitBreakerLayer::new(breaker.clone())
            .layer(service)
            .oneshot(request),
    )
}
