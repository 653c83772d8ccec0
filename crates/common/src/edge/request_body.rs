//! [`RequestBody`]: what the edge sends a worker, the client's body capped at `MAX_BODY_SIZE`.
//!
//! A plain enum instead of a boxed trait object, so the proxied path allocates nothing for it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::error::BoxError;
use crate::http::deadline::Stall;

/// The request body sent to a worker: the client's stream, capped at `MAX_BODY_SIZE`, or nothing
/// (a retried bodiless request).
#[derive(Debug, Default)]
pub enum RequestBody {
    /// Streamed from the client.
    Client {
        /// The client's body.
        body: Incoming,
        /// Bytes still allowed before the body is cut off.
        remaining: u64,
    },
    /// Read whole at the edge before a worker was picked (`BODY_BUFFER`).
    Full(Option<Bytes>),
    /// Larger than `BODY_BUFFER`: what was read while finding that out, then the rest streamed,
    /// cut if it stalls for `BODY_TIMEOUT`.
    Streamed(Streamed),
    /// No body.
    #[default]
    Empty,
}

/// A body larger than `BODY_BUFFER`: what was read while finding that out, then the rest.
#[derive(Debug)]
pub struct Streamed {
    /// Read already, sent first.
    prefix: Option<Bytes>,
    /// The rest of the client's body, cut if it stalls.
    body: Pin<Box<Stall<Incoming>>>,
    /// Bytes still allowed before the body is cut off.
    remaining: u64,
}

impl Streamed {
    pub(crate) fn new(prefix: Option<Bytes>, body: Stall<Incoming>, remaining: u64) -> Self {
        Self {
            prefix,
            body: Box::pin(body),
            remaining,
        }
    }
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
            RequestBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Streamed(Streamed {
                prefix,
                body,
                remaining,
            }) => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                match body.as_mut().poll_frame(cx) {
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
                    other => other,
                }
            }
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
            RequestBody::Empty | RequestBody::Full(None) => true,
            RequestBody::Full(Some(_)) => false,
            RequestBody::Streamed(s) => s.prefix.is_none() && s.body.is_end_stream(),
            RequestBody::Client { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty | RequestBody::Full(None) => SizeHint::with_exact(0),
            RequestBody::Full(Some(data)) => SizeHint::with_exact(data.len() as u64),
            RequestBody::Streamed(s) => {
                let before = s.prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = s.body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + before);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + before);
                }
                hint
            }
            RequestBody::Client { body, .. } => body.size_hint(),
        }
    }
}
