//! [`ResponseFuture`]: the inner call, holding its place until it ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;

use super::super::BoxError;
use super::BulkheadFull;

pin_project! {
    /// The response of a [`BulkheadService`](super::BulkheadService).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called {
            #[pin]
            fut: F,
            // The place, freed when the response is done or dropped.
            permit: Option<OwnedSemaphorePermit>,
        },
        Refused { error: Option<BulkheadFull> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(fut: F, permit: OwnedSemaphorePermit) -> Self {
        Self {
            kind: Kind::Called {
                fut,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn refused(error: BulkheadFull) -> Self {
        Self {
            kind: Kind::Refused { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { fut, permit } => {
                let out = std::task::ready!(fut.poll(cx));
                permit.take();
                Poll::Ready(out.map_err(Into::into))
            }
            KindProj::Refused { error } => Poll::Ready(Err(match error.take() {
                Some(e) => e.into(),
                None => "bulkhead future polled after completion".into(),
            })),
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
