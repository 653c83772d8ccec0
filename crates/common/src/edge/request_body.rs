//! [`RequestBody`]: what the edge sends a worker, the client's body capped at `MAX_BODY_SIZE`.
//!
//! A plain enum instead of a boxed trait object, so the proxied path allocates nothing for it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

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
    /// No body.
    #[default]
    Empty,
}

/// Why the client's request body could not be read to its end. An enum, not a boxed error, so
/// the proxy tells a 413 from a 400 by matching rather than by downcasting.
#[derive(Debug)]
pub enum RequestBodyError {
    /// It grew past `MAX_BODY_SIZE` while streaming.
    TooLarge,
    /// The client's connection failed or sent bad framing.
    Client(hyper::Error),
}

impl std::fmt::Display for RequestBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestBodyError::TooLarge => f.write_str("request body is larger than MAX_BODY_SIZE"),
            RequestBodyError::Client(e) => write!(f, "reading the client's body: {e}"),
        }
    }
}

impl std::error::Error for RequestBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestBodyError::TooLarge => None,
            RequestBodyError::Client(e) => Some(e),
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
            RequestBody::Client { body, remaining } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let len = data.len() as u64;
                        if len > *remaining {
                            return Poll::Ready(Some(Err(RequestBodyError::TooLarge)));
                        }
                        *remaining -= len;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(RequestBodyError::Client(e)))),
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
