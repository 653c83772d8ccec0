//! The entry point a lesson calls: [`Cluster`] builds the cluster, [`ClusterHandle`] steers it.
//!
//! The same binary is both master and worker. [`Cluster::run`] looks at `CLUSTER_WORKER`: unset,
//! this process is the master (it binds the edge, starts the supervisor and the workers, handles
//! signals); set, it serves the lesson's worker `Router` on the socket the master chose.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::balance::{RoundRobin, Selector};
use crate::config::{Config, Defaults, LogFormat};
use crate::edge::{self, Edge, MasterRoutes, Upstreams};
use crate::metrics::Observer;
use crate::supervisor::{Command, SlotState, Supervisor, WorkerInfo, spawn};
use crate::worker::{RequestHandler, WorkerContext};
use crate::{BoxError, shutdown};

/// Something that happened to a worker; see [`ClusterHandle::events`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// A worker said it is accepting requests.
    Ready {
        /// Its slot.
        slot: usize,
        /// Its pid.
        pid: u32,
    },
    /// A worker process ended.
    Exited {
        /// Its slot.
        slot: usize,
        /// Its pid.
        pid: u32,
        /// Its exit code, if it exited.
        code: Option<i32>,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
    },
    /// A replacement was started for a worker that exited unexpectedly.
    Restarted {
        /// The slot.
        slot: usize,
        /// The new process.
        pid: u32,
        /// The slot's restarts so far, this one included.
        restarts: u64,
    },
    /// A slot restarted too often and was given up on.
    Failed {
        /// The slot.
        slot: usize,
    },
    /// The number of worker slots was set.
    Scaled {
        /// The new number.
        workers: usize,
    },
}

/// State the master's tasks share; written by the supervisor, read by routes and the handle.
pub(crate) struct Shared {
    pub upstreams: Arc<Upstreams>,
    /// Replaced after every supervisor step; a watch so waiters learn of each change.
    pub workers: watch::Sender<Vec<WorkerInfo>>,
    pub events: broadcast::Sender<ClusterEvent>,
    pub shutting_down: AtomicBool,
    pub started: Instant,
    /// Given to every backend: told about each proxied request as it ends.
    pub observers: crate::metrics::Observers,
    /// Optional per-slot health scores for `/health`.
    pub scorer: Option<HealthScorer>,
}

/// Steers a running cluster. Cheap to clone; every method works from any task.
#[derive(Clone)]
pub struct ClusterHandle {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    rolling: Arc<tokio::sync::Mutex<()>>,
    stop: shutdown::Trigger,
}

/// `/health`'s body.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `ok`, `degraded` (some slot not Ready), `unavailable` (none Ready) or `shutting_down`.
    pub status: &'static str,
    /// Counts by state.
    pub workers: HealthCounts,
    /// Seconds since the master started.
    pub uptime: f64,
}

/// Worker counts in [`Health`].
#[derive(Debug, Clone, Serialize)]
pub struct HealthCounts {
    /// Slots that exist.
    pub total: usize,
    /// Slots taking traffic.
    pub ready: usize,
    /// Slots given up on.
    pub failed: usize,
    /// Per-slot detail.
    pub slots: Vec<SlotHealth>,
}

/// One slot in [`Health`]: its [`WorkerInfo`] and, when the cluster has a health scorer, its score.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotHealth {
    /// The slot.
    #[serde(flatten)]
    pub info: WorkerInfo,
    /// 0–100 from the scorer (see [`Cluster::health_scorer`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_score: Option<u8>,
    /// The scorer's verdict, e.g. `healthy` or `degraded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<&'static str>,
}

