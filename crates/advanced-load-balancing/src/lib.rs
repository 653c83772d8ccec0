//! Lesson 02: advanced load balancing.
//!
//! The master picks a worker for every request with one of seven strategies from
//! [`common::balance`], switchable while it serves, behind passive outlier detection that ejects a
//! worker that keeps failing. Workers answer with the Node course's latency profiles, and fault
//! knobs make one of them slow, failing or CPU-bound so a strategy can be watched reacting.
//!
//! Layout:
//! - [`Settings`]: the lesson's environment (`STRATEGY`, `WORKER_WEIGHTS`, `P2C_SEED`,
//!   `HASH_HEADER`, `OUTLIER_*`, `FAULT_*`);
//! - [`cluster`]: the whole cluster, ready to `run()`;
//! - [`worker_router`]: what each worker serves: `/`, `/fast`, `/slow`, `/variable`, `/cpu`;
//! - [`master_routes`]: `GET /lb-stats`, `GET|POST /lb/strategy`, `POST /lb/fault`;
//! - [`faults`]: the fault knobs; [`latency`]: per-worker average and p95 for the stats.

pub mod faults;
pub mod latency;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::balance::{Outlier, OutlierConfig, Strategy, StrategyOptions, Switch, Weighted};
use common::config::{self, ConfigError, Source};
use common::{Cluster, ClusterHandle, Config, MasterRoutes, SlotState, WorkerContext};
use http::HeaderName;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::faults::{FaultSpec, Faults};
use crate::latency::Latency;

/// The strategy when `STRATEGY` is unset: the Node original's default.
pub const DEFAULT_STRATEGY: Strategy = Strategy::LeastConnections;
/// The longest `/cpu?ms=` burn: a demo, not a way to hang a worker past its heartbeat.
pub const MAX_CPU_MS: u64 = 2_000;
/// How long `POST /lb/fault` waits for the worker to answer.
const FAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The lesson's own settings; the runtime's (`PORT`, `WORKERS`, …) are in [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// `STRATEGY`, default least-connections; an unknown name exits 2 listing the valid ones.
    pub strategy: Strategy,
    /// `WORKER_WEIGHTS` (e.g. `3,1`), `P2C_SEED`, `HASH_HEADER` (default `x-user-id`).
    pub options: StrategyOptions,
    /// `OUTLIER_CONSECUTIVE_ERRORS`, `OUTLIER_BASE_EJECTION_MS`, `OUTLIER_MAX_EJECTION_MS`,
    /// `OUTLIER_MAX_EJECTION_PERCENT`.
    pub outlier: OutlierConfig,
    /// `FAULT_WORKER`: the slot the `FAULT_*` faults apply to at start (none by default).
    pub fault_worker: Option<usize>,
    /// `FAULT_DELAY_MS`, `FAULT_ERROR_RATE` (percent), `FAULT_BURN_CPU` (`true`/`false`).
    pub fault: FaultSpec,
}

impl Settings {
    /// Reads the process environment; on a bad value prints the reason and exits with status 2.
    pub fn from_env_or_exit() -> Self {
        Self::from_source(&config::ProcessEnv).unwrap_or_else(|e| config::exit_bad_config(&e))
    }

