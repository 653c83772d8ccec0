//! The master's HTTP edge: accepts clients on `HOST:PORT` and routes every request.
//!
//! Layout:
//! - `mod.rs`: the accept loop, connection limits and timeouts, master-owned routes;
//! - [`pool`]: workers as upstreams, each with a bounded keep-alive connection pool;
//! - `upstream`: the HTTP/1.1 client side of one pooled connection, driven by the request's task;
//! - [`proxy`]: forwarding one request (headers, retry, errors, upgrades);
//! - [`body`]: the request and response body types, with no boxing on the proxied path;
//! - [`handoff`]: the other dispatch mode, passing whole connections to workers (`DISPATCH=handoff`).
//!
//! Requests whose path the lesson registered as master-owned (`/health`, stats, admin) are answered
//! here by an axum `Router`, because only the master sees the whole cluster. Everything else goes to
//! a worker chosen by the [`Selector`](crate::balance::Selector).

pub mod body;
pub mod handoff;
pub mod pool;
pub mod proxy;
mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{Request, Response, request};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub use body::{EdgeBody, RequestBody};
pub use pool::Backend;

use crate::balance::Selector;
use crate::config::{Config, Dispatch};
use crate::shutdown::Shutdown;
use crate::{h1, watchdog};

/// The workers that may take traffic right now. Replaced whole (copy-on-write) when a worker
/// becomes ready or leaves, so the request path only clones an `Arc` under a read lock.
#[derive(Debug, Default)]
pub struct Upstreams {
    ready: RwLock<Arc<[Arc<Backend>]>>,
}

impl Upstreams {
    /// The current ready set.
    pub fn snapshot(&self) -> Arc<[Arc<Backend>]> {
        self.ready.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds `backend`, replacing any other process of the same slot.
    pub(crate) fn insert(&self, backend: Arc<Backend>) {
        let mut ready = self.ready.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<_> = ready
            .iter()
            .filter(|b| b.slot() != backend.slot())
            .cloned()
            .collect();
        next.push(backend);
        next.sort_by_key(|b| b.slot());
        *ready = next.into();
    }

    /// Removes the process `pid` if it is in the set; true if it was.
    pub(crate) fn remove_pid(&self, pid: u32) -> bool {
        let mut ready = self.ready.write().unwrap_or_else(|p| p.into_inner());
        if !ready.iter().any(|b| b.pid() == pid) {
            return false;
        }
        let next: Vec<_> = ready.iter().filter(|b| b.pid() != pid).cloned().collect();
        *ready = next.into();
        true
    }
}

/// Paths the master answers itself, and the router that answers them.
#[derive(Clone, Default)]
pub struct MasterRoutes {
    exact: Vec<String>,
    prefixes: Vec<String>,
    router: axum::Router,
}

impl MasterRoutes {
    /// `paths` are matched exactly, except those ending in `/` which match as prefixes
    /// (`/admin/` takes `/admin/anything`). `router` must answer all of them.
    pub fn new(paths: &[&str], router: axum::Router) -> Self {
        let (prefixes, exact) = paths
            .iter()
            .map(|p| p.to_string())
            .partition(|p| p.ends_with('/') && p.len() > 1);
        Self {
            exact,
            prefixes,
            router,
        }
    }

    /// Adds another set of routes in front.
    pub fn merge(mut self, other: MasterRoutes) -> Self {
        self.exact.extend(other.exact);
        self.prefixes.extend(other.prefixes);
        self.router = self.router.merge(other.router);
        self
    }

    fn owns(&self, path: &str) -> bool {
        self.exact.iter().any(|p| p == path) || self.prefixes.iter().any(|p| path.starts_with(p))
    }
}

/// Settings the edge needs, taken from [`Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub upstream_timeout: Duration,
    pub header_timeout: Duration,
    pub max_header_size: usize,
    pub max_body_size: u64,
}

impl From<&Config> for Limits {
    fn from(c: &Config) -> Self {
        Self {
            upstream_timeout: c.upstream_timeout,
            header_timeout: c.header_timeout,
            max_header_size: c.max_header_size,
            max_body_size: c.max_body_size,
        }
    }
}