/// Scores each slot's health: `(slot id, score 0–100, verdict)`. A Ready slot scoring 50 or less
/// makes `/health` say `degraded`.
pub type HealthScorer = Arc<dyn Fn(&[WorkerInfo]) -> Vec<(usize, u8, &'static str)> + Send + Sync>;

impl ClusterHandle {
    /// A stream of [`ClusterEvent`]s from now on. A receiver that falls more than 1024 events
    /// behind is told it lagged (`RecvError::Lagged`) and skips ahead.
    pub fn events(&self) -> broadcast::Receiver<ClusterEvent> {
        self.shared.events.subscribe()
    }

    /// Every slot: id, pid, state, restarts, uptime.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let mut workers = self.shared.workers.borrow().clone();
        workers.iter_mut().for_each(WorkerInfo::refresh);
        workers
    }

    /// The ready workers as the edge sees them.
    pub fn upstreams(&self) -> Arc<[Arc<edge::Backend>]> {
        self.shared.upstreams.snapshot()
    }

    /// Seconds since the master started.
    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// The cluster's health, as `/health` reports it.
    pub fn health(&self) -> Health {
        let workers = self.workers();
        let scores = self
            .shared
            .scorer
            .as_ref()
            .map(|score| score(&workers))
            .unwrap_or_default();
        let slots: Vec<SlotHealth> = workers
            .into_iter()
            .map(|info| {
                let score = scores.iter().find(|(id, _, _)| *id == info.id);
                SlotHealth {
                    health_score: score.map(|s| s.1),
                    health: score.map(|s| s.2),
                    info,
                }
            })
            .collect();
        let is_ready = |s: &&SlotHealth| s.info.state == SlotState::Ready;
        let ready = slots.iter().filter(is_ready).count();
        let unwell = slots
            .iter()
            .filter(is_ready)
            .any(|s| s.health_score.is_some_and(|score| score <= 50));
        let failed = slots
            .iter()
            .filter(|s| s.info.state == SlotState::Failed)
            .count();
        let status = if self.shared.shutting_down.load(Ordering::Relaxed) {
            "shutting_down"
        } else if ready == 0 {
            "unavailable"
        } else if ready < slots.len() || unwell {
            "degraded"
        } else {
            "ok"
        };
        Health {
            status,
            workers: HealthCounts {
                total: slots.len(),
                ready,
                failed,
                slots,
            },
            uptime: self.uptime().as_secs_f64(),
        }
    }

    async fn command(&self, cmd: Command) -> Result<(), BoxError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| "the supervisor has stopped".into())
    }

    /// Runs `n` worker slots: new slots take the lowest free ids; scaling down drains the highest.
    pub async fn scale_to(&self, n: usize) -> Result<(), BoxError> {
        if !(1..=256).contains(&n) {
            return Err(format!("cannot scale to {n} workers: expected 1 to 256").into());
        }
        self.command(Command::ScaleTo(n)).await
    }

    /// Sends `signal` to the worker in `slot`, or to every worker when `slot` is `None`.
    pub async fn signal(&self, slot: Option<usize>, signal: Signal) -> Result<(), BoxError> {
        self.command(Command::Signal(slot, signal)).await
    }

    /// Asks every worker to reload its configuration.
    pub async fn reload(&self) -> Result<(), BoxError> {
        self.command(Command::Reload).await
    }

    /// Asks the worker in `slot` a question over IPC; it answers within `timeout` or this fails.
    pub async fn request(
        &self,
        slot: usize,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, BoxError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Request(slot, body, tx)).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r.map_err(Into::into),
            Ok(Err(_)) => Err("the supervisor dropped the request".into()),
            Err(_) => Err(format!("worker {slot} did not answer within {timeout:?}").into()),
        }
    }

    /// Replaces one worker: starts a new process in the slot, switches traffic to it once it is
    /// Ready, then drains the old one. If the new one fails to start, the old one keeps serving.
    pub async fn replace(&self, slot: usize) -> Result<(), BoxError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Replace(slot, tx)).await?;
        rx.await
            .map_err(|_| BoxError::from("the supervisor dropped the replacement"))?
            .map_err(Into::into)
    }

    /// Replaces every worker, one slot at a time, without dropping a request. Stops at the first
    /// replacement that fails, leaving that slot's old worker serving. One roll at a time.
    pub async fn rolling_restart(&self) -> Result<(), BoxError> {
        let Ok(_guard) = self.rolling.try_lock() else {
            return Err("a rolling restart is already running".into());
        };
        let slots: Vec<usize> = self
            .workers()
            .iter()
            .filter(|w| w.state == SlotState::Ready)
            .map(|w| w.id)
            .collect();
        tracing::info!(?slots, "rolling restart started");
        for slot in slots {
            if let Err(e) = self.replace(slot).await {
                tracing::error!(slot, error = %e, "rolling restart aborted; the old worker keeps serving");
                return Err(e);
            }
        }
        tracing::info!("rolling restart finished");
        Ok(())
    }

    /// Starts a graceful shutdown (as SIGTERM does).
    pub fn shutdown(&self) {
        self.stop.trigger();
    }
}

