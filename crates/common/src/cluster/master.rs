//! The master's life: bind the edge, start the supervisor and the edge threads, print the banner,
//! wait for the shutdown notice, drain, stop the workers.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tower::retry::budget::TpsBudget;

use super::handle::ClusterHandle;
use super::health::HealthScorer;
use super::run_dir::RunDir;
use super::signals;
use super::systemd::Systemd;
use crate::balance::{Selector, Split};
use crate::config::Config;
use crate::edge::{Upstreams, accept, front::Front, state::Edge, threads};
use crate::error::BoxError;
use crate::http::routes::MasterRoutes;
use crate::metrics::Observer;
use crate::shutdown;
use crate::slot::SlotState;
use crate::supervisor::{Command, PoolSpec, Shared, Supervisor};

/// Builds the master's own routes once the cluster exists.
pub(super) type BuildMaster = Box<dyn FnOnce(ClusterHandle) -> MasterRoutes + Send>;
/// Runs once the master is up.
pub(super) type OnStart = Box<dyn FnOnce(ClusterHandle) + Send>;

/// What the master needs of a [`Cluster`](super::Cluster): all of it but the worker's side.
pub(super) struct Master {
    pub name: &'static str,
    pub config: Config,
    pub build_master: Option<BuildMaster>,
    pub selector: Arc<dyn Selector>,
    pub on_start: Option<OnStart>,
    pub observers: Vec<Arc<dyn Observer>>,
    pub scorer: Option<HealthScorer>,
    pub hints: Vec<String>,
    /// Labelled lines the banner prints after the workers.
    pub banner_lines: Vec<(String, String)>,
    /// Set in every worker's environment.
    pub worker_env: Vec<(String, String)>,
    /// The version pools; empty for the one pool of `WORKERS` workers.
    pub pools: Vec<PoolSpec>,
    /// Chooses each request's pool, when there are several.
    pub split: Option<Arc<dyn Split>>,
    /// The layers in front of every request, if any.
    pub front: Front,
    /// How long the edge goes on serving after the shutdown notice, `/health` already saying
    /// `shutting_down`.
    pub shutdown_delay: Duration,
    /// Cluster-scope circuit breakers, if the lesson has them.
    pub breakers: Option<crate::breaker::MasterBreakers>,
}

