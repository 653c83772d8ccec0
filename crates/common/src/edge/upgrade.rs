//! A WebSocket upgrade in proxy dispatch, handed to its worker: the master routes the handshake as
//! any request, then passes the client's TCP connection itself to the chosen worker, with the
//! bytes it had read of it, and is off the path of every message after that.
//!
//! Why: splicing the two sockets ([`super::tunnel`]) costs the master at least four system calls
//! per message (a read and a write each way), and most of its CPU per message was that kernel
//! work, so no splice could get cheaper; a worker reached directly (`DISPATCH=handoff`) does
//! none of it. See the WebSocket section of BENCHMARKS.md.
//!
//! Where: when the plain loop of [`http::server`](crate::http::server) meets a request it does not
//! serve itself, it hands the connection over with every byte it read ([`Rewind`]). Every request
//! before that one was answered whole, its response written, before the loop read on, so when the
//! upgrade arrives there, nothing is in flight on the connection and it can change hands between
//! two requests: bytes pipelined behind the upgrade (a first frame sent with the handshake, say)
//! are the worker's to read, as they would be in the splice. The worker reads the bytes first,
//! then the socket (`worker`'s side of `wire::handoff`), serving the connection with the edge's
//! client limits, as in handoff dispatch.
//!
//! Who decides: the master, exactly as for a spliced upgrade. The head must pass the edge's
//! checks ([`check::request`]); a path the master owns stays here; the version split (canary
//! weights) and the selector (strategy, sticky cookie) choose the worker from the head. A lesson
//! with a front (rate limit, access log, trace ids) keeps the splice for every upgrade: its
//! layers see each request, and a connection handed over would leave them. TLS connections keep it
//! too, since the master holds their session keys. Only a GET with `Upgrade: websocket` (RFC 6455
//! §4.1) and no body is handed over; other upgrades are spliced.
//!
//! What changes for the client: nothing on the wire, but one thing after a worker refuses the
//! upgrade (a 400 for a bad handshake, a 404): the connection stays with that worker for its
//! remaining requests, as a connection does in handoff dispatch, while a spliced refusal goes
//! back to the master's routing.
//!
//! Accounting: the handed-over connection counts as in flight to its worker, and as one of
//! `MAX_CONNECTIONS`, until the worker reports it closed over IPC (or dies): so least-connections
//! balancing, the `/health` counts and a rolling restart's drain see it as they see a splice.
//! The master closes its copy of the descriptor without a shutdown, which would end the
//! connection for the worker too. It counts as one request of its worker, with status 101.
//!
//! When the handoff cannot happen (no worker Ready now, its channel full because it is not taking
//! connections, more than [`wire::handoff::MAX_READ`](crate::wire::handoff::MAX_READ) bytes read,
//! the cap on connections reached), the connection goes on to hyper and the splice, as with
//! `WS_HANDOFF=off`: a client is never lost to a failed handoff.
//!
//! Depends on `http` (the plain loop's hand-over), `wire::handoff` and the edge's state.

use std::any::Any;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use tokio::net::TcpStream;

use super::handed_head::{PeekedHead, to_head};
use super::pool::{Dispatched, HandedOff};
use super::state::Edge;
use crate::balance::RequestInfo;
use crate::http::head::MAX_HEADERS;
use crate::http::headers::is_upgrade;
use crate::http::server::{Io, Rewind};
use crate::wire::handoff::MAX_READ;