/// True in a worker process (started by a master with `CLUSTER_WORKER=true`), false in the master:
/// for the rare setup only one of them should do, such as checking an external store once.
pub fn is_worker() -> bool {
    std::env::var(spawn::env::WORKER).is_ok_and(|v| v == "true")
}

/// Builds the worker's router.
type BuildWorker = Box<dyn Fn(&WorkerContext) -> Router + Send + Sync>;
/// Builds the master's own routes once the cluster exists.
type BuildMaster = Box<dyn FnOnce(ClusterHandle) -> MasterRoutes + Send>;
/// Runs once the master is up.
type OnStart = Box<dyn FnOnce(ClusterHandle) + Send>;

/// A cluster: what workers serve, what the master answers itself, and how requests are balanced.
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use common::{Cluster, config::{Config, Defaults}};
///
/// fn main() -> std::process::ExitCode {
///     Cluster::new("hello", Config::from_env_or_exit(Defaults::default()))
///         .worker(|ctx| {
///             let id = ctx.id;
///             Router::new().route("/", get(move || async move { format!("hello from worker {id}\n") }))
///         })
///         .run()
/// }
/// ```
pub struct Cluster {
    name: &'static str,
    config: Config,
    build_worker: BuildWorker,
    build_master: Option<BuildMaster>,
    selector: Arc<dyn Selector>,
    on_request: Option<RequestHandler>,
    on_start: Option<OnStart>,
    observers: Vec<Arc<dyn Observer>>,
    scorer: Option<HealthScorer>,
    hints: Vec<String>,
    banner_lines: Vec<(String, String)>,
}

impl Cluster {
    /// A cluster named `name` (shown in the banner and logs), configured by `config`.
    pub fn new(name: &'static str, config: Config) -> Self {
        Self {
            name,
            config,
            build_worker: Box::new(|_| Router::new()),
            build_master: None,
            selector: Arc::new(RoundRobin::default()),
            on_request: None,
            on_start: None,
            observers: Vec::new(),
            scorer: None,
            hints: Vec::new(),
            banner_lines: Vec::new(),
        }
    }

    /// The router each worker serves (`GET /ping` is added to it).
    pub fn worker(
        mut self,
        build: impl Fn(&WorkerContext) -> Router + Send + Sync + 'static,
    ) -> Self {
        self.build_worker = Box::new(build);
        self
    }

    /// Routes the master answers itself (`/health` is always there).
    pub fn master(
        mut self,
        build: impl FnOnce(ClusterHandle) -> MasterRoutes + Send + 'static,
    ) -> Self {
        self.build_master = Some(Box::new(build));
        self
    }

    /// The load-balancing strategy (default: round-robin).
    pub fn selector(mut self, selector: impl Selector) -> Self {
        self.selector = Arc::new(selector);
        self
    }

    /// Adds an observer, told about every proxied request when it ends (latency, status, outcome):
    /// how latency-aware strategies, metrics and outlier detection learn what happened.
    pub fn observe(mut self, observer: impl Observer) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Scores each slot for `/health` (see [`HealthScorer`]); without one, `/health` reports
    /// only states.
    pub fn health_scorer(
        mut self,
        scorer: impl Fn(&[WorkerInfo]) -> Vec<(usize, u8, &'static str)> + Send + Sync + 'static,
    ) -> Self {
        self.scorer = Some(Arc::new(scorer));
        self
    }

    /// How workers answer [`ClusterHandle::request`].
    pub fn on_request(
        mut self,
        handler: impl Fn(&WorkerContext, serde_json::Value) -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.on_request = Some(Arc::new(handler));
        self
    }

    /// Called in the master once it is serving, with a handle (e.g. to watch events).
    pub fn on_start(mut self, f: impl FnOnce(ClusterHandle) + Send + 'static) -> Self {
        self.on_start = Some(Box::new(f));
        self
    }

    /// A line for the banner's "try" list, e.g. `curl -c cookies.txt {url}/`; `{url}` is replaced.
    pub fn hint(mut self, line: impl Into<String>) -> Self {
        self.hints.push(line.into());
        self
    }

    /// A labelled banner line after the workers, e.g. `banner_line("store", "memory")` prints
    /// `  store:   memory`.
    pub fn banner_line(mut self, label: impl Into<String>, text: impl Into<String>) -> Self {
        self.banner_lines.push((label.into(), text.into()));
        self
    }

    /// Runs as master or worker, whichever this process is, and returns its exit code.
    pub fn run(self) -> ExitCode {
        let is_worker = is_worker();
        init_logging(self.config.log_format, is_worker);
        if is_worker {
            crate::worker::run(
                &*self.build_worker,
                self.on_request,
                self.config.header_timeout,
            )
        } else {
            self.run_master()
        }
    }

    fn run_master(self) -> ExitCode {
        raise_nofile_limit();
        // Before any thread or worker starts, so all of them inherit it.
        match crate::sched::apply(self.config.scheduling) {
            Ok(policy) => tracing::debug!(policy, "scheduling policy"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot set the scheduling policy; keeping the default")
            }
        }
        let span = tracing::info_span!("master");
        // The control runtime (supervisor, signals, IPC) is light work on the main thread; the edge
        // runs on threads of its own (see `edge::spawn_threads`).
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the runtime: {e}");
                return ExitCode::from(1);
            }
        };
        let _entered = span.enter();
        match rt.block_on(self.master_main()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    }

