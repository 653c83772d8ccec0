//! [`Cluster`]: the builder a lesson's `main` fills in (the worker's router, the master's own
//! routes, the strategy, observers) and runs.

use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;

use super::handle::ClusterHandle;
use super::health::HealthScorer;
use super::logging;
use super::master::{self, BuildMaster, Master, OnStart};
use crate::balance::{RoundRobin, Selector, Split};
use crate::breaker::{MasterBreakers, WorkerLink};
use crate::config::{Config, Defaults};
use crate::edge::front::Front;
use crate::http::rate_limit::{Limiter, RateLimitLayer};
use crate::http::routes::MasterRoutes;
use crate::http::trace::TraceLayer;
use crate::metrics::Observer;
use crate::slot::WorkerInfo;
use crate::supervisor::PoolSpec;
use crate::wire::env;
use crate::worker::{RequestHandler, WorkerContext};

/// True in a worker process (started by a master with `CLUSTER_WORKER=true`), false in the master:
/// for the rare setup only one of them should do, such as checking an external store once.
pub fn is_worker() -> bool {
    std::env::var(env::WORKER).is_ok_and(|v| v == "true")
}

/// Builds the worker's router.
type BuildWorker = Box<dyn Fn(&WorkerContext) -> Router + Send + Sync>;

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
    worker_env: Vec<(String, String)>,
    pools: Vec<PoolSpec>,
    split: Option<Arc<dyn Split>>,
    front: Front,
    shutdown_delay: std::time::Duration,
    master_breakers: Option<MasterBreakers>,
    worker_breakers: Option<WorkerLink>,
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
            worker_env: Vec::new(),
            pools: Vec::new(),
            split: None,
            front: Front::default(),
            shutdown_delay: std::time::Duration::ZERO,
            master_breakers: None,
            worker_breakers: None,
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

    /// Sets `key=value` in every worker's environment, e.g. the address of a service the master
    /// started, without touching the master's own environment (which is unsound once threads run).
    pub fn worker_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.worker_env.push((key.into(), value.into()));
        self
    }

    /// Adds a version pool (see [`PoolSpec`]): the first one given replaces the cluster's one pool
    /// of `WORKERS` workers and is pool 0, the next is pool 1, and so on. Pool sizes come from the
    /// specs.
    pub fn pool(mut self, spec: PoolSpec) -> Self {
        self.pools.push(spec);
        self
    }

    /// How each request's version pool is chosen (see [`Split`]); without one, every ready
    /// worker of every pool may take any request.
    pub fn split(mut self, split: impl Split) -> Self {
        self.split = Some(Arc::new(split));
        self
    }

    /// Limits every request the master receives, its own routes and every worker's, per client IP
    /// (see [`crate::http::rate_limit`]): one budget for the whole cluster. Paths the limiter
    /// exempts (health probes, metrics scrapes) are never limited. Proxy dispatch only: in
    /// handoff mode the master does not see the requests of a connection it passed on.
    pub fn rate_limit(mut self, limiter: Arc<Limiter>) -> Self {
        self.front.rate_limit = Some(RateLimitLayer::new(limiter));
        self
    }

    /// Traces every request the master receives (see [`crate::http::trace`]): `X-Request-Id` and
    /// `X-Response-Time` on every answer, and a log line per request if the layer says so.
    pub fn trace(mut self, layer: TraceLayer) -> Self {
        self.front.trace = Some(layer);
        self
    }

    /// On SIGTERM, go on serving for `delay` with `/health` (and a lesson's readiness route)
    /// already saying the master is shutting down, then stop accepting and drain: the time a load
    /// balancer needs to notice (Kubernetes' `preStop` sleep). Default 0.
    pub fn shutdown_delay(mut self, delay: std::time::Duration) -> Self {
        self.shutdown_delay = delay;
        self
    }

    /// Cluster-scope circuit breakers: in the master, `master` owns each circuit's state and
    /// hears every worker's outcomes; in a worker, `link`'s followers obey it. Each process
    /// uses the one that is its own (build both, or only the one this process needs).
    pub fn cluster_breakers(
        mut self,
        master: Option<MasterBreakers>,
        link: Option<WorkerLink>,
    ) -> Self {
        self.master_breakers = master;
        self.worker_breakers = link;
        self
    }

    /// Runs as master or worker, whichever this process is, and returns its exit code.
    pub fn run(self) -> ExitCode {
        logging::init(self.config.log_format);
        if is_worker() {
            return crate::worker::run(
                &*self.build_worker,
                self.on_request,
                self.worker_breakers,
                crate::worker::ClientLimits::from(&self.config),
            );
        }
        master::run(Master {
            name: self.name,
            config: self.config,
            build_master: self.build_master,
            selector: self.selector,
            on_start: self.on_start,
            observers: self.observers,
            scorer: self.scorer,
            hints: self.hints,
            banner_lines: self.banner_lines,
            worker_env: self.worker_env,
            pools: self.pools,
            split: self.split,
            front: self.front,
            shutdown_delay: self.shutdown_delay,
            breakers: self.master_breakers,
        })
    }
}

/// Returns the default config for a lesson that wants `workers` by default.
pub fn config_with_workers(workers: usize) -> Config {
    Config::from_env_or_exit(Defaults {
        workers,
        ..Defaults::default()
    })
}
