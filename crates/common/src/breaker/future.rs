//! [`ResponseFuture`]: the inner call, whose result is reported to the breaker when it ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use pin_project_lite::pin_project;

use super::BoxError;
use super::classify::Classify;
use super::core::{Outcome, Permit};
use super::error::CircuitOpen;
use super::shared::Handle;

pin_project! {
    /// The response of a [`CircuitBreakerService`](super::CircuitBreakerService).
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        classifier: Option<C>,
        // Reports the call when it ends, or as ignored if the future is dropped first.
        report: Option<Report>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] fut: F },
        Refused { error: Option<CircuitOpen> },
    }
}

/// A call in flight: the permit to hand back with its outcome.
struct Report {
    breaker: Arc<Handle>,
    /// Taken when the outcome is reported.
    permit: Option<Permit>,
    started: Option<Instant>,
}

impl Report {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(permit) = self.permit.take() {
            self.breaker.finish(permit, outcome, self.started);
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        // Still here means the future was dropped before the call ended (the client went
        // away): not the service's fault, but a probe's place must be freed.
        self.finish(Outcome::Ignored);
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(
        fut: F,
        breaker: Arc<Handle>,
        permit: Permit,
        started: Option<Instant>,
        classifier: C,
    ) -> Self {
        Self {
            kind: Kind::Called { fut },
            classifier: Some(classifier),
            report: Some(Report {
                breaker,
                permit: Some(permit),
                started,
            }),
        }
    }

    pub(crate) fn refused(error: CircuitOpen) -> Self {
        Self {
            kind: Kind::Refused { error: Some(error) },
            classifier: None,
            report: None,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { fut } => {
                let result = ready!(fut.poll(cx));
                if let (Some(mut report), Some(classifier)) =
                    (this.report.take(), this.classifier.as_ref())
                {
                    report.finish(classifier.classify(result.as_ref()));
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Refused { error } => match error.take() {
                Some(e) => Poll::Ready(Err(e.into())),
                None => Poll::Ready(Err("circuit breaker future polled after completion".into())),
            },
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