    /// Returns whether everything drained without being killed.
    async fn master_main(self) -> Result<bool, BoxError> {
        let config = self.config.clone();
        let addr = SocketAddr::new(config.host, config.port);
        let listeners = edge::bind(addr, config.edge_threads)
            .map_err(|e| format!("cannot listen on {addr}: {e} (set PORT or HOST)"))?;
        let local = match listeners.first() {
            Some(first) => first.local_addr()?,
            None => addr,
        };
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find our own binary: {e}"))?;
        let run_dir = RunDir::create()?;

        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            upstreams: Arc::new(Upstreams::default()),
            workers: watch::Sender::new(Vec::new()),
            events,
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
            observers: self.observers.into(),
            scorer: self.scorer,
        });
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (stop, stopped) = shutdown::channel();
        let handle = ClusterHandle {
            shared: shared.clone(),
            commands: cmd_tx,
            rolling: Arc::default(),
            stop: stop.clone(),
        };
        let supervisor = Supervisor::new(config.clone(), exe, run_dir.0.clone(), shared.clone());
        let mut supervisor = tokio::spawn(supervisor.run(cmd_rx));

        let mut master = health_routes(handle.clone());
        if let Some(build) = self.build_master {
            master = master.merge(build(handle.clone()));
        }
        let edge = Arc::new(Edge {
            limits: (&config).into(),
            connection_slots: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
            upstreams: shared.upstreams.clone(),
            selector: self.selector,
            master,
            retry: Default::default(),
        });
        let serving = edge::spawn_threads(
            listeners,
            edge,
            stopped.clone(),
            config.shutdown_timeout,
            config.dispatch,
        )
        .map_err(|e| format!("cannot start the edge threads: {e}"))?;
        tokio::spawn(handle_signals(handle.clone()));
        if let Some(f) = self.on_start {
            f(handle.clone());
        }
        wait_ready(&handle, config.ready_timeout).await;
        print_banner(self.name, local, &handle, &self.hints, &self.banner_lines);

        stopped.wait().await;
        tracing::info!("shutting down: draining in-flight requests");
        let began = Instant::now();
        shared.shutting_down.store(true, Ordering::Relaxed);
        let edge_drained = serving.await;
        let left = config.shutdown_timeout.saturating_sub(began.elapsed());
        let (tx, rx) = oneshot::channel();
        let _ = handle.commands.send(Command::Shutdown(left, tx)).await;
        let workers_clean = rx.await.unwrap_or(false);
        let _ = (&mut supervisor).await;
        drop(run_dir);
        let clean = edge_drained && workers_clean;
        if clean {
            tracing::info!("shutdown complete");
        } else {
            tracing::warn!("shutdown finished, but some work had to be cut off");
        }
        Ok(clean)
    }
}

