//! Proxy dispatch (`DISPATCH=proxy`, the default): each client connection is served here, its
//! plain requests by the lean loop of [`http::server`](crate::http::server) and the rest by hyper,
//! and every request is either answered by the master's own routes or forwarded to a worker.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use http::{Request, Response, request};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::ServiceExt;

use super::accept::{Listening, accept_until};
use super::proxy::{self, Peer};
use super::request_body::RequestBody;
use super::response_body::EdgeBody;
use super::state::Edge;
use crate::http::check;
use crate::http::deadline::{self, Deadlines, Graceful, Watch, Watched};
use crate::http::recycle::{Recycled, RequestHead};
use crate::http::server::{self as plain, PlainConn};
use crate::shutdown::Shutdown;

impl Edge {
    async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<EdgeBody> {
        // Every request the plain loop did not pass comes here: hyper parsed it, but left
        // RFC 9112's checks (Host, transfer codings, methods, the head limit) to us.
        let (method, uri, version) = (req.method(), req.uri(), req.version());
        let max_head = self.limits.max_header_size;
        if let Err(refusal) = check::request(method, uri, version, req.headers(), max_head) {
            return proxy::refused(refusal);
        }
        match &self.front {
            None => self.route(req, peer).await,
            Some(front) => {
                front
                    .serve(req, peer.addr, |req| self.route(req, peer))
                    .await
            }
        }
    }

    /// To the master's own routes or to a worker.
    async fn route(&self, req: Request<Incoming>, peer: &Peer) -> Response<EdgeBody> {
        if self.master.owns(req.uri().path()) {
            return self.master_route(req.map(axum::body::Body::new)).await;
        }
        proxy::forward(self, req, peer).await
    }

    /// [`Edge::handle`] for a request the plain loop read, with its whole body (often none).
    ///
    /// Not an `async fn`: one would hold `req` and `body` a second time beside the future it
    /// awaits, and this future's size is copied on every request (see `http::recycle`). The
    /// front's layers, when a lesson has them, add a kilobyte of state: they get a block of their
    /// own, so a request without them does not carry that room.
    fn handle_plain<'a>(
        &'a self,
        req: request::Parts,
        body: Bytes,
        peer: &'a Peer,
    ) -> impl Future<Output = Response<EdgeBody>> + Send + 'a {
        match &self.front {
            None => Either::Left(self.route_plain(req, body, peer)),
            Some(front) => {
                let req = Request::from_parts(req, body);
                let route = move |req: Request<Bytes>| {
                    let (parts, body) = req.into_parts();
                    self.route_plain(parts, body, peer)
                };
                Either::Right(Recycled::new(front.serve(req, peer.addr, route)))
            }
        }
    }

    /// [`Edge::route`] for a request whose body was read whole with its head. Not an `async fn`,
    /// for the reason [`Edge::handle_plain`] is not.
    fn route_plain<'a>(
        &'a self,
        req: request::Parts,
        body: Bytes,
        peer: &'a Peer,
    ) -> impl Future<Output = Response<EdgeBody>> + Send + 'a {
        if self.master.owns(req.uri.path()) {
            let body = if body.is_empty() {
                axum::body::Body::empty()
            } else {
                axum::body::Body::from(body)
            };
            return Either::Left(self.master_route(Request::from_parts(req, body)));
        }
        // Whole, and its `Content-Length` already the one the client sent: sent on as it is,
        // in the write that carries the head.
        let body = if body.is_empty() {
            RequestBody::Empty
        } else {
            RequestBody::Full(Some(body))
        };
        Either::Right(proxy::forward_parts(self, RequestHead(req), body, peer))
    }

    async fn master_route(&self, req: Request<axum::body::Body>) -> Response<EdgeBody> {
        let resp = self
            .master
            .router
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|never| match never {});
        resp.map(EdgeBody::Axum)
    }
}

/// hyper serving `io` with `builder`'s settings: every request goes through [`Edge::handle`], and
/// the connection's deadlines are `peer.watch`'s (see [`deadline`]: hyper's own header timer is
/// left off).
fn hyper_connection<I>(
    edge: Arc<Edge>,
    builder: &http1::Builder,
    io: I,
    peer: Peer,
) -> impl Future<Output = hyper::Result<()>> + Graceful + Send + 'static
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let (edge, peer) = (edge.clone(), peer.clone());
        async move {
            peer.watch.busy();
            let resp = edge.handle(req, &peer).await;
            Ok::<_, Infallible>(resp.map(|body| Watched::new(body, peer.watch)))
        }
    });
    builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
}

/// A client connection's plain requests go through [`Edge::handle_plain`]; the
/// rest of the connection after one that is not plain, through hyper and [`Edge::handle`].
struct PlainEdge {
    edge: Arc<Edge>,
    /// Shared by every connection of the edge thread: hyper's settings are 100 bytes.
    builder: Arc<http1::Builder>,
    peer: Peer,
    /// One request, then close (a connection the master keeps in handoff mode).
    once: bool,
}

impl plain::Plain for PlainEdge {
    type Body = EdgeBody;

    fn watch(&self) -> &Watch {
        &self.peer.watch
    }

    fn max_head(&self) -> usize {
        self.edge.limits.max_header_size
    }

    fn keep_alive(&self) -> bool {
        !self.once
    }

    fn max_body(&self) -> usize {
        // Bodies the edge would not read whole (past `BODY_BUFFER`) or refuses (past
        // `MAX_BODY_SIZE`, 413) stay on hyper's path, which does both.
        let limits = &self.edge.limits;
        let bound = limits.body_buffer.min(limits.max_body_size);
        usize::try_from(bound).map_or(plain::PLAIN_BODY, |b| b.min(plain::PLAIN_BODY))
    }

