//! [`CircuitBreakerService`]: admission in `poll_ready`, outcome in the response future.

use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tower::Service;

use super::BoxError;
use super::classify::Classify;
use super::future::ResponseFuture;
use super::shared::{Admission, CircuitBreaker, Handle};

/// A service behind a circuit breaker. Made by [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
///
/// `poll_ready` asks the breaker first, as tower's `load_shed` does: a refused call is ready at
/// once and `call` answers it with [`CircuitOpen`](super::CircuitOpen) without touching the inner service, so a
/// caller never waits on a service the breaker knows is down. An admitted call then waits for
/// the inner service to be ready, holding its permit. A follower (cluster scope) that must ask
/// its master for a half-open probe is pending in `poll_ready` until the master answers.
pub struct CircuitBreakerService<S, C> {
    inner: S,
    /// This clone's own handle: each call's future holds a reference to it, and counting
    /// those on the breaker's shared one would make every call on every core write one cache
    /// line.
    breaker: Arc<Handle>,
    classifier: C,
    /// The breaker's answer for the next `call`, taken in `poll_ready`.
    admission: Option<Admission>,
}

impl<S: std::fmt::Debug, C: std::fmt::Debug> std::fmt::Debug for CircuitBreakerService<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("inner", &self.inner)
            .field("breaker", &**self.breaker)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl<S, C> CircuitBreakerService<S, C> {
    /// Guards `inner` with `breaker`.
    pub fn new(inner: S, breaker: CircuitBreaker, classifier: C) -> Self {
        Self {
            inner,
            breaker: Arc::new(Handle::new(breaker)),
            classifier,
            admission: None,
        }
    }

    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreakerService<S, C> {
    /// A clone has not been through `poll_ready`: the permit stays with the original.
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            CircuitBreaker::clone(&self.breaker),
            self.classifier.clone(),
        )
    }
}

impl<S, C> Drop for CircuitBreakerService<S, C> {
    fn drop(&mut self) {
        // A probe's place taken in poll_ready and never called must be given back, or a
        // half-open breaker would wait for a result that never comes.
        if let Some(Admission::Decided(Ok(permit))) = self.admission.take() {
            self.breaker.release(permit);
        }
    }
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            match self.admission.get_or_insert_with(|| self.breaker.admit()) {
                Admission::Asking(ask) => {
                    let answer = ready!(ask.as_mut().poll(cx));
                    self.admission = Some(Admission::Decided(answer));
                }
                Admission::Decided(Err(_)) => return Poll::Ready(Ok(())),
                Admission::Decided(Ok(_)) => {
                    return match self.inner.poll_ready(cx) {
                        Poll::Ready(Err(e)) => {
                            if let Some(Admission::Decided(Ok(permit))) = self.admission.take() {
                                self.breaker.release(permit);
                            }
                            Poll::Ready(Err(e.into()))
                        }
                        other => other.map_err(Into::into),
                    };
                }
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Called without poll_ready (a contract breach, but cheap to survive): ask now.
        let admission = match self.admission.take() {
            Some(Admission::Decided(answer)) => answer,
            // Not ready yet (or no poll_ready at all): no waiting here.
            Some(Admission::Asking(_)) | None => self.breaker.try_acquire(),
        };
        match admission {
            Ok(permit) => {
                let started = self.breaker.start();
                let fut = self.inner.call(req);
                ResponseFuture::called(
                    fut,
                    self.breaker.clone(),
                    permit,
                    started,
                    self.classifier.clone(),
                )
            }
            Err(open) => ResponseFuture::refused(open),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, service_fn};

    use super::*;
    use crate::breaker::{BreakerConfig, CircuitBreakerLayer};

    #[test]
    fn clones_made_one_after_another_count_their_calls_on_lines_of_their_own() {
        let layer = CircuitBreakerLayer::new(CircuitBreaker::new("t", BreakerConfig::default()));
        let svc = layer.layer(service_fn(|()| async { Ok::<_, Infallible>(()) }));
        let clones: Vec<_> = (0..8).map(|_| svc.clone()).collect();
        // An `Arc`'s counts sit in front of its value, so the 128 bytes before a handle are
        // where its count is written; no other handle's counts may share them.
        let lines: Vec<usize> = clones
            .iter()
            .map(|c| {
                let at = Arc::as_ptr(&c.breaker) as usize;
                assert_eq!(at % 128, 0, "a handle starts a line of its own");
                (at - 1) / 128
            })
            .collect();
        let mut distinct = lines.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            lines.len(),
            "two handles share a line: {lines:?}"
        );
    }
}