fn health_routes(handle: ClusterHandle) -> MasterRoutes {
    async fn health(State(h): State<ClusterHandle>) -> impl IntoResponse {
        let health = h.health();
        let code = match health.status {
            "ok" | "degraded" => StatusCode::OK,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        (code, axum::Json(health))
    }
    MasterRoutes::new(
        &["/health"],
        Router::new()
            .route("/health", get(health))
            .with_state(handle),
    )
}

/// Waits until no slot is still starting (each is Ready or Failed), or `timeout`.
async fn wait_ready(handle: &ClusterHandle, timeout: Duration) {
    let mut workers = handle.shared.workers.subscribe();
    let settled =
        workers.wait_for(|w| !w.is_empty() && w.iter().all(|w| w.state != SlotState::Starting));
    let _ = tokio::time::timeout(timeout, settled).await;
}

fn print_banner(
    name: &str,
    addr: SocketAddr,
    handle: &ClusterHandle,
    hints: &[String],
    lines: &[(String, String)],
) {
    use std::io::Write;
    let url = format!("http://{addr}");
    let workers: Vec<String> = handle
        .workers()
        .iter()
        .map(|w| match w.pid {
            Some(pid) => format!("{} (pid {pid}, {:?})", w.id, w.state).to_lowercase(),
            None => format!("{} ({:?})", w.id, w.state).to_lowercase(),
        })
        .collect();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{name}: master pid {} listening on {url}",
        std::process::id()
    );
    let _ = writeln!(out, "  workers: {}", workers.join(", "));
    for (label, text) in lines {
        let _ = writeln!(out, "  {:<9}{text}", format!("{label}:"));
    }
    let _ = writeln!(out, "  try:     curl {url}/health");
    for hint in hints {
        let _ = writeln!(out, "           {}", hint.replace("{url}", &url));
    }
    let _ = writeln!(
        out,
        "  stop:    Ctrl-C (graceful), kill -USR2 {} (rolling restart)",
        std::process::id()
    );
    let _ = out.flush();
}

async fn handle_signals(handle: ClusterHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    let kinds = [
        ("TERM", SignalKind::terminate()),
        ("INT", SignalKind::interrupt()),
        ("USR2", SignalKind::user_defined2()),
        ("HUP", SignalKind::hangup()),
        ("TTIN", SignalKind::from_raw(nix::libc::SIGTTIN)),
        ("TTOU", SignalKind::from_raw(nix::libc::SIGTTOU)),
    ];
    let (tx, mut rx) = mpsc::channel::<&'static str>(16);
    for (name, kind) in kinds {
        match signal(kind) {
            Ok(mut stream) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        if tx.send(name).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::error!(signal = name, error = %e, "cannot listen for signal"),
        }
    }
    drop(tx);
    while let Some(name) = rx.recv().await {
        tracing::info!(signal = name, "signal received");
        let h = handle.clone();
        match name {
            "TERM" | "INT" => h.shutdown(),
            "USR2" => {
                tokio::spawn(async move {
                    let _ = h.rolling_restart().await;
                });
            }
            "HUP" => {
                let _ = h.reload().await;
            }
            _ => {
                let n = h
                    .workers()
                    .iter()
                    .filter(|w| w.state != SlotState::Stopped && w.state != SlotState::Draining)
                    .count();
                let n = if name == "TTIN" {
                    n + 1
                } else {
                    n.saturating_sub(1).max(1)
                };
                if let Err(e) = h.scale_to(n).await {
                    tracing::error!(error = %e, "scaling failed");
                }
            }
        }
    }
}

/// The private directory holding the workers' sockets; removed when dropped.
struct RunDir(PathBuf);

impl RunDir {
    fn create() -> Result<Self, BoxError> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!(
            "rcp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        // 0700: only our user may connect to the workers' sockets.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Each upstream request holds a socket, so the default soft limit of 1024 would cap the edge far
/// below `MAX_CONNECTIONS`; the hard limit is ours to take.
fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn init_logging(format: LogFormat, is_worker: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    // Workers inherit stderr, so every line says which process wrote it: the span carries
    // `master` or `worker{id=N}`, and the master's runtime threads enter it too.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    let _ = is_worker;
}

/// Returns the default config for a lesson that wants `workers` by default.
pub fn config_with_workers(workers: usize) -> Config {
    Config::from_env_or_exit(Defaults {
        workers,
        ..Defaults::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_directory_is_private_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = RunDir::create().unwrap();
        let path = dir.0.clone();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "only the owner may reach the workers' sockets");
        drop(dir);
        assert!(!path.exists());
    }
}
