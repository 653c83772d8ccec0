//! The routes `common` adds to every lesson's workers beside `/ping`: the workloads a benchmark or
//! a learner needs to see how the edge carries bodies, streams, slow answers and WebSockets.
//!
//! - `GET /download?bytes=N`: N bytes, streamed in fixed chunks of one shared buffer (never the
//!   whole body in memory), with a `Content-Length`;
//! - `POST /echo`: the request body back, streamed as it arrives;
//! - `GET /slow?ms=N`: an answer after sleeping N ms, holding no thread;
//! - `GET /ws`: a WebSocket that echoes every text and binary message, and closes with the reason
//!   (1009 too big, 1007 not UTF-8, 1002 not WebSocket) on one it refuses.
//!
//! Each is bounded ([`MAX_DOWNLOAD`], [`MAX_ECHO`], [`MAX_SLOW_MS`], [`MAX_WS_MESSAGE`]): a
//! worker's memory and time never depend on what a client asks for beyond them.
//!
//! A lesson's own route of the same path wins (these are the router's fallback, tried only when the
//! lesson's routes do not match): a lesson can keep its own `/slow` or `/ws`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use serde::Deserialize;

use super::WorkerContext;

/// The largest `/download`: 1 GiB.
pub const MAX_DOWNLOAD: u64 = 1 << 30;
/// The largest body `/echo` answers: 64 MiB (the edge's `MAX_BODY_SIZE` usually cuts sooner).
pub const MAX_ECHO: usize = 64 << 20;
/// The longest `/slow`: one minute.
pub const MAX_SLOW_MS: u64 = 60_000;
/// The largest WebSocket message (or frame) `/ws` accepts: 1 MiB.
pub const MAX_WS_MESSAGE: usize = 1 << 20;
/// The size of each chunk of a download: large enough that the per-chunk cost is small against
/// the copy, small enough to stay in cache.
const CHUNK: usize = 64 * 1024;

static PATTERN: [u8; CHUNK] = pattern();

/// A printable, recognisable pattern (`0123456789abcdef…` repeated) rather than zeros, so a
/// transfer that loses or shuffles bytes shows.
const fn pattern() -> [u8; CHUNK] {
    let digits = b"0123456789abcdef";
    let mut out = [0u8; CHUNK];
    let mut i = 0;
    while i < CHUNK {
        out[i] = digits[i % 16];
        i += 1;
    }
    out
}

/// The routes, as a router to put behind a lesson's own (see the module docs).
pub fn router(ctx: &WorkerContext) -> Router {
    let id = ctx.id;
    Router::new()
        .route("/download", get(download))
        .route("/echo", post(echo))
        .route("/slow", get(move |q| slow(q, id)))
        .route("/ws", get(ws))
        .fallback(not_found)
}

/// Every worker's answer to a path nobody serves: a JSON 404 naming it. It is the lesson's too,
/// since these routes are the lesson router's fallback (a fallback of the lesson's own would be
/// replaced by them).
async fn not_found(uri: axum::http::Uri) -> Response {
    let body = serde_json::json!({ "error": "not_found", "path": uri.path(), "status": 404 });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

fn bad_request(message: String) -> Response {
    let body = serde_json::json!({ "error": "bad_request", "message": message, "status": 400 });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

#[derive(Deserialize)]
struct Size {
    bytes: u64,
}

async fn download(q: Result<Query<Size>, axum::extract::rejection::QueryRejection>) -> Response {
    let n = match q {
        Ok(Query(q)) if q.bytes <= MAX_DOWNLOAD => q.bytes,
        Ok(_) => return bad_request(format!("bytes must be at most {MAX_DOWNLOAD}")),
        Err(e) => return bad_request(format!("{e}: expected ?bytes=N")),
    };
    let mut resp = Response::new(Body::new(Download { remaining: n }));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// `remaining` bytes of [`PATTERN`], one chunk per frame. Each frame is a slice of the static
/// buffer: nothing is allocated or copied per chunk, whatever the size.
struct Download {
    remaining: u64,
}

impl http_body::Body for Download {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&PATTERN[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    /// Exact, so hyper frames the answer with `Content-Length` rather than chunks.
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// The request body back as it arrives; a declared body over [`MAX_ECHO`] is refused (413) before
/// any of it is read, an undeclared one is cut there.
async fn echo(req: Request) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_ECHO as u64) {
        let body = serde_json::json!({
            "error": "payload_too_large",
            "message": format!("/echo answers bodies of at most {MAX_ECHO} bytes"),
            "status": 413,
        });
        return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response();
    }
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    let body = http_body_util::Limited::new(req.into_body(), MAX_ECHO);
    let mut resp = Response::new(Body::new(body));
    if let Some(ct) = content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

#[derive(Deserialize)]
struct Ms {
    ms: u64,
}

async fn slow(
    q: Result<Query<Ms>, axum::extract::rejection::QueryRejection>,
    id: usize,
) -> Response {
    let ms = match q {
        Ok(Query(q)) if q.ms <= MAX_SLOW_MS => q.ms,
        Ok(_) => return bad_request(format!("ms must be at most {MAX_SLOW_MS}")),
        Err(e) => return bad_request(format!("{e}: expected ?ms=N")),
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    axum::Json(serde_json::json!({ "worker": id, "slept": ms })).into_response()
}

async fn ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .on_upgrade(echo_socket)
}

/// Echoes text and binary messages until the client closes (pings are answered by the library).
/// A message it will not take ends the socket with a close frame that says why.
async fn echo_socket(mut socket: WebSocket) {
    loop {
        let msg = match socket.recv().await {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                if let Some(frame) = refusal(&e) {
                    let _ = socket.send(Message::Close(Some(frame))).await;
                }
                return;
            }
            None => return,
        };
        let reply = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}

/// The close frame for a message refused as too big, not UTF-8 or not WebSocket (RFC 6455
/// §7.4.1: 1009, 1007, 1002); `None` when the connection itself failed and there is no one to tell.
fn refusal(e: &axum::Error) -> Option<CloseFrame> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let why = std::error::Error::source(e)?.downcast_ref::<WsError>()?;
    let (code, reason) = match why {
        WsError::Capacity(_) => (close_code::SIZE, "message too big"),
        WsError::Utf8(_) => (close_code::INVALID, "text is not UTF-8"),
        WsError::Protocol(_) => (close_code::PROTOCOL, "not a valid WebSocket frame"),
        _ => return None,
    };
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}
