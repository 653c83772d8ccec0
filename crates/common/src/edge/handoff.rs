//! Handoff dispatch (`DISPATCH=handoff`): the master accepts TCP connections and passes each one's
//! file descriptor to a worker, which then serves the whole keep-alive connection itself, as Node's
//! cluster module does.
//!
//! What changes compared with proxy mode (the default):
//! - the master touches only the first request head of a connection: it peeks at it (MSG_PEEK, at
//!   most [`PEEK_LIMIT`] bytes, within `HEADER_TIMEOUT`) to route by cookie and to answer its own
//!   routes (closing such a connection after the response, so the rest of the conversation cannot
//!   bypass the routing);
//! - balancing is per connection, not per request: a keep-alive client stays on one worker;
//! - there is no per-request retry: once a worker owns a connection, the requests on it live and die
//!   with that worker (a failed handoff is retried on another worker);
//! - request counts and latencies are measured by workers, not the edge.
//!
//! In exchange the master's cost per request drops to almost nothing: it never parses, copies or
//! re-sends a byte after the handoff.
//!
//! Each worker has a second socketpair for this, a datagram one: see
//! `wire::handoff`. Proxy dispatch uses the same channel for WebSocket upgrades (`edge::upgrade`),
//! with the same checks of the head (`edge::handed_head`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::accept::{Listening, accept_until};
use super::handed_head::{PeekedHead, to_head};
use super::serve::{hyper_builder, serve_connection};
use super::state::Edge;
use crate::balance::RequestInfo;
use crate::shutdown::Shutdown;

/// The most of a request head the master will look at.
pub const PEEK_LIMIT: usize = 8 * 1024;

enum Peeked {
    Head(Box<PeekedHead>),
    /// Not (yet) a valid head: let the master's HTTP server answer (400, 431, or a timeout).
    Unusable,
    /// The client closed before sending anything.
    Closed,
}

/// Looks at the connection's first request head without consuming it.
async fn peek_head(stream: &TcpStream, timeout: Duration, max_head: usize) -> io::Result<Peeked> {
    let mut buf = vec![0u8; PEEK_LIMIT];
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(Peeked::Closed);
        }
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(&buf[..n]) {
            Ok(httparse::Status::Complete(_)) => {
                return Ok(
                    to_head(&req, max_head).map_or(Peeked::Unusable, |h| Peeked::Head(Box::new(h)))
                );
            }
            Ok(httparse::Status::Partial) if n < buf.len() && Instant::now() < deadline => {
                // A peek leaves the socket readable, so waiting for readiness would spin: back off
                // instead. Rare: clients send a head in one segment.
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            _ => return Ok(Peeked::Unusable),
        }
    }
}

/// Accepts until `shutdown`, handing connections to workers; returns true if the connections the
/// master kept for itself closed within `drain`.
pub(crate) async fn serve(at: Listening, edge: Arc<Edge>) -> bool {
    let shutdown = at.shutdown.clone();
    accept_until(at, &edge.connection_slots, |stream, client| {
        dispatch(stream, client, edge.clone(), shutdown.clone())
    })
    .await
}

async fn dispatch(stream: TcpStream, client: SocketAddr, edge: Arc<Edge>, shutdown: Shutdown) {
    let _ = stream.set_nodelay(true);
    let accepted = Instant::now();
    let limits = edge.limits;
    let head = match peek_head(&stream, limits.header_timeout, limits.max_header_size).await {
        Ok(Peeked::Head(head)) => head,
        Ok(Peeked::Closed) | Err(_) => return,
        Ok(Peeked::Unusable) => return serve_here(stream, client, edge, shutdown, accepted).await,
    };
    if edge.master.owns(head.uri.path()) {
        return serve_here(stream, client, edge, shutdown, accepted).await;
    }
    let info = RequestInfo {
        method: &head.method,
        uri: &head.uri,
        headers: &head.headers,
        client,
    };
    // The processes a handoff failed to; the third try is the last. One that finds no worker
    // (none Ready, or only the ones that failed) waits for one, as a proxied request does.
    let mut tried: Vec<u32> = Vec::new();
    for _ in 0..3 {
        let found = edge
            .upstreams
            .snapshot()
            .select_excluding(&*edge.selector, &info, &tried);
        let backend = match found {
            Some(b) => b,
            None => match wait_ready(&edge, &info, &tried).await {
                Some(b) => b,
                None => break,
            },
        };
        let Some(channel) = backend.handoff() else {
            break;
        };
        match channel.send(stream.as_raw_fd()).await {
            Ok(()) => {
                backend
                    .counters()
                    .requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Our copy of the descriptor closes when `stream` drops; the worker's stays open.
                return;
            }
            Err(e) => {
                tracing::debug!(slot = backend.slot(), error = %e, "handoff failed; trying another worker");
                tried.push(backend.pid());
            }
        }
    }
    refuse(stream).await;
}

/// No worker (but those in `tried`) is Ready: waits, as a proxied request does, up to
/// `QUEUE_TIMEOUT` for one.
async fn wait_ready(
    edge: &Edge,
    info: &RequestInfo<'_>,
    tried: &[u32],
) -> Option<Arc<super::Backend>> {
    let limits = &edge.limits;
    edge.upstreams
        .wait_for(limits.queue_timeout, limits.queue_max, |ready| {
            ready.select_excluding(&*edge.selector, info, tried)
        })
        .await
        .ok()
}

/// Answers the connection's first request with the JSON 503 and closes it.
async fn refuse(stream: TcpStream) {
    let body = r#"{"error":"no_worker_available","message":"no worker could take this connection","status":503}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = stream;
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The master answers this connection itself (its own routes, or bad input), then closes it.
///
/// The first head's deadline runs from `accepted`: the time spent peeking counts, so a slow
/// first head gets `HEADER_TIMEOUT` in all, not twice that.
async fn serve_here(
    stream: TcpStream,
    client: SocketAddr,
    edge: Arc<Edge>,
    shutdown: Shutdown,
    accepted: Instant,
) {
    let left = edge
        .limits
        .header_timeout
        .saturating_sub(accepted.elapsed());
    if left.is_zero() {
        // No whole head within HEADER_TIMEOUT: closed unanswered, as proxy mode does.
        return;
    }
    // One request only: whatever follows on this connection must be routed afresh.
    let builder = hyper_builder(&edge, false);
    serve_connection(edge, &builder, stream, client, shutdown, left).await;
}
