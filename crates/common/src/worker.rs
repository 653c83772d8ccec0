//! The worker side: what a process started with `CLUSTER_WORKER=true` does.
//!
//! Boot: check the master is still our parent, open the inherited control channel, bind the
//! per-worker Unix socket, start serving, and only then say Ready (so the master never routes to a
//! socket that is not accepting). Loop: serve HTTP, heartbeat over IPC, obey control messages.
//! Shutdown: on `Shutdown{deadline}` stop accepting, let in-flight requests finish, close idle
//! keep-alive connections, exit 0. If the control channel closes, the master is gone and we exit
//! at once: a worker never outlives its master.
//!
//! Workers run a current-thread tokio runtime, like a Node worker's single event loop: one process
//! per core is the unit of parallelism, and a handler that blocks the thread stops the heartbeats
//! too, which is exactly what lets the master detect a hung worker.
//!
//! Depends on `wire` (the contract with the master) and `http` (the plain-request loop and
//! deadlines); never on the supervisor or the edge, the master's side of the same contract.

use std::convert::Infallible;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::breaker::WorkerLink;
use crate::error::BoxError;
use crate::http::check;
use crate::http::deadline::{self, Deadlines, Stall, Watch, Watched};
use crate::http::headers::{X_FORWARDED_FOR, write_forwarded_for};
use crate::http::server as plain;
use crate::shutdown;
use crate::wire::env as keys;
use crate::wire::handoff::{Handed, HandoffChannel, MAX_MESSAGE};
use crate::wire::ipc::{self, MasterMessage, WorkerMessage, WorkerStats};
use crate::wire::socket::WorkerSocket;

pub mod routes;

/// `GET /ping` on every worker: the smallest real response, for health probes and benchmarks.
/// [`routes`] adds the heavier workloads (`/download`, `/echo`, `/slow`, `/ws`).
pub async fn ping() -> &'static str {
    "pong\n"
}

/// Who this worker is; handed to the lesson's router builder.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    /// The slot id, 1..=WORKERS, kept by replacements.
    pub id: usize,
    /// This process's id.
    pub pid: u32,
    /// How many processes this slot had before this one.
    pub generation: u64,
    /// The version this worker runs, in a cluster of version pools (`None` otherwise): it is also
    /// put on every response as `X-App-Version`.
    pub version: Option<String>,
    /// The name of its version pool (`stable`, `canary`, …), in a cluster of version pools.
    pub pool: Option<String>,
}

/// Answers a [`MasterMessage::Request`]; the default answers with the worker's stats.
pub type RequestHandler =
    Arc<dyn Fn(&WorkerContext, serde_json::Value) -> serde_json::Value + Send + Sync>;

/// Everything the worker needs from its environment.
struct Boot {
    ctx: WorkerContext,
    ipc_fd: RawFd,
    socket: PathBuf,
    master_pid: u32,
    heartbeat: Duration,
    handoff_fd: Option<RawFd>,
    /// The edge's limits, for client connections handed over directly.
    client: ClientLimits,
}

/// What a worker enforces on a client connection handed to it (handoff mode, or a WebSocket
/// upgrade in proxy mode), where no edge stands between: the edge's own limits, from the same
/// configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientLimits {
    /// `HEADER_TIMEOUT`.
    pub header_timeout: Duration,
    /// `MAX_HEADER_SIZE`: for every head, however it arrives.
    pub max_header_size: usize,
    /// `MAX_BODY_SIZE`: a larger `Content-Length` gets 413, a larger streamed body is cut.
    pub max_body_size: u64,
    /// `BODY_TIMEOUT`: a body that sends nothing for this long is cut.
    pub body_timeout: Duration,
}

impl From<&crate::config::Config> for ClientLimits {
    fn from(c: &crate::config::Config) -> Self {
        Self {
            header_timeout: c.header_timeout,
            max_header_size: c.max_header_size,
            max_body_size: c.max_body_size,
            body_timeout: c.body_timeout,
        }
    }
}

