//! [`BulkheadService`]: takes a place in `poll_ready`, waiting at most the bulkhead's wait.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::OwnedSemaphorePermit;
use tower::Service;

use super::super::BoxError;
use super::Bulkhead;
use super::future::ResponseFuture;

type Wait = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// A service behind a bulkhead. Made by [`BulkheadLayer`](super::BulkheadLayer).
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
    place: Place,
}

enum Place {
    /// Not asked yet.
    None,
    /// Full when asked: waiting for a place, or for the wait to end. Boxed, so only a call
    /// that has to wait pays for it.
    Waiting(Wait),
    /// Holding a place for the next call.
    Held(OwnedSemaphorePermit),
    /// No place in time: the next call is refused.
    Refused,
}

impl<S> BulkheadService<S> {
    /// Guards `inner` with `bulkhead`.
    pub fn new(inner: S, bulkhead: Bulkhead) -> Self {
        Self {
            inner,
            bulkhead,
            place: Place::None,
        }
    }

    fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        // Full or closed alike: no place now.
        self.bulkhead
            .inner
            .semaphore
            .clone()
            .try_acquire_owned()
            .ok()
    }
}

impl<S: Clone> Clone for BulkheadService<S> {
    /// A clone holds no place: the original keeps the one it took.
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.bulkhead.clone())
    }
}

impl<S> fmt::Debug for BulkheadService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadService")
            .field("bulkhead", &self.bulkhead)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            match &mut self.place {
                Place::None => {
                    self.place = match self.try_take() {
                        Some(permit) => Place::Held(permit),
                        None if self.bulkhead.inner.max_wait.is_zero() => Place::Refused,
                        None => {
                            let semaphore = self.bulkhead.inner.semaphore.clone();
                            let wait = self.bulkhead.inner.max_wait;
                            Place::Waiting(Box::pin(async move {
                                tokio::time::timeout(wait, semaphore.acquire_owned())
                                    .await
                                    .ok()?
                                    .ok()
                            }))
                        }
                    }
                }
                Place::Waiting(wait) => match wait.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(permit)) => self.place = Place::Held(permit),
                    Poll::Ready(None) => self.place = Place::Refused,
                },
                Place::Held(_) => return self.inner.poll_ready(cx).map_err(Into::into),
                Place::Refused => return Poll::Ready(Ok(())),
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let place = std::mem::replace(&mut self.place, Place::None);
        let permit = match place {
            Place::Held(permit) => Some(permit),
            // Called without poll_ready: only a free place will do, there is no waiting here.
            Place::None | Place::Waiting(_) => self.try_take(),
            Place::Refused => None,
        };
        match permit {
            Some(permit) => ResponseFuture::called(self.inner.call(req), permit),
            None => ResponseFuture::refused(self.bulkhead.full()),
        }
    }
}