    /// Reads every variable from `src`.
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let weights = config::var(
            src,
            "WORKER_WEIGHTS",
            "comma-separated whole numbers from 1 to 1000, one per worker (e.g. 3,1)",
            Weighted::parse_weights,
        )?
        .unwrap_or_default();
        let seed = config::var(src, "P2C_SEED", "a whole number (e.g. 42)", |s| {
            s.parse::<u64>().ok()
        })?;
        let hash_header = config::var(
            src,
            "HASH_HEADER",
            "an HTTP header name (e.g. x-user-id)",
            |s| HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()).ok(),
        )?
        .unwrap_or(HeaderName::from_static("x-user-id"));
        let fault_worker = config::var(src, "FAULT_WORKER", "a worker id (e.g. 2)", |s| {
            s.parse::<usize>().ok().filter(|n| *n >= 1)
        })?;
        let fault = FaultSpec {
            delay_ms: config::number(src, "FAULT_DELAY_MS", 0, 0, 60_000)?,
            error_rate: config::number(src, "FAULT_ERROR_RATE", 0, 0, 100)?,
            burn_cpu: config::var(src, "FAULT_BURN_CPU", "true or false", |s| {
                s.parse::<bool>().ok()
            })?
            .unwrap_or(false),
            cpu_ms: config::number(src, "FAULT_CPU_MS", 0, 0, 1000)?,
        };
        Ok(Self {
            strategy: Strategy::from_source(src, DEFAULT_STRATEGY)?,
            options: StrategyOptions {
                weights,
                seed,
                hash_header: Some(hash_header),
            },
            outlier: OutlierConfig::from_source(src)?,
            fault_worker,
            fault,
        })
    }
}

/// What the master's routes share.
#[derive(Clone)]
pub struct Lb {
    handle: ClusterHandle,
    /// The strategies behind outlier detection: the cluster's selector.
    balancer: Arc<Outlier<Switch>>,
    latency: Arc<Latency>,
}

/// The whole cluster: workers serving [`worker_router`], the master answering [`master_routes`]
/// and choosing workers with the switchable strategies behind outlier detection.
pub fn cluster(config: Config, settings: Settings) -> Cluster {
    let balancer = Arc::new(Outlier::new(
        Switch::new(settings.strategy, &settings.options),
        settings.outlier,
    ));
    let latency = Arc::new(Latency::new());
    // One Faults per process: the router and the control-channel handler share it in a worker.
    let faults = Arc::new(Faults::default());
    let router_faults = faults.clone();
    let lb = balancer.clone();
    let stats = latency.clone();
    Cluster::new("advanced-load-balancing", config)
        .worker(move |ctx| {
            if settings.fault_worker == Some(ctx.id) {
                router_faults.apply(settings.fault);
            }
            worker_router(ctx, router_faults.clone())
        })
        .on_request(move |_ctx, question| answer(&faults, question))
        .master(move |handle| {
            master_routes(Lb {
                handle,
                balancer: lb,
                latency: stats,
            })
        })
        .selector(balancer.clone())
        .observe(balancer.clone())
        .observe(balancer.inner().least_response_time().clone())
        .observe(latency)
        .hint("curl {url}/slow")
        .hint("curl -s {url}/lb-stats | jq")
        .hint(r#"curl -X POST {url}/lb/strategy -H 'content-type: application/json' -d '{"strategy":"weighted"}'"#)
}

/// A worker's answer to a control-channel question: `{"fault": {…}}` sets its faults; anything
/// else is answered with the faults in force.
fn answer(faults: &Faults, question: Value) -> Value {
    if let Some(spec) = question.get("fault") {
        match serde_json::from_value::<FaultSpec>(spec.clone()) {
            Ok(spec) => match spec.validate() {
                Ok(()) => faults.apply(spec),
                Err(e) => return json!({ "error": e }),
            },
            Err(e) => return json!({ "error": e.to_string() }),
        }
    }
    json!({ "fault": faults.spec() })
}

// ---------------------------------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------------------------------

/// A worker's reply, in the Node original's shape.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Reply {
    worker_id: usize,
    worker_pid: u32,
    /// The latency this route chose, in ms (before any fault delay).
    processing_time: u64,
    /// What the handler really took, in ms.
    actual_time: u64,
    /// Milliseconds since the Unix epoch.
    timestamp: u64,
}

#[derive(Clone)]
struct WorkerState {
    ctx: WorkerContext,
    faults: Arc<Faults>,
}