fn parse_env(client: ClientLimits) -> Result<Boot, BoxError> {
    fn get<T: std::str::FromStr>(key: &str) -> Result<T, BoxError> {
        let raw = std::env::var(key).map_err(|_| format!("{key} is not set"))?;
        raw.parse()
            .map_err(|_| format!("{key}={raw:?} is not valid").into())
    }
    Ok(Boot {
        ctx: WorkerContext {
            id: get(keys::WORKER_ID)?,
            pid: std::process::id(),
            generation: get(keys::GENERATION)?,
            version: std::env::var(keys::APP_VERSION).ok(),
            pool: std::env::var(keys::POOL).ok(),
        },
        ipc_fd: get(keys::IPC_FD)?,
        socket: PathBuf::from(get::<String>(keys::SOCKET)?),
        master_pid: get(keys::MASTER_PID)?,
        heartbeat: Duration::from_millis(get(keys::HEARTBEAT_MS)?),
        handoff_fd: match std::env::var(keys::HANDOFF_FD) {
            Ok(_) => Some(get(keys::HANDOFF_FD)?),
            Err(_) => None,
        },
        client,
    })
}

/// Runs the worker to completion. Called by `Cluster::run` when `CLUSTER_WORKER=true`.
pub(crate) fn run(
    build: &dyn Fn(&WorkerContext) -> Router,
    on_request: Option<RequestHandler>,
    breakers: Option<WorkerLink>,
    client: ClientLimits,
) -> ExitCode {
    let boot = match parse_env(client) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: this process was started as a cluster worker but {e}");
            return ExitCode::from(2);
        }
    };
    // The master set PR_SET_PDEATHSIG before exec; if it died before that, we were re-parented
    // and nobody would ever stop us.
    if nix::unistd::getppid().as_raw() as u32 != boot.master_pid {
        eprintln!(
            "error: the master (pid {}) is gone; exiting",
            boot.master_pid
        );
        return ExitCode::from(1);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the worker runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let span = tracing::info_span!("worker", id = boot.ctx.id);
    let _entered = span.enter();
    // Inside the runtime, so a router builder may spawn tasks (sweepers, pools).
    let router = {
        let _rt = rt.enter();
        with_version(build(&boot.ctx), boot.ctx.version.as_deref())
    };
    match rt.block_on(serve(boot, router, on_request, breakers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            ExitCode::from(1)
        }
    }
}

/// Puts `X-App-Version: version` on every response, so a client (and a test) sees which version
/// answered. Only workers of a version pool get the layer; the others pay nothing.
fn with_version(router: Router, version: Option<&str>) -> Router {
    let Some(value) = version.and_then(|v| http::HeaderValue::from_str(v).ok()) else {
        return router;
    };
    router.layer(axum::middleware::map_response(
        move |mut resp: axum::response::Response| {
            let value = value.clone();
            async move {
                resp.headers_mut()
                    .insert(crate::http::headers::X_APP_VERSION.clone(), value);
                resp
            }
        },
    ))
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    in_flight: AtomicU64,
    /// The worst lateness of the lag probe since the last heartbeat.
    lag_max_us: AtomicU64,
}