/// Ids of handed-over connections, unique in the master for its life.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Hands `io` to a worker if its next request is a WebSocket upgrade this edge may hand over;
/// gives it back, with why not, otherwise.
pub(super) fn hand_off<I: Io>(
    edge: &Edge,
    io: Rewind<I>,
    client: SocketAddr,
) -> Result<(), (Rewind<I>, &'static str)> {
    let (unread, stream) = io.parts();
    // The client's own TCP socket, not a TLS stream (whose keys are the master's).
    let Some(stream) = (stream as &dyn Any).downcast_ref::<TcpStream>() else {
        return Err((io, "not a plain TCP connection"));
    };
    let [head, rest] = unread;
    if head.len() + rest.len() > MAX_READ {
        return Err((io, "more read than a handoff carries"));
    }
    // The head is `head` when the plain loop took it off its buffer, else the start of `rest`.
    let joined;
    let bytes: &[u8] = if head.is_empty() {
        rest
    } else if rest.is_empty() {
        head
    } else {
        joined = [&head[..], &rest[..]].concat();
        &joined
    };
    let Some(req) = websocket_head(bytes, edge.limits.max_header_size) else {
        return Err((io, "not a WebSocket handshake the master may pass on"));
    };
    if edge.master.owns(req.uri.path()) {
        return Err((io, "a path the master serves"));
    }
    let info = RequestInfo {
        method: &req.method,
        uri: &req.uri,
        headers: &req.headers,
        client,
    };
    let pool = edge.split.as_ref().map(|split| split.place(&info).pool);
    let Some(backend) = edge
        .upstreams
        .snapshot()
        .select_in(pool, &*edge.selector, &info)
    else {
        return Err((io, "no worker Ready now"));
    };
    let Some(channel) = backend.handoff() else {
        return Err((io, "the worker has no handoff channel"));
    };
    if backend.is_retired() {
        return Err((io, "the worker is draining"));
    }
    let Ok(connection) = edge.connection_slots.clone().try_acquire_owned() else {
        return Err((io, "MAX_CONNECTIONS reached"));
    };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut dispatched = Dispatched::new(backend.clone());
    dispatched.set_status(101);
    // Counted before it is sent, so the worker's report that it closed always finds it.
    backend.hold_handed_off(id, HandedOff::new(dispatched, connection));
    match channel.try_send_upgrade(stream.as_raw_fd(), id, &[&head[..], &rest[..]]) {
        Ok(()) => {
            tracing::debug!(slot = backend.slot(), id, "upgrade handed to its worker");
            // Dropping `io` closes the master's copy of the descriptor; no shutdown, which would
            // end the connection for the worker as well.
            drop(io);
            Ok(())
        }
        Err(e) => {
            drop(backend.handed_off_closed(id));
            tracing::debug!(slot = backend.slot(), error = %e, "upgrade handoff failed");
            Err((io, "the worker's handoff channel refused it"))
        }
    }
}

/// The head at the start of `bytes`, if it is a whole WebSocket handshake (RFC 6455 §4.1: a GET
/// of HTTP/1.1 with `Upgrade: websocket` and `Connection: upgrade`) that passes the edge's checks
/// and announces no body.
fn websocket_head(bytes: &[u8], max_head: usize) -> Option<PeekedHead> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => {}
        _ => return None,
    }
    // HTTP/1.1 only: `to_head` would take 1.0 too.
    if req.version != Some(1) {
        return None;
    }
    let head = to_head(&req, max_head)?;
    let websocket = head
        .headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("websocket"));
    let bodiless =
        !head.headers.contains_key(CONTENT_LENGTH) && !head.headers.contains_key(TRANSFER_ENCODING);
    (head.method == Method::GET && websocket && bodiless && is_upgrade(&head.headers))
        .then_some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    fn head(text: &str) -> Option<PeekedHead> {
        websocket_head(text.as_bytes(), 64 * 1024)
    }

    #[test]
    fn a_websocket_handshake_is_handed_over_with_bytes_behind_it() {
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n{KEY}\r\n\x01\x05"
        );
        let got = head(&req).expect("a handshake");
        assert_eq!(got.uri.path(), "/ws");
    }

    #[test]
    fn other_upgrades_bodies_methods_and_bad_heads_stay_with_the_master() {
        for req in [
            format!(
                "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n{KEY}\r\n"
            ),
            format!(
                "POST /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{KEY}\r\n"
            ),
            format!(
                "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n{KEY}\r\nabc"
            ),
            format!("GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n{KEY}\r\n"),
            format!(
                "GET /ws HTTP/1.0\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{KEY}\r\n"
            ),
            format!("GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{KEY}\r\n"),
            "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n".into(),
        ] {
            assert!(head(&req).is_none(), "handed over: {req:?}");
        }
    }
}