    fn body_timeout(&self) -> Option<Duration> {
        Some(self.edge.limits.body_timeout)
    }

    fn answer(
        &self,
        req: request::Parts,
        body: Bytes,
    ) -> impl Future<Output = Response<EdgeBody>> + Send {
        self.edge.handle_plain(req, body, &self.peer)
    }

    fn hand_over<I: plain::Io>(self, io: plain::Rewind<I>) -> plain::Hyper {
        // A WebSocket upgrade may leave for its worker here, between two requests (see
        // `upgrade`); anything else, or an upgrade that cannot, is hyper's.
        let io = if self.edge.upgrade_handoff && !self.once {
            match super::upgrade::hand_off(&self.edge, io, self.peer.addr) {
                Ok(()) => return Box::pin(crate::http::deadline::HandedOver),
                Err((io, why)) => {
                    tracing::debug!(why, "connection left to hyper");
                    io
                }
            }
        } else {
            io
        };
        Box::pin(hyper_connection(self.edge, &self.builder, io, self.peer))
    }
}

/// Serves the one request of a connection the master keeps in handoff mode (its own routes, or a
/// head it would not route), as proxy mode serves any: the plain loop, then hyper. `builder` says
/// no keep-alive; `header_timeout` is what is left of the first head's deadline.
pub(crate) fn serve_connection(
    edge: Arc<Edge>,
    builder: &http1::Builder,
    stream: TcpStream,
    client: SocketAddr,
    stop: Shutdown,
    header_timeout: Duration,
) -> impl Future<Output = ()> + Send + 'static {
    let deadlines = Deadlines::edge(header_timeout, edge.limits.upstream_timeout);
    let peer = Peer::new(client, &deadlines);
    let watch = peer.watch.clone();
    let plain = PlainEdge {
        edge,
        builder: Arc::new(builder.clone()),
        peer,
        once: true,
    };
    let conn = PlainConn::new(plain, stream);
    async move {
        if let Err(e) = deadline::drive(conn, stop, &watch, deadlines).await {
            tracing::debug!(%client, error = %e, "client connection ended with an error");
        }
    }
}

/// hyper's settings for the edge's client connections: its own header timer is off (the
/// connection's [`deadline`] times heads instead, without a timer per request), and its buffer is
/// capped at `MAX_HEADER_SIZE` so an oversized head is refused (431) rather than buffered.
pub(crate) fn hyper_builder(edge: &Edge, keep_alive: bool) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .header_read_timeout(None)
        .max_buf_size(edge.limits.max_header_size)
        .keep_alive(keep_alive);
    builder
}

/// Proxy mode: serves HTTP on `listener` until `shutdown` fires, forwarding requests to workers;
/// then lets in-flight requests finish for up to `drain`. True if every connection closed in time.
pub(crate) async fn serve(at: Listening, edge: Arc<Edge>) -> bool {
    let builder = Arc::new(hyper_builder(&edge, true));
    let shutdown = at.shutdown.clone();
    accept_until(at, &edge.connection_slots, |stream, client| {
        let _ = stream.set_nodelay(true);
        let deadlines = edge.limits.deadlines();
        let peer = Peer::new(client, &deadlines);
        let watch = peer.watch.clone();
        let plain = PlainEdge {
            edge: edge.clone(),
            builder: builder.clone(),
            peer,
            once: false,
        };
        let stop = shutdown.clone();
        // Each connection's task holds its future for the connection's whole life, idle or not,
        // so a plain connection's holds no room for a TLS handshake: rustls's state is over a
        // kilobyte, and it is boxed, for TLS connections only (the handshake's box is the task's
        // until the connection ends, as the plain future's would be).
        match &edge.tls {
            None => Either::Left(connection(
                PlainConn::new(plain, stream),
                stop,
                watch,
                deadlines,
                client,
            )),
            Some(tls) => {
                let (tls, within) = (tls.clone(), edge.limits.header_timeout);
                Either::Right(Box::pin(async move {
                    let Some(stream) = super::tls::handshake(&tls, stream, within).await else {
                        return;
                    };
                    let conn = PlainConn::new(plain, stream);
                    connection(conn, stop, watch, deadlines, client).await;
                }))
            }
        }
    })
    .await
}

/// Serves one client connection with its deadlines until it ends.
async fn connection(
    conn: PlainConn,
    stop: Shutdown,
    watch: Arc<Watch>,
    deadlines: Deadlines,
    client: SocketAddr,
) {
    if let Err(e) = deadline::drive(conn, stop, &watch, deadlines).await {
        tracing::debug!(%client, error = %e, "client connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `make` returns, without running it.
    fn size_of_output<A, B, C, F: Future>(_make: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A proxied request's whole state is copied into its heap block on every request, so its
    /// size is a cost per request: 3.7 KB before the front's layers got a block of their own and
    /// the arguments held twice by `async fn`s were cut (measured here, in a test build).
    #[test]
    fn the_answer_future_stays_small() {
        let answer = size_of_output(
            |edge: &'static Edge, peer: &'static Peer, req: request::Parts| {
                edge.handle_plain(req, Bytes::new(), peer)
            },
        );
        assert!(answer <= 2048, "a plain request's answer is {answer} bytes");
    }

    /// Each client connection holds its plain loop's future for its whole life, idle or not: 1.7
    /// KB in a test build before `write_response` stopped holding the response twice.
    #[test]
    fn the_connection_future_stays_small() {
        let conn = plain::connection_future_size::<PlainEdge, TcpStream>();
        assert!(conn <= 1536, "a client connection's future is {conn} bytes");
    }
}