async fn serve(
    boot: Boot,
    router: Router,
    on_request: Option<RequestHandler>,
    breakers: Option<WorkerLink>,
) -> Result<(), BoxError> {
    let ctx = boot.ctx.clone();
    // SAFETY: the master passed this descriptor to us alone (it cleared FD_CLOEXEC only in our
    // pre-exec hook) and nothing else in this process owns it.
    let std_stream = unsafe { StdUnixStream::from_raw_fd(boot.ipc_fd) };
    std_stream
        .set_nonblocking(true)
        .map_err(|e| format!("control channel fd {}: {e}", boot.ipc_fd))?;
    let (read, write) = tokio::net::UnixStream::from_std(std_stream)
        .map_err(|e| format!("control channel: {e}"))?
        .into_split();
    let mut inbox = ipc::Receiver::<_, MasterMessage>::new(read);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<WorkerMessage>();
    let writer = tokio::spawn(async move {
        let mut outbox = ipc::Sender::<_, WorkerMessage>::new(write);
        while let Some(msg) = out_rx.recv().await {
            if outbox.send(&msg).await.is_err() {
                break;
            }
        }
    });

    let _ = std::fs::remove_file(&boot.socket);
    let listener = UnixListener::bind(&boot.socket)
        .map_err(|e| format!("bind {}: {e}", boot.socket.display()))?;
    let counters = Arc::new(Counters::default());
    // The lesson's routes first; `routes` only answers paths the lesson left to it.
    let router = router
        .route("/ping", get(ping))
        .fallback_service(routes::router(&boot.ctx));
    let (stop_accepting, accepting) = shutdown::channel();
    let connections = TaskTracker::new();
    // Deadlines are the watchdog's (one timer per connection), not hyper's (one per request).
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true).header_read_timeout(None);
    let server = Server {
        http,
        client_deadlines: Deadlines::head(boot.client.header_timeout),
        client_limits: boot.client,
        router,
        counters: counters.clone(),
        stop: accepting,
        connections: connections.clone(),
        worker_id: http::HeaderValue::from(boot.ctx.id),
        out: out_tx.downgrade(),
    };
    let accept = tokio::spawn(accept_loop(listener, server.clone()));
    let handoff = boot
        .handoff_fd
        .map(|fd| {
            // SAFETY: like the control channel, this descriptor was made inheritable for us alone.
            let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
            HandoffChannel::new(owned).map_err(|e| format!("handoff channel fd {fd}: {e}"))
        })
        .transpose()?
        .map(|channel| tokio::spawn(handoff_loop(channel, server)));
    if let Some(link) = &breakers {
        // Before Ready: the master's first states for the circuits follow the Ready.
        link.connect(&out_tx);
    }
    let _ = out_tx.send(WorkerMessage::Ready { pid: boot.ctx.pid });
    tracing::debug!(socket = %boot.socket.display(), "worker ready");
    let beats = tokio::spawn(heartbeat(out_tx.clone(), counters.clone(), boot.heartbeat));
    let probe = tokio::spawn(lag_probe(counters.clone()));

    let deadline = loop {
        match inbox.recv().await {
            None => {
                // The master's end closed: it died. Leave now rather than serve orphaned.
                tracing::warn!("control channel closed by the master; exiting");
                std::process::exit(1);
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "bad message from the master; exiting");
                std::process::exit(1);
            }
            Some(Ok(MasterMessage::Shutdown { deadline_ms })) => {
                break Duration::from_millis(deadline_ms);
            }
            Some(Ok(MasterMessage::Reload)) => tracing::info!("reload requested"),
            Some(Ok(MasterMessage::Breaker { update })) => match &breakers {
                Some(link) => link.apply(update),
                None => tracing::debug!("a breaker update for a worker without cluster breakers"),
            },
            Some(Ok(MasterMessage::Request { id, body })) => {
                let reply = match &on_request {
                    Some(handler) => handler(&ctx, body),
                    None => serde_json::json!({
                        "requests": counters.requests.load(Ordering::Relaxed),
                        "inFlight": counters.in_flight.load(Ordering::Relaxed),
                    }),
                };
                let _ = out_tx.send(WorkerMessage::Reply { id, body: reply });
            }
        }
    };
    tracing::debug!(?deadline, "draining");
    stop_accepting.trigger();
    let _ = accept.await;
    if let Some(handoff) = handoff {
        let _ = handoff.await;
    }
    let _ = std::fs::remove_file(&boot.socket);
    connections.close();
    let drained = tokio::time::timeout(deadline, connections.wait())
        .await
        .is_ok();
    // The writer ends once every sender is gone; the heartbeat task holds one.
    beats.abort();
    probe.abort();
    let _ = beats.await;
    drop(out_tx);
    let _ = writer.await;
    if drained {
        Ok(())
    } else {
        Err(format!("requests still running after {} ms", deadline.as_millis()).into())
    }
}

/// Serves HTTP connections for this worker, whichever way they arrive.
#[derive(Clone)]
struct Server {
    /// For the master's pooled connections: no idle or header timeout. The master owns their
    /// lifetime; a worker closing an idle one could race a request the master is writing onto it.
    http: hyper::server::conn::http1::Builder,
    /// For clients handed over directly (handoff mode): the usual header and idle timeout. The
    /// master's own connections have none.
    client_deadlines: Deadlines,
    client_limits: ClientLimits,
    router: Router,
    counters: Arc<Counters>,
    stop: shutdown::Shutdown,
    connections: TaskTracker,
    /// `X-Worker-Id` for the responses on a connection handed over with its upgrade, which the
    /// master would otherwise have put there.
    worker_id: http::HeaderValue,
    /// The control channel, for the reports of handed-over upgrades that closed.
    out: mpsc::WeakUnboundedSender<WorkerMessage>,
}