/// Everything a request handler needs; shared by every connection.
pub(crate) struct Edge {
    pub limits: Limits,
    /// `MAX_CONNECTIONS` permits, shared by every edge thread: the cap is on the whole master,
    /// however many threads accept.
    pub connection_slots: Arc<Semaphore>,
    pub upstreams: Arc<Upstreams>,
    pub selector: Arc<dyn Selector>,
    pub master: MasterRoutes,
    pub retry: proxy::RetryBudget,
}

impl Edge {
    async fn handle(&self, req: Request<Incoming>, peer: &proxy::Peer) -> Response<EdgeBody> {
        if self.master.owns(req.uri().path()) {
            return self.master_route(req.map(axum::body::Body::new)).await;
        }
        proxy::forward(self, req, peer).await
    }

    /// [`Edge::handle`] for a request without a body, read by [`h1`].
    async fn handle_plain(&self, req: request::Parts, peer: &proxy::Peer) -> Response<EdgeBody> {
        if self.master.owns(req.uri.path()) {
            let req = Request::from_parts(req, axum::body::Body::empty());
            return self.master_route(req).await;
        }
        proxy::forward_parts(self, req, RequestBody::Empty, peer).await
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
/// the connection's deadlines are `peer.watch`'s (see [`watchdog`]: hyper's own header timer is
/// left off).
fn hyper_connection<I>(
    edge: Arc<Edge>,
    builder: &http1::Builder,
    io: I,
    peer: proxy::Peer,
) -> impl Future<Output = hyper::Result<()>> + watchdog::Graceful + Send + 'static
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let (edge, peer) = (edge.clone(), peer.clone());
        async move {
            peer.watch.busy();
            let resp = edge.handle(req, &peer).await;
            Ok::<_, Infallible>(resp.map(|body| watchdog::Watched::new(body, peer.watch)))
        }
    });
    builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
}

/// A client connection's plain requests go through [`Edge::handle_plain`] (see [`h1`]); the
/// rest of the connection after one that is not plain, through hyper and [`Edge::handle`].
struct PlainEdge {
    edge: Arc<Edge>,
    builder: http1::Builder,
    peer: proxy::Peer,
}

impl h1::Plain for PlainEdge {
    type Body = EdgeBody;

    fn watch(&self) -> &watchdog::Watch {
        &self.peer.watch
    }

    fn max_head(&self) -> usize {
        self.edge.limits.max_header_size
    }

    fn answer(&self, req: request::Parts) -> impl Future<Output = Response<EdgeBody>> + Send {
        self.edge.handle_plain(req, &self.peer)
    }

    fn hand_over<I: h1::Io>(self, io: h1::Rewind<I>) -> h1::Hyper {
        Box::pin(hyper_connection(self.edge, &self.builder, io, self.peer))
    }
}

/// Serves one client connection with hyper until it ends or `stop` fires.
fn serve_connection(
    edge: Arc<Edge>,
    builder: &http1::Builder,
    stream: TcpStream,
    client: SocketAddr,
    stop: Shutdown,
) -> impl Future<Output = ()> + Send + 'static {
    let deadlines = watchdog::Deadlines::from(&edge.limits);
    let peer = proxy::Peer::new(client, &deadlines);
    let watch = peer.watch.clone();
    let conn = hyper_connection(edge, builder, stream, peer);
    async move {
        if let Err(e) = watchdog::drive(conn, stop, &watch, deadlines).await {
            tracing::debug!(%client, error = %e, "client connection ended with an error");
        }
    }
}

/// Binds `addr` once per edge thread with `SO_REUSEPORT`, so the kernel spreads new connections
/// evenly over the threads. (With one shared listener, measured: all 64 connections of a load test
/// went to whichever thread happened to be accepting, and the other thread sat idle.)
///
/// `SO_REUSEPORT` would also let a second cluster started by the same user share the port
/// silently, so the port is first claimed by an ordinary bind, which fails with "address in use"
/// if anyone holds it, and which picks the port when `addr` asks for port 0.
pub(crate) fn bind(addr: SocketAddr, threads: usize) -> std::io::Result<Vec<TcpListener>> {
    let at = std::net::TcpListener::bind(addr)?.local_addr()?;
    let mut listeners = Vec::with_capacity(threads.max(1));
    for _ in 0..threads.max(1) {
        let socket = if at.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(at)?;
        listeners.push(socket.listen(1024)?);
    }
    Ok(listeners)
}

