//! [`RequestBody`]: what the edge sends a worker, the client's body capped at `MAX_BODY_SIZE`.
//!
//! A plain enum instead of a boxed trait object, so the proxied path allocates nothing for it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::http::deadline::{Stall, StallError};

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

/// Why the client's request body could not be read to its end. An enum, not a boxed error, so
/// the proxy tells a 413 from a 408 from a 400 by matching rather than by downcasting.
#[derive(Debug)]
pub enum RequestBodyError {
    /// It grew past `MAX_BODY_SIZE` while streaming.
    TooLarge,
    /// It sent nothing for `BODY_TIMEOUT`.
    Stalled,
    /// The client's connection failed or sent bad framing.
    Client(hyper::Error),
}

impl std::fmt::Display for RequestBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestBodyError::TooLarge => f.write_str("request body is larger than MAX_BODY_SIZE"),
            RequestBodyError::Stalled => {
                f.write_str("the request body sent nothing for BODY_TIMEOUT")
            }
            RequestBodyError::Client(e) => write!(f, "reading the client's body: {e}"),
        }
    }
}

impl std::error::Error for RequestBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestBodyError::Client(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StallError<hyper::Error>> for RequestBodyError {
    fn from(e: StallError<hyper::Error>) -> Self {
        match e {
            StallError::Stalled => RequestBodyError::Stalled,
            StallError::Body(e) => RequestBodyError::Client(e),
        }
    }
}

/// Passes on a frame of the client's body, counting its bytes against `remaining`
/// (`MAX_BODY_SIZE` minus what came before): past it, the body is cut with `TooLarge`.
fn capped(
    polled: Poll<Option<Result<Frame<Bytes>, RequestBodyError>>>,
    remaining: &mut u64,
) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
    if let Poll::Ready(Some(Ok(frame))) = &polled
        && let Some(data) = frame.data_ref()
    {
        let len = data.len() as u64;
        if len > *remaining {
            return Poll::Ready(Some(Err(RequestBodyError::TooLarge)));
        }
        *remaining -= len;
    }
    polled
}

impl crate::http::client::RequestBody for RequestBody {
    fn whole(&self) -> Option<&Bytes> {
        match self {
            RequestBody::Full(Some(data)) => Some(data),
            _ => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
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
                let polled = body.as_mut().poll_frame(cx).map_err(RequestBodyError::from);
                capped(polled, remaining)
            }
            RequestBody::Client { body, remaining } => {
                let polled = Pin::new(body)
                    .poll_frame(cx)
                    .map_err(RequestBodyError::Client);
                capped(polled, remaining)
            }
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