impl Server {
    /// Serves one connection, plain requests by [`h1`] and the rest by hyper, until it ends or
    /// the worker drains.
    /// `client` is set for a client's own connection (handoff mode): its limits are the edge's.
    /// `edge_peer`: the client's address, for a connection the master handed over with its
    /// upgrade: its requests and responses get what the master's proxy would have added.
    fn serve<IO: plain::Io>(
        &self,
        io: IO,
        deadlines: Deadlines,
        client: Option<ClientLimits>,
        edge_peer: Option<std::net::IpAddr>,
    ) {
        let watch = Arc::new(Watch::new(&deadlines));
        let plain = PlainWorker {
            server: self.clone(),
            watch: watch.clone(),
            client,
            edge_peer: edge_peer.and_then(|ip| http::HeaderValue::try_from(ip.to_string()).ok()),
        };
        let conn = plain::PlainConn::new(plain, io);
        let stop = self.stop.clone();
        self.connections.spawn(async move {
            if let Err(e) = deadline::drive(conn, stop, &watch, deadlines).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// Heads longer than this go to hyper, whose own limit (about 400 KB) then applies.
const MAX_PLAIN_HEAD: usize = 64 * 1024;

/// One connection's requests, answered by the lesson's router.
struct PlainWorker {
    server: Server,
    watch: Arc<Watch>,
    /// A client's own connection (handoff mode), and the limits it gets.
    client: Option<ClientLimits>,
    /// A connection handed over with its upgrade: the client's IP, for `X-Forwarded-For` on its
    /// requests; its responses carry `X-Worker-Id`.
    edge_peer: Option<http::HeaderValue>,
}

impl plain::Plain for PlainWorker {
    type Body = axum::body::Body;

    fn watch(&self) -> &Watch {
        &self.watch
    }

    fn max_head(&self) -> usize {
        self.client.map_or(MAX_PLAIN_HEAD, |c| c.max_header_size)
    }

    fn max_body(&self) -> usize {
        // A client's own connection (handoff mode): past its `MAX_BODY_SIZE`, hyper's path
        // answers 413. The master's bodies are capped already.
        self.client.map_or(plain::PLAIN_BODY, |c| {
            usize::try_from(c.max_body_size).map_or(plain::PLAIN_BODY, |m| m.min(plain::PLAIN_BODY))
        })
    }

    fn body_timeout(&self) -> Option<Duration> {
        self.client.map(|c| c.body_timeout)
    }

    fn answer(
        &self,
        req: http::request::Parts,
        body: bytes::Bytes,
    ) -> impl Future<Output = http::Response<axum::body::Body>> + Send {
        let mut router = self.server.router.clone();
        let counters = self.server.counters.clone();
        async move {
            let _in_flight = OpenRequest::new(counters);
            // The handler sees the body and its `Content-Length` and `Content-Type` exactly as
            // the client (or the master) sent them.
            let body = if body.is_empty() {
                axum::body::Body::empty()
            } else {
                axum::body::Body::from(body)
            };
            let req = http::Request::from_parts(req, body);
            let resp = router
                .call(req)
                .await
                .unwrap_or_else(|never| match never {});
            final_answer(resp)
        }
    }

    fn hand_over<I: plain::Io>(self, io: plain::Rewind<I>) -> plain::Hyper {
        let PlainWorker {
            server,
            watch,
            client,
            edge_peer,
        } = self;
        let worker_id = edge_peer.as_ref().map(|_| server.worker_id.clone());
        // The master checked its own requests already; a client's get the edge's limits.
        let (max_head, max_body) = client.map_or((usize::MAX, u64::MAX), |c| {
            (c.max_header_size, c.max_body_size)
        });
        let body_timeout = client.map(|c| c.body_timeout);
        let (router, counters) = (server.router, server.counters);
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let mut router = router.clone();
                let counters = counters.clone();
                let watch = watch.clone();
                let worker_id = worker_id.clone();
                let edge_peer = edge_peer.clone();
                async move {
                    watch.busy();
                    // A client handed over directly (handoff mode) reaches this with nothing
                    // between: the same checks as the edge's (the master's own requests pass
                    // them; the head limit is the master's business, so none here).
                    let (method, uri, version) = (req.method(), req.uri(), req.version());
                    let checked = check::request(method, uri, version, req.headers(), max_head)
                        .and_then(|()| body_fits(&req, max_body));
                    if let Err(r) = checked {
                        let resp = with_worker_id(refused(r), worker_id);
                        return Ok(resp.map(|body| Watched::new(body, watch)));
                    }
                    let mut req = req;
                    if let Some(ip) = &edge_peer {
                        // As the master's proxy does: the client's address after any it sent.
                        let mut value = Vec::new();
                        write_forwarded_for(&mut value, req.headers(), ip.as_bytes());
                        if let Ok(value) = http::HeaderValue::from_bytes(&value) {
                            req.headers_mut().insert(X_FORWARDED_FOR.clone(), value);
                        }
                    }
                    if let Some(host) = authority_host(req.uri()) {
                        // RFC 9112 §3.2.2: an absolute-form target's authority is the host.
                        req.headers_mut().insert(http::header::HOST, host);
                    }
                    // A client's body that stalls is cut (the master's own never stall for long:
                    // it read small bodies whole, and cuts its clients' stalled ones).
                    let req = req.map(|body| match body_timeout {
                        Some(t) => axum::body::Body::new(http_body_util::Limited::new(
                            Stall::new(body, t),
                            cap(max_body),
                        )),
                        None => {
                            axum::body::Body::new(http_body_util::Limited::new(body, cap(max_body)))
                        }
                    });
                    let _in_flight = OpenRequest::new(counters);
                    let resp = router.call(req).await?;
                    let resp = with_worker_id(final_answer(resp), worker_id);
                    Ok::<_, Infallible>(resp.map(|body| Watched::new(body, watch)))
                }
            });
        let conn = server
            .http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        Box::pin(conn)
    }
}

/// A handler's response as a final answer: a 1xx is never one (RFC 9110 §15.2; RFC 9112 §4
/// frames it as interim, so a client would wait for the real answer that never comes), and 101 is
/// the upgrade's own. A handler that returns one has a bug: 500.
fn final_answer(mut resp: http::Response<axum::body::Body>) -> http::Response<axum::body::Body> {
    let status = resp.status();
    if status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS {
        tracing::warn!(%status, "a handler returned an informational status as its answer");
        *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        *resp.body_mut() = axum::body::Body::empty();
        resp.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    resp
}

/// `resp` with `X-Worker-Id: id`, if there is one to put.
fn with_worker_id(
    mut resp: http::Response<axum::body::Body>,
    id: Option<http::HeaderValue>,
) -> http::Response<axum::body::Body> {
    if let Some(id) = id {
        resp.headers_mut()
            .insert(crate::http::headers::X_WORKER_ID.clone(), id);
    }
    resp
}

/// `MAX_BODY_SIZE` as `Limited` takes it.
fn cap(max_body: u64) -> usize {
    usize::try_from(max_body).unwrap_or(usize::MAX)
}

/// 413 for a declared body over `MAX_BODY_SIZE`, before any of it is read (as the edge does).
fn body_fits<B>(req: &http::Request<B>, max_body: u64) -> Result<(), check::Refusal> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    match declared {
        Some(n) if n > max_body => Err(check::BODY_TOO_LARGE),
        _ => Ok(()),
    }
}

/// The `Host` an absolute-form target names (RFC 9112 §3.2.2), if it is one.
fn authority_host(uri: &http::Uri) -> Option<http::HeaderValue> {
    let authority = uri.authority()?;
    let host = match authority.port() {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_string(),
    };
    http::HeaderValue::try_from(host).ok()
}

/// The answer to a request [`check::request`] refuses, closing the connection.
fn refused(r: check::Refusal) -> http::Response<axum::body::Body> {
    let mut resp = http::Response::new(axum::body::Body::from(r.body()));
    *resp.status_mut() = r.status;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// Accepts the master's proxied connections on our Unix socket.
async fn accept_loop(listener: UnixListener, server: Server) {
    let stop = server.stop.clone().wait();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        match WorkerSocket::from_tokio(stream) {
            Ok(socket) => server.serve(socket, Deadlines::default(), None, None),
            Err(e) => tracing::warn!(error = %e, "cannot register the master's connection"),
        }
    }
}

/// Receives client connections the master accepted and passed to us: every connection in handoff
/// mode, WebSocket upgrades in proxy mode.
async fn handoff_loop(channel: HandoffChannel, server: Server) {
    let stop = server.stop.clone().wait();
    tokio::pin!(stop);
    // One buffer for the loop's life, large enough for any message (an upgrade's bytes).
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let handed = tokio::select! {
            r = channel.recv(&mut buf) => match r {
                Ok(Some(handed)) => handed,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "receiving a handed-off connection failed");
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let (fd, upgrade) = match handed {
            Handed::Fresh(fd) => (fd, None),
            Handed::Upgrade { fd, id, read } => (fd, Some((id, read))),
        };
        let std_stream = std::net::TcpStream::from(fd);
        let stream = std_stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(std_stream));
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "a handed-off descriptor is not a usable socket");
                continue;
            }
        };
        let (deadlines, limits) = (server.client_deadlines, Some(server.client_limits));
        match upgrade {
            None => server.serve(stream, deadlines, limits, None),
            Some((id, read)) => {
                let peer = stream.peer_addr().ok().map(|a| a.ip());
                // Read first what the master read of it, as if this worker had read it itself.
                let io = Reported {
                    io: plain::Rewind::new(read, stream),
                    _report: ClosedReport {
                        id,
                        out: server.out.clone(),
                    },
                };
                server.serve(io, deadlines, limits, peer);
            }
        }
    }
}