/// Runs the master until it has shut down; its exit code.
pub(super) fn run(master: Master) -> ExitCode {
    raise_nofile_limit();
    // Before any thread or worker starts, so all of them inherit it.
    match crate::sched::apply(master.config.scheduling) {
        Ok(policy) => tracing::debug!(policy, "scheduling policy"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot set the scheduling policy; keeping the default")
        }
    }
    // Before the runtime starts: a bad variable exits 2 before anything is bound or spawned.
    let systemd = Systemd::from_env_or_exit();
    let tls = master.config.tls.as_ref().map(|files| {
        crate::edge::tls::acceptor(files).unwrap_or_else(|e| crate::config::exit_bad_config(&e))
    });
    let span = tracing::info_span!("master");
    // The control runtime (supervisor, signals, IPC) is light work on the main thread; the edge
    // runs on threads of its own (see `edge::threads`).
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
    match rt.block_on(master_main(master, systemd, tls)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            crate::log_buffer::flush();
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Returns whether everything drained without being killed.
async fn master_main(
    master: Master,
    mut systemd: Systemd,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<bool, BoxError> {
    let Master {
        name,
        config,
        build_master,
        selector,
        on_start,
        observers,
        scorer,
        hints,
        banner_lines,
        worker_env,
        pools,
        split,
        front,
        shutdown_delay,
        breakers,
    } = master;
    let addr = SocketAddr::new(config.host, config.port);
    let listeners = match systemd.listeners(config.edge_threads) {
        Ok(Some(inherited)) => inherited,
        Ok(None) => accept::bind(addr, config.edge_threads)
            .map_err(|e| format!("cannot listen on {addr}: {e} (set PORT or HOST)"))?,
        Err(e) => return Err(format!("cannot use the socket systemd passed (fd 3): {e}").into()),
    };
    let local = match listeners.first() {
        Some(first) => first.local_addr()?,
        None => addr,
    };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find our own binary: {e}"))?;
    let run_dir = RunDir::create()?;

    let (events, _) = broadcast::channel(1024);
    let shared = Arc::new(Shared {
        upstreams: Arc::new(Upstreams::default()),
        workers: watch::Sender::new(Vec::new()),
        events,
        shutting_down: AtomicBool::new(false),
        started: Instant::now(),
        run_dir: run_dir.path().to_path_buf(),
        observers: observers.into(),
    });
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (stop, stopped) = shutdown::channel();
    // The edge stops on a notice of its own, `shutdown_delay` after the cluster's.
    let (edge_stop, edge_stopped) = shutdown::channel();
    let handle = ClusterHandle::new(shared.clone(), cmd_tx, stop.clone(), scorer);
    let supervisor = Supervisor::new(
        config.clone(),
        exe,
        run_dir.path().to_path_buf(),
        shared.clone(),
    )
    .with_worker_env(worker_env)
    .with_pools(pools)
    .with_breakers(breakers);
    let mut supervisor = tokio::spawn(supervisor.run(cmd_rx));

    let mut routes = health_routes(handle.clone());
    if let Some(build) = build_master {
        routes = routes.merge(build(handle.clone()));
    }
    let edge_tls = tls.is_some();
    // With a front, every request must pass it, and a handed-off connection's would not.
    let upgrade_handoff = config.ws_handoff
        && config.dispatch == crate::config::Dispatch::Proxy
        && !edge_tls
        && !front.is_on();
    let edge = Arc::new(Edge {
        limits: (&config).into(),
        connection_slots: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
        upstreams: shared.upstreams.clone(),
        selector,
        split,
        master: routes,
        retry: TpsBudget::default(),
        tls,
        front: front.is_on().then_some(front),
        upgrade_handoff,
    });
    let serving = threads::spawn(
        listeners,
        edge,
        edge_stopped,
        config.shutdown_timeout,
        config.dispatch,
    )
    .map_err(|e| format!("cannot start the edge threads: {e}"))?;
    tokio::spawn(signals::handle(handle.clone()));
    systemd.spawn(&handle, local, stopped.clone());
    let mut banner_lines = banner_lines;
    if let Some(policy) = config.autoscale {
        super::scaling::spawn(handle.clone(), policy, stopped.clone());
        banner_lines.push((
            "scaling".into(),
            format!(
                "{}..{} workers, aiming at {} in flight each",
                policy.min, policy.max, policy.target_in_flight
            ),
        ));
    }
    if let Some(f) = on_start {
        f(handle.clone());
    }
    wait_ready(&handle, config.ready_timeout).await;
    let scheme = if edge_tls { "https" } else { "http" };
    print_banner(name, scheme, local, &handle, &hints, &banner_lines);

    stopped.wait().await;
    tracing::info!("shutting down: draining in-flight requests");
    let began = Instant::now();
    shared.shutting_down.store(true, Ordering::Relaxed);
    if !shutdown_delay.is_zero() {
        // Readiness already says 503; a load balancer polling it stops sending new requests
        // while the listener still accepts the ones already on their way.
        tracing::info!(delay = ?shutdown_delay, "still serving while load balancers notice");
        tokio::time::sleep(shutdown_delay).await;
    }
    edge_stop.trigger();
    let edge_drained = serving.await;
    let left = config.shutdown_timeout.saturating_sub(began.elapsed());
    let (tx, rx) = oneshot::channel();
    let _ = handle.command(Command::Shutdown(left, tx)).await;
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
    let mut workers = handle.shared().workers.subscribe();
    let settled =
        workers.wait_for(|w| !w.is_empty() && w.iter().all(|w| w.state != SlotState::Starting));
    let _ = tokio::time::timeout(timeout, settled).await;
}

fn print_banner(
    name: &str,
    scheme: &str,
    addr: SocketAddr,
    handle: &ClusterHandle,
    hints: &[String],
    lines: &[(String, String)],
) {
    use std::io::Write;
    let url = format!("{scheme}://{addr}");
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
