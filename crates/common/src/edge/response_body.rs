//! [`EdgeBody`]: what the edge answers a client with.
//!
//! A plain enum instead of a boxed trait object, so the proxied path allocates nothing for it. A
//! worker's streamed body carries the connection [`Lease`]: when the body ends the connection goes
//! back to the pool, and the slot's in-flight count drops.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::Lease;
use super::request_body::RequestBody;
use crate::error::BoxError;
use crate::http::client::{self, BodyWriter, Decoder, Start};

/// What the edge answers with.
#[derive(Debug)]
pub enum EdgeBody {
    /// A worker's response, streamed from its pooled connection.
    Upstream(UpstreamBody),
    /// A worker's answer to an upgrade request, over its dedicated hyper connection.
    Tunnel(Incoming),
    /// A complete body: a worker's that came with its head, or one the edge made itself.
    Full(Option<Bytes>),
    /// A response from a master-owned axum route.
    Axum(axum::body::Body),
}

/// A worker's response body still being read: holds the pooled connection (and the request's
/// in-flight record) until the end, then gives the connection back.
#[derive(Debug)]
pub struct UpstreamBody {
    /// Released at the end of the body; dropped (closing the connection) if the body fails or
    /// the client stops reading.
    lease: Option<Lease>,
    decoder: Decoder,
    /// The rest of the request body, still being sent while the answer streams back.
    writer: Option<Box<BodyWriter<RequestBody>>>,
}

impl EdgeBody {
    /// A worker's body: when it came whole with the head, the connection is released at once.
    pub(crate) fn upstream(
        start: Start,
        writer: Option<BodyWriter<RequestBody>>,
        mut lease: Lease,
    ) -> Self {
        match start {
            Start::Complete(data) => {
                lease.release();
                EdgeBody::Full((!data.is_empty()).then_some(data))
            }
            Start::Stream(decoder) => EdgeBody::Upstream(UpstreamBody {
                lease: Some(lease),
                decoder,
                writer: writer.map(Box::new),
            }),
        }
    }
}

impl Body for EdgeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.get_mut() {
            EdgeBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            EdgeBody::Axum(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            EdgeBody::Tunnel(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            EdgeBody::Upstream(body) => body.poll_data(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            EdgeBody::Full(data) => data.is_none(),
            EdgeBody::Axum(body) => body.is_end_stream(),
            EdgeBody::Tunnel(body) => body.is_end_stream(),
            EdgeBody::Upstream(body) => body.lease.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            EdgeBody::Full(Some(data)) => SizeHint::with_exact(data.len() as u64),
            EdgeBody::Full(None) => SizeHint::with_exact(0),
            EdgeBody::Axum(body) => body.size_hint(),
            EdgeBody::Tunnel(body) => body.size_hint(),
            EdgeBody::Upstream(body) => match body.decoder.exact_remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

impl UpstreamBody {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(conn) = self.lease.as_mut().and_then(Lease::conn) else {
            return Poll::Ready(None);
        };
        if let Some(writer) = &mut self.writer {
            match conn.poll_send_body(writer, cx) {
                Poll::Ready(Ok(())) => self.writer = None,
                Poll::Ready(Err(e @ client::Error::Body(_))) => {
                    // The client's own body failed (it hung up): no fault of the worker's, so the
                    // lease is just dropped, which records the request as abandoned.
                    self.lease = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                // The worker stopped taking the request body; its answer may still come whole.
                // The connection is already marked unfit for reuse.
                Poll::Ready(Err(_)) => self.writer = None,
                Poll::Pending => {}
            }
        }
        match conn.poll_body(&mut self.decoder, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(data))) => {
                if self.decoder == Decoder::Done {
                    // Released now, not on the next poll, so the pool and the in-flight count
                    // know at once and hyper sees the end of the body.
                    self.release();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) => {
                self.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(lease) = self.lease.take() {
                    lease.fail();
                }
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn release(&mut self) {
        if let Some(mut lease) = self.lease.take() {
            if self.writer.take().is_some() {
                // The answer ended before the request did: the connection is out of step.
                lease.discard_connection();
            }
            lease.release();
        }
    }
}

/// A JSON error response made by the edge.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<EdgeBody> {
    let body = serde_json::json!({ "error": code, "message": message, "status": status.as_u16() });
    let mut resp = Response::new(EdgeBody::Full(Some(Bytes::from(body.to_string()))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}
