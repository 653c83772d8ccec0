//! A cluster for the runtime's own tests, with routes that misbehave on request.
//!
//! Run with `cargo run -p test-support --bin fixture`. Environment knobs (besides the runtime's):
//! - `FIXTURE_CRASH_SLOT=N`: the worker in slot N exits with status 3 as it starts, every time;
//! - `FIXTURE_FAIL_START_FILE=PATH`: while PATH exists, every new worker exits with status 3 at start.
//!
//! Routes that break the worker on purpose: `/abort` (SIGABRT, a query of death; `?stall=true`
//! hangs up and stops first, a process caught dying), `/exit?code=N`,
//! `/hang?slot=N`, `/garbage?slot=N`, `/alloc?mb=N`.
//!
//! Routes for the hostile-input tests: `/length` answers once it has the whole body; `/smuggled?tag=T` records that the worker served it (the
//! tags are in every IPC reply once there are any, `"smuggled"`, so a test can ask each slot through
//! `/fixture/ask?slot=N` whether a request it never sent reached a worker); `/lying?kind=short`
//! announces 100,000 bytes and sends 5; `/lying?kind=long` announces 20,000 and sends more, a
//! response followed by garbage.
//!
//! Every cluster event is printed to stdout as `event: {json}`, so tests can follow the stream.
//! `/fixture/autoscale` answers `ClusterHandle::autoscale()` as JSON (`null` without `AUTOSCALE`).

use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, Request};
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use common::config::{Config, Defaults};
use common::metrics::{Completion, Observer, Outcome};
use common::{Cluster, MasterRoutes, WorkerContext};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts what the edge reports through the observer hook.
#[derive(Default)]
struct Tally {
    complete: AtomicU64,
    failed: AtomicU64,
    abandoned: AtomicU64,
    errors: AtomicU64,
}