/// A connection handed over with its upgrade (proxy mode): the master counts it in flight to
/// this worker until it hears that it closed, which it does when this is dropped, whatever the
/// connection became (a WebSocket, or a keep-alive connection after a refused upgrade).
struct Reported<I> {
    io: I,
    _report: ClosedReport,
}

struct ClosedReport {
    id: u64,
    /// Weak: a socket still open when the worker exits must not keep the control channel's writer
    /// waiting for it.
    out: mpsc::WeakUnboundedSender<WorkerMessage>,
}

impl Drop for ClosedReport {
    fn drop(&mut self) {
        if let Some(out) = self.out.upgrade() {
            let _ = out.send(WorkerMessage::HandedOffClosed { id: self.id });
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Reported<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Reported<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Counts a request from arrival until its handler finishes or is dropped (client gone).
struct OpenRequest(Arc<Counters>);

impl OpenRequest {
    fn new(counters: Arc<Counters>) -> Self {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often the lag probe ticks: fine enough to catch a 100 ms stall between heartbeats that may be
/// seconds apart.
const LAG_PROBE: Duration = Duration::from_millis(100);

/// Measures runtime lag: how late a 100 ms timer fires. On a current-thread runtime anything that
/// holds the thread (a blocking call, a long computation) delays it by that long.
async fn lag_probe(counters: Arc<Counters>) {
    let mut next = Instant::now() + LAG_PROBE;
    loop {
        tokio::time::sleep_until(next.into()).await;
        let late = Instant::now().saturating_duration_since(next);
        counters
            .lag_max_us
            .fetch_max(late.as_micros() as u64, Ordering::Relaxed);
        next = Instant::now() + LAG_PROBE;
    }
}

/// Beats every `every`, reporting the worst lag seen since the previous beat.
async fn heartbeat(
    out: mpsc::UnboundedSender<WorkerMessage>,
    counters: Arc<Counters>,
    every: Duration,
) {
    let mut next = Instant::now() + every;
    loop {
        tokio::time::sleep_until(next.into()).await;
        let lag = Instant::now().saturating_duration_since(next).as_micros() as u64;
        let stats = WorkerStats {
            requests: counters.requests.load(Ordering::Relaxed),
            in_flight: counters.in_flight.load(Ordering::Relaxed),
            runtime_lag_us: counters.lag_max_us.swap(0, Ordering::Relaxed).max(lag),
        };
        if out.send(WorkerMessage::Heartbeat { stats }).is_err() {
            return;
        }
        next += every;
        if next < Instant::now() {
            next = Instant::now() + every;
        }
    }
}
