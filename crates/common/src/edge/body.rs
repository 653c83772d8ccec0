//! The body types the edge moves: what it sends upstream and what it answers with.
//!
//! Both are plain enums instead of boxed trait objects so the proxied path allocates nothing for
//! them. The upstream response body carries the connection [`Lease`]: when the body ends the
//! connection goes back to the pool, and the slot's in-flight count drops.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::Lease;
use crate::BoxError;

/// The request body sent to a worker: the client's stream, capped at `MAX_BODY_SIZE`, or nothing
/// (a retried bodiless request).
#[derive(Debug)]
pub enum RequestBody {
    /// Streamed from the client.
    Client {
        /// The client's body.
        body: Incoming,
        /// Bytes still allowed before the body is cut off.
        remaining: u64,
    },
    /// No body.
    Empty,
}

/// The request body grew past `MAX_BODY_SIZE` while streaming.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body is larger than MAX_BODY_SIZE")
    }
}

impl std::error::Error for BodyTooLarge {}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Client { body, remaining } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let len = data.len() as u64;
                        if len > *remaining {
                            return Poll::Ready(Some(Err(BodyTooLarge.into())));
                        }
                        *remaining -= len;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Client { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Client { body, .. } => body.size_hint(),
        }
    }
}

/// What the edge answers with.
#[derive(Debug)]
pub enum EdgeBody {
    /// A worker's response, streamed; holds the pooled connection until it ends.
    Upstream {
        /// The worker's body.
        body: Incoming,
        /// Returned to the pool when `body` ends; dropped (closing the connection) otherwise.
        lease: Option<Lease>,
    },
    /// A response the edge made itself (errors).
    Full(Option<Bytes>),
    /// A response from a master-owned axum route.
    Axum(axum::body::Body),
}

impl EdgeBody {
    /// Wraps a worker's body; if it is already complete the connection is released at once.
    pub(crate) fn upstream(body: Incoming, mut lease: Lease) -> Self {
        if body.is_end_stream() {
            lease.release();
            return EdgeBody::Upstream { body, lease: None };
        }
        EdgeBody::Upstream {
            body,
            lease: Some(lease),
        }
    }
}

impl Body for EdgeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            EdgeBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            EdgeBody::Axum(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            EdgeBody::Upstream { body, lease } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => release(lease),
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => release(lease),
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(lease) = lease.take() {
                            lease.fail();
                        }
                    }
                    _ => {}
                }
                polled.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            EdgeBody::Full(data) => data.is_none(),
            EdgeBody::Axum(body) => body.is_end_stream(),
            EdgeBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            EdgeBody::Full(Some(data)) => SizeHint::with_exact(data.len() as u64),
            EdgeBody::Full(None) => SizeHint::with_exact(0),
            EdgeBody::Axum(body) => body.size_hint(),
            EdgeBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}

fn release(lease: &mut Option<Lease>) {
    if let Some(mut lease) = lease.take() {
        lease.release();
    }
}