/// What each worker serves. Latency profiles are the Node course's: `/slow` 100–300 ms, `/fast`
/// 10–30 ms, `/variable` 0–500 ms, `/` 30–100 ms; `/cpu?ms=N` burns N ms of CPU on the worker's
/// thread (at most [`MAX_CPU_MS`]). The original answered 5% of requests with a 500 at random; here
/// errors happen only when a fault asks for them, so a test can count on a clean run.
pub fn worker_router(ctx: &WorkerContext, faults: Arc<Faults>) -> Router {
    let state = WorkerState {
        ctx: ctx.clone(),
        faults,
    };
    Router::new()
        .route("/", get(|s: State<WorkerState>| sleep_between(s, 30, 100)))
        .route(
            "/fast",
            get(|s: State<WorkerState>| sleep_between(s, 10, 30)),
        )
        .route(
            "/slow",
            get(|s: State<WorkerState>| sleep_between(s, 100, 300)),
        )
        .route(
            "/variable",
            get(|s: State<WorkerState>| sleep_between(s, 0, 500)),
        )
        .route("/cpu", get(cpu))
        .with_state(state)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits a random time in `low..=high` ms plus the fault delay, then replies (or fails, if a fault
/// says so).
async fn sleep_between(State(s): State<WorkerState>, low: u64, high: u64) -> Response {
    let started = Instant::now();
    let chosen = rand::random_range(low..=high);
    tokio::time::sleep(Duration::from_millis(chosen) + s.faults.delay()).await;
    reply(&s, chosen, started)
}

#[derive(Debug, Deserialize)]
struct CpuQuery {
    ms: Option<u64>,
}

/// Burns `ms` of CPU on the worker's only runtime thread, as a CPU-heavy handler would.
async fn cpu(State(s): State<WorkerState>, Query(q): Query<CpuQuery>) -> Response {
    let started = Instant::now();
    let ms = q.ms.unwrap_or(100).min(MAX_CPU_MS);
    let until = started + Duration::from_millis(ms);
    let mut x: u64 = 1;
    while Instant::now() < until {
        // Work the optimiser cannot remove.
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    tokio::time::sleep(s.faults.delay()).await;
    reply(&s, ms, started)
}

fn reply(s: &WorkerState, chosen: u64, started: Instant) -> Response {
    s.faults.burn_request();
    if s.faults.should_fail() {
        let body = json!({
            "error": "injected_fault",
            "message": "this worker's FAULT_ERROR_RATE failed the request",
            "workerId": s.ctx.id,
        });
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
    }
    Json(Reply {
        worker_id: s.ctx.id,
        worker_pid: s.ctx.pid,
        processing_time: chosen,
        actual_time: started.elapsed().as_millis() as u64,
        timestamp: now_ms(),
    })
    .into_response()
}

// ---------------------------------------------------------------------------------------------------
// The master
// ---------------------------------------------------------------------------------------------------

/// One worker in `/lb-stats`: the Node original's fields in correct units, plus the outlier state.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStats {
    /// The slot, 1..=N.
    pub id: usize,
    /// The current process, if any.
    pub pid: Option<u32>,
    /// `starting`, `ready`, `draining`, `stopped` or `failed`.
    pub state: SlotState,
    /// Requests in flight now (counted by the master at dispatch).
    pub active_connections: u64,
    /// Requests sent to this slot since the master started.
    pub total_requests: u64,
    /// Mean response time in ms, as the master measured it (`null` before the first).
    pub avg_response_time: Option<f64>,
    /// 95th-percentile response time in ms.
    pub p95_response_time: Option<f64>,
    /// Least-response-time's current estimate in ms (decays while the worker is idle).
    pub ewma_response_time: Option<f64>,
    /// The weighted strategy's weight.
    pub weight: u32,
    /// CPU use in percent of one core, sampled every `METRICS_INTERVAL`.
    pub cpu_usage: f64,
    /// Resident memory in bytes.
    pub memory_usage: u64,
    /// Responses with a 5xx status and requests that failed in transport.
    pub error_count: u64,
    /// Ready and not ejected: taking traffic.
    pub healthy: bool,
    /// While ejected: when it will be readmitted, in ms since the Unix epoch.
    pub ejected_until: Option<u64>,
    /// Times ejected so far.
    pub ejections: u32,
    /// Errors in a row right now.
    pub consecutive_errors: u32,
}

/// `/lb-stats`'s body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LbStats {
    /// The strategy in use.
    pub strategy: &'static str,
    /// Every slot.
    pub workers: Vec<WorkerStats>,
    /// Sum of the workers' `totalRequests`.
    pub total_requests: u64,
    /// Sum of the workers' `activeConnections`.
    pub total_active: u64,
    /// The ejection settings.
    pub outlier_detection: Value,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Lb {
    /// The figures `/lb-stats` shows.
    pub fn stats(&self) -> LbStats {
        let now = Instant::now();
        let wall = SystemTime::now();
        let ready = self.handle.upstreams();
        let switch = self.balancer.inner();
        let workers: Vec<WorkerStats> = self
            .handle
            .workers()
            .into_iter()
            .map(|w| {
                let backend = ready.workers().iter().find(|b| Some(b.pid()) == w.pid);
                let outlier = backend.map(|b| self.balancer.status(b, now));
                let ejected_until = outlier.and_then(|o| o.ejected_until).map(|until| {
                    let at = wall + until.saturating_duration_since(now);
                    at.duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64)
                });
                let summary = self.latency.summary(w.id);
                let counters = backend.map(|b| b.counters());
                let cpu = counters.map_or(0, |c| {
                    c.cpu_centi_percent
                        .load(std::sync::atomic::Ordering::Relaxed)
                });
                WorkerStats {
                    id: w.id,
                    pid: w.pid,
                    state: w.state,
                    active_connections: w.in_flight,
                    total_requests: w.requests,
                    avg_response_time: summary.map(|s| ms(s.avg)),
                    p95_response_time: summary.map(|s| ms(s.p95)),
                    ewma_response_time: backend
                        .and_then(|b| switch.least_response_time().estimate(b, now))
                        .map(ms),
                    weight: switch.weighted().weight(w.id),
                    cpu_usage: cpu as f64 / 100.0,
                    memory_usage: counters.map_or(0, |c| {
                        c.rss_bytes.load(std::sync::atomic::Ordering::Relaxed)
                    }),
                    error_count: w.errors,
                    healthy: backend.is_some() && ejected_until.is_none(),
                    ejected_until,
                    ejections: outlier.map_or(0, |o| o.ejections),
                    consecutive_errors: outlier.map_or(0, |o| o.consecutive_errors),
                }
            })
            .collect();
        let c = self.balancer.config();
        LbStats {
            strategy: switch.current().name(),
            total_requests: workers.iter().map(|w| w.total_requests).sum(),
            total_active: workers.iter().map(|w| w.active_connections).sum(),
            workers,
            outlier_detection: json!({
                "consecutiveErrors": c.consecutive_errors,
                "baseEjectionMs": c.base_ejection.as_millis() as u64,
                "maxEjectionMs": c.max_ejection.as_millis() as u64,
                "maxEjectionPercent": c.max_ejection_percent,
            }),
        }
    }
}

/// A JSON error body with a machine-readable code.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": code, "message": message.into(), "status": status.as_u16() });
    (status, Json(body)).into_response()
}