impl Observer for Tally {
    fn on_complete(&self, c: &Completion) {
        let n = match c.outcome {
            Outcome::Complete => &self.complete,
            Outcome::Failed => &self.failed,
            Outcome::Abandoned => &self.abandoned,
        };
        n.fetch_add(1, Ordering::Relaxed);
        if c.is_error() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() -> ExitCode {
    let config = Config::from_env_or_exit(Defaults {
        workers: 2,
        port: 8000,
    });
    let tally = Arc::new(Tally::default());
    let seen = tally.clone();
    let observed = get(move || async move {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        axum::Json(json!({
            "complete": n(&seen.complete),
            "failed": n(&seen.failed),
            "abandoned": n(&seen.abandoned),
            "errors": n(&seen.errors),
        }))
    });
    Cluster::new("fixture", config)
        .worker(worker)
        .observe(tally)
        .on_request(|ctx, body| {
            let slow = SLOW_RUNNING.load(Ordering::Relaxed);
            let smuggled = SMUGGLED.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut reply = json!({ "worker": ctx.id, "asked": body, "slow": slow });
            if body == "connections" {
                reply["connections"] = json!(connection_ids());
            }
            // Only once some were served, so a reply is what it always was until a smuggling
            // test records a tag.
            if !smuggled.is_empty() {
                reply["smuggled"] = json!(smuggled);
            }
            reply
        })
        .master(|handle| {
            // Asks a worker over IPC: GET /fixture/ask?slot=N[&what=connections]
            let asking = handle.clone();
            let ask = get(move |Query(q): Query<Slot>| {
                let handle = asking.clone();
                async move {
                    match handle
                        .request(
                            q.slot,
                            json!(q.what.as_deref().unwrap_or("ping")),
                            Duration::from_secs(2),
                        )
                        .await
                    {
                        Ok(reply) => axum::Json(reply).into_response(),
                        Err(e) => {
                            (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response()
                        }
                    }
                }
            });
            // The autoscaler's state (`AUTOSCALE`), as an admin route would show it.
            let scaling = handle.clone();
            let autoscale = get(move || {
                let status = scaling.autoscale();
                async move { axum::Json(status) }
            });
            let router = Router::new()
                .route("/fixture/ask", ask)
                .route("/fixture/observed", observed)
                .route("/fixture/autoscale", autoscale);
            let owned = ["/fixture/ask", "/fixture/observed", "/fixture/autoscale"];
            MasterRoutes::new(&owned, router)
        })
        .on_start(|handle| {
            let mut events = handle.events();
            tokio::spawn(async move {
                while let Ok(ev) = events.recv().await {
                    if let Ok(line) = serde_json::to_string(&ev) {
                        println!("event: {line}");
                    }
                }
            });
        })
        .run()
}

fn worker(ctx: &WorkerContext) -> Router {
    let crash_slot = std::env::var("FIXTURE_CRASH_SLOT").ok();
    let fail_file = std::env::var_os("FIXTURE_FAIL_START_FILE");
    if crash_slot.as_deref() == Some(ctx.id.to_string().as_str())
        || fail_file.is_some_and(|f| std::path::Path::new(&f).exists())
    {
        say(&format!(
            "fixture: worker {} failing at start on purpose",
            ctx.id
        ));
        std::process::exit(3);
    }
    let (id, pid) = (ctx.id, ctx.pid);
    Router::new()
        .route(
            "/whoami",
            get(move || async move { axum::Json(json!({ "worker": id, "pid": pid })) }),
        )
        .route(
            "/slow",
            get(move |Query(q): Query<Ms>| async move {
                SLOW_RUNNING.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(q.ms)).await;
                SLOW_RUNNING.fetch_sub(1, Ordering::Relaxed);
                axum::Json(json!({ "worker": id, "slept": q.ms }))
            }),
        )
        .route("/echo", post(|req: Request| async move { req.into_body() }))
        .route(
            "/length",
            // Reads the whole body before answering (unlike /echo, which streams it back).
            post(|body: bytes::Bytes| async move { format!("{} bytes\n", body.len()) }),
        )
        .route(
            "/chunks",
            get(|Query(q): Query<Count>| async move {
                // A body of unknown length, written a piece at a time: sent chunked.
                let pieces = futures_util::stream::unfold(0, move |i| async move {
                    if i == q.n {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Some((Ok::<_, std::io::Error>(format!("piece {i}\n")), i + 1))
                });
                axum::body::Body::from_stream(pieces)
            }),
        )
        .route(
            "/headers",
            get(|headers: axum::http::HeaderMap| async move {
                let map: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("<binary>"))))
                    .collect();
                axum::Json(map)
            }),
        )
        .route(
            "/status",
            // Any method, and a body is never read: the answer comes before a large body is in.
            any(|Query(q): Query<Code>| async move {
                axum::http::StatusCode::from_u16(q.code)
                    .unwrap_or(axum::http::StatusCode::BAD_REQUEST)
            }),
        )
        .route(
            "/garbage",
            get(move |Query(q): Query<Slot>| async move {
                // Only the named slot misbehaves: a retry of this request on another worker
                // must not break that one too.
                if q.slot == id {
                    garbage().await
                } else {
                    "not me\n".to_string()
                }
            }),
        )
        .route(
            "/alloc",
            get(|Query(q): Query<Mb>| async move {
                // Written, not just reserved, so the pages are resident and RSS really grows.
                let block = vec![1u8; q.mb << 20];
                HELD.lock().unwrap_or_else(|p| p.into_inner()).push(block);
                format!("holding {} MiB more\n", q.mb)
            }),
        )
        .route(
            "/hang",
            get(move |Query(q): Query<Slot>| async move {
                if q.slot == id {
                    // Block the worker's only runtime thread: no more heartbeats.
                    std::thread::sleep(Duration::from_secs(120));
                }
                "not me\n"
            }),
        )
        .route(
            "/smuggled",
            any(|Query(q): Query<Tag>| async move {
                SMUGGLED
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(q.tag);
                "smuggled\n"
            }),
        )
        .route(
            "/lying",
            get(|Query(q): Query<Kind>| async move {
                match q.kind.as_str() {
                    "short" => Lying::new(100_000, vec![b"short".to_vec()]),
                    _ => Lying::new(
                        20_000,
                        vec![
                            vec![b'a'; 20_000],
                            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nsmuggled\n".to_vec(),
                        ],
                    ),
                }
            }),
        )
        .route("/abort", get(abort))
        .route(
            "/exit",
            // Exits with a status code, as a worker with a fatal bug would. Any method: a POST is
            // not resent, so it kills exactly one worker.
            any(|Query(q): Query<Code>| exit(q.code)),
        )
        .route(
            "/ws",
            any(move |ws: WebSocketUpgrade| async move { ws.on_upgrade(move |s| echo(s, id)) }),
        )
}

#[derive(serde::Deserialize)]
struct Abort {
    #[serde(default)]
    stall: bool,
}

/// A "query of death": aborts the worker serving it (SIGABRT, a crash of its own), naming the
/// request that did it (the edge's `X-Request-Id`).
///
/// With `?stall=true` the worker is caught part-way through dying, as the kernel can leave a
/// process under load: its connections are hung up, so the master sees the request lost, but the
/// process stops (SIGSTOP) before it exits, still listed as Ready and holding whatever is sent to
/// it next. It aborts once continued (SIGCONT).
async fn abort(Query(q): Query<Abort>, headers: axum::http::HeaderMap) -> &'static str {
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    if q.stall {
        hang_up_connections();
        say(&format!(
            "fixture: pid {} stalled on request {id}",
            std::process::id()
        ));
        // The whole process stops here, every thread with it.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
    say(&format!("fixture: aborting on request {id}"));
    std::process::abort()
}