/// Starts one edge thread per listener (see [`bind`]), each running its own current-thread
/// runtime and accept loop (`dispatch` says which). Resolves, once `shutdown` fired and every
/// thread finished draining, to whether all of them drained within `drain`.
///
/// Why threads of their own rather than one work-stealing runtime: a proxied request involves two
/// connections, the client's and the worker's, each driven by its own task. On a work-stealing
/// runtime those tasks land on different threads and every request pays for cross-thread wake-ups
/// (measured: ~30% of the master's CPU in the scheduler). Here a thread owns its clients and its
/// share of upstream connections, so a request never leaves its thread; the kernel spreads new
/// connections over the threads that are waiting in accept.
pub(crate) fn spawn_threads(
    listeners: Vec<TcpListener>,
    edge: Arc<Edge>,
    shutdown: Shutdown,
    drain: Duration,
    dispatch: Dispatch,
) -> std::io::Result<impl Future<Output = bool>> {
    let span = tracing::Span::current();
    let mut finished = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        let listener = listener.into_std()?;
        let (edge, shutdown, span) = (edge.clone(), shutdown.clone(), span.clone());
        let (done, finish) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("edge-{index}"))
            .spawn(move || {
                let _span = span.entered();
                pool::set_shard(index);
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start an edge runtime");
                        let _ = done.send(false);
                        return;
                    }
                };
                let drained = rt.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot register the listener");
                            return false;
                        }
                    };
                    match dispatch {
                        Dispatch::Proxy => serve(listener, edge, shutdown, drain).await,
                        Dispatch::Handoff => handoff::serve(listener, edge, shutdown, drain).await,
                    }
                });
                let _ = done.send(drained);
            })?;
        finished.push(finish);
    }
    Ok(async move {
        let mut all = true;
        for finish in finished {
            all &= finish.await.unwrap_or(false);
        }
        all
    })
}

/// Accepts until `shutdown` fires and runs `serve_one` for each connection, never serving more
/// at once than `slots` (shared with the other edge threads) has permits. At the cap each thread
/// holds at most one accepted connection unserved and accepts no more, so further clients wait in
/// the kernel's backlog rather than as sockets we cannot serve. Then waits up to `drain` for the
/// connections still open; returns whether they all finished in time. Both dispatch modes accept
/// this way.
pub(crate) async fn accept_until<F, Fut>(
    listener: TcpListener,
    slots: &Arc<Semaphore>,
    shutdown: Shutdown,
    drain: Duration,
    mut serve_one: F,
) -> bool
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let connections = TaskTracker::new();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let (stream, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // The slot is taken after the accept, not before: a thread idling in accept while holding
        // a slot could leave a connection that the kernel queued on another thread's listener
        // waiting although the master is below its cap. So each thread accepts one connection
        // and, if the cap is reached, holds it unserved until a slot frees.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut stop => break,
        };
        let served = serve_one(stream, client);
        connections.spawn(async move {
            served.await;
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    tokio::select! {
        () = connections.wait() => true,
        () = tokio::time::sleep(drain) => {
            tracing::warn!(?drain, "client connections still open after the shutdown timeout");
            false
        }
    }
}

/// Proxy mode: serves HTTP on `listener` until `shutdown` fires, forwarding requests to workers;
/// then lets in-flight requests finish for up to `drain`. True if every connection closed in time.
pub(crate) async fn serve(
    listener: TcpListener,
    edge: Arc<Edge>,
    shutdown: Shutdown,
    drain: Duration,
) -> bool {
    let mut builder = http1::Builder::new();
    builder
        .header_read_timeout(None)
        .max_buf_size(edge.limits.max_header_size)
        .keep_alive(true);
    accept_until(
        listener,
        &edge.connection_slots,
        shutdown.clone(),
        drain,
        |stream, client| {
            let _ = stream.set_nodelay(true);
            let deadlines = watchdog::Deadlines::from(&edge.limits);
            let peer = proxy::Peer::new(client, &deadlines);
            let watch = peer.watch.clone();
            let plain = PlainEdge {
                edge: edge.clone(),
                builder: builder.clone(),
                peer,
            };
            let conn = h1::Conn::new(plain, stream);
            let stop = shutdown.clone();
            async move {
                if let Err(e) = watchdog::drive(conn, stop, &watch, deadlines).await {
                    tracing::debug!(%client, error = %e, "client connection ended with an error");
                }
            }
        },
    )
    .await
}