async fn lb_stats(State(lb): State<Lb>) -> Json<LbStats> {
    Json(lb.stats())
}

async fn current_strategy(State(lb): State<Lb>) -> Json<Value> {
    let valid: Vec<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
    Json(json!({ "strategy": lb.balancer.inner().current().name(), "valid": valid }))
}

/// The body of an admin POST, or a message saying what was expected (`example`) for the 400.
fn json_body<T>(body: Result<Json<T>, JsonRejection>, example: &str) -> Result<T, String> {
    body.map(|Json(t)| t)
        .map_err(|e| format!("expected a JSON body like {example}: {e}"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StrategyChange {
    strategy: String,
}

/// `POST /lb/strategy {"strategy": "…"}`: switches for every request from now on.
async fn set_strategy(
    State(lb): State<Lb>,
    body: Result<Json<StrategyChange>, JsonRejection>,
) -> Response {
    let change = match json_body(body, r#"{"strategy": "weighted"}"#) {
        Ok(change) => change,
        Err(why) => return error(StatusCode::BAD_REQUEST, "bad_request", why),
    };
    let next = match change.strategy.parse::<Strategy>() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "unknown_strategy", e.to_string()),
    };
    let previous = lb.balancer.inner().set(next);
    tracing::info!(%previous, strategy = %next, "strategy switched");
    Json(json!({ "strategy": next.name(), "previous": previous.name() })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FaultChange {
    worker: usize,
    #[serde(flatten)]
    fault: Value,
}

/// `POST /lb/fault {"worker": 2, "delayMs": 50, "errorRate": 100, "burnCpu": true, "cpuMs": 8}`: replaces that
/// worker's faults (omitted fields are 0/false, so `{"worker": 2}` clears them).
async fn set_fault(
    State(lb): State<Lb>,
    body: Result<Json<FaultChange>, JsonRejection>,
) -> Response {
    let change = match json_body(body, r#"{"worker": 2, "delayMs": 50}"#) {
        Ok(change) => change,
        Err(why) => return error(StatusCode::BAD_REQUEST, "bad_request", why),
    };
    let spec = match serde_json::from_value::<FaultSpec>(change.fault) {
        Ok(spec) => spec,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    if let Err(e) = spec.validate() {
        return error(StatusCode::BAD_REQUEST, "bad_request", e);
    }
    if !lb.handle.workers().iter().any(|w| w.id == change.worker) {
        return error(
            StatusCode::NOT_FOUND,
            "no_such_worker",
            format!("there is no worker {}", change.worker),
        );
    }
    let question = json!({ "fault": spec });
    match lb
        .handle
        .request(change.worker, question, FAULT_TIMEOUT)
        .await
    {
        Ok(answer) if answer.get("error").is_some() => error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            answer["error"].to_string(),
        ),
        Ok(answer) => {
            Json(json!({ "worker": change.worker, "fault": answer["fault"] })).into_response()
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "worker_unavailable",
            format!("worker {} did not take the fault: {e}", change.worker),
        ),
    }
}

/// The master's own routes. Mutations are POST-only, so a crawler or a prefetching browser that
/// follows links cannot switch strategies or break workers.
pub fn master_routes(lb: Lb) -> MasterRoutes {
    MasterRoutes::new(
        &["/lb-stats", "/lb/"],
        Router::new()
            .route("/lb-stats", get(lb_stats))
            .route("/lb/strategy", get(current_strategy).post(set_strategy))
            .route("/lb/fault", post(set_fault))
            .with_state(lb),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = Settings::from_source(&[]).expect("defaults are valid");
        assert_eq!(s.strategy, Strategy::LeastConnections);
        assert!(s.options.weights.is_empty());
        assert_eq!(s.fault_worker, None);
        assert_eq!(s.outlier, OutlierConfig::default());
    }

    #[test]
    fn an_unknown_strategy_is_an_error_naming_the_valid_ones() {
        let err = Settings::from_source(&[("STRATEGY", "random")]).expect_err("not a strategy");
        assert_eq!(err.var, "STRATEGY");
        assert!(err.to_string().contains("least-response-time"), "{err}");
    }

    #[test]
    fn weights_and_faults_parse() {
        let s = Settings::from_source(&[
            ("WORKER_WEIGHTS", "3,1"),
            ("FAULT_WORKER", "2"),
            ("FAULT_DELAY_MS", "50"),
            ("FAULT_BURN_CPU", "true"),
        ])
        .expect("valid");
        assert_eq!(s.options.weights, [3, 1]);
        assert_eq!(s.fault_worker, Some(2));
        assert_eq!(s.fault.delay_ms, 50);
        assert!(s.fault.burn_cpu);
        let err = Settings::from_source(&[("WORKER_WEIGHTS", "3,0")]).expect_err("0 weight");
        assert_eq!(err.var, "WORKER_WEIGHTS");
    }
}