/// One line to stderr in one `write(2)`. Tests read these lines from the stderr the master and
/// every worker share: `eprintln!` writes an unbuffered stderr a piece at a time, and another
/// process's line written between two pieces split this one (a pid read as a timestamp). A
/// pipe keeps a write of at most `PIPE_BUF` bytes whole.
fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// Hangs up every HTTP connection this worker has accepted (see [`http_connections`]).
fn hang_up_connections() {
    use nix::sys::socket::{Shutdown, shutdown};
    for fd in http_connections() {
        let _ = shutdown(fd, Shutdown::Both);
    }
}

/// The HTTP connections this worker has accepted and not closed: the Unix sockets named by a
/// path that are not listening. The IPC and handoff channels are socketpairs, with no name.
fn http_connections() -> Vec<i32> {
    use nix::sys::socket::{UnixAddr, getsockname, getsockopt, sockopt};
    use std::os::fd::BorrowedFd;
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for fd in fds.flatten() {
        let Some(fd) = fd.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let named = getsockname::<UnixAddr>(fd).is_ok_and(|a| a.path().is_some());
        // SAFETY: borrowed for one `getsockopt`, which only reads. Were the fd closed (and its
        // number reused) since it was listed, the worst outcome is a miscount, or hanging up
        // another connection of a process that is about to abort anyway.
        let fd_ref = unsafe { BorrowedFd::borrow_raw(fd) };
        let listening = getsockopt(&fd_ref, sockopt::AcceptConn).unwrap_or(true);
        if named && !listening {
            found.push(fd);
        }
    }
    found
}

/// The kernel's ids (socket inode numbers, never reused while the machine runs) of the HTTP
/// connections this worker holds, in order: a test compares two readings to see whether the
/// master kept its connections or opened new ones.
fn connection_ids() -> Vec<u64> {
    let mut ids: Vec<u64> = http_connections()
        .into_iter()
        .filter_map(|fd| {
            let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
            let link = link.to_str()?;
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    ids
}

async fn exit(code: u16) -> &'static str {
    std::process::exit(i32::from(code))
}

/// `/slow` requests this worker is running, reported in IPC replies so tests can see them.
static SLOW_RUNNING: AtomicU64 = AtomicU64::new(0);

/// The tags of every `/smuggled` request this worker served.
static SMUGGLED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

#[derive(serde::Deserialize)]
struct Tag {
    tag: String,
}

#[derive(serde::Deserialize)]
struct Kind {
    kind: String,
}

/// A body whose size hint lies: it announces `announced` bytes and yields `pieces`, whatever
/// their length, as a buggy handler's hand-made body would.
struct Lying {
    announced: u64,
    pieces: std::collections::VecDeque<Vec<u8>>,
}

impl Lying {
    fn new(announced: u64, pieces: Vec<Vec<u8>>) -> Self {
        Self {
            announced,
            pieces: pieces.into(),
        }
    }
}

impl http_body::Body for Lying {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let piece = self.pieces.pop_front();
        std::task::Poll::Ready(piece.map(|p| Ok(http_body::Frame::data(p.into()))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.announced)
    }
}

impl IntoResponse for Lying {
    fn into_response(self) -> axum::response::Response {
        axum::response::Response::new(axum::body::Body::new(self))
    }
}

/// Memory the `/alloc` route keeps alive, to push a worker over `MAX_MEMORY`.
static HELD: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

#[derive(serde::Deserialize)]
struct Mb {
    mb: usize,
}

#[derive(serde::Deserialize)]
struct Ms {
    ms: u64,
}

#[derive(serde::Deserialize)]
struct Count {
    n: usize,
}

#[derive(serde::Deserialize)]
struct Code {
    code: u16,
}

#[derive(serde::Deserialize)]
struct Slot {
    slot: usize,
    /// What to ask (default `ping`); `connections` adds the ids of the worker's open HTTP
    /// connections.
    #[serde(default)]
    what: Option<String>,
}

/// Writes a frame that is not a message onto the control channel, as a buggy worker would.
async fn garbage() -> String {
    let fd: i32 = std::env::var("CLUSTER_IPC_FD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let frame = [0u8, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'];
    // SAFETY: a plain write(2) of a stack buffer to our own control fd.
    let written = unsafe { nix::libc::write(fd, frame.as_ptr().cast(), frame.len()) };
    format!("wrote {written} bytes of garbage\n")
}

async fn echo(mut socket: WebSocket, id: usize) {
    while let Some(Ok(msg)) = socket.recv().await {
        if let Message::Text(text) = msg {
            let reply = format!("worker {id}: {text}");
            if socket.send(Message::Text(reply.into())).await.is_err() {
                return;
            }
        }
    }
}
