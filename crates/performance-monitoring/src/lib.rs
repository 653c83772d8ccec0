//! Lesson 03: performance monitoring.
//!
//! The master is the edge every request crosses, so it measures there: per worker, an hdrhistogram
//! of latencies over a sliding 60-second window (and since the start), request and error rates over
//! 1, 10 and 60 seconds, in-flight counts; and it samples each worker process's CPU and memory by
//! pid. Workers report how late their runtime's timers fire (lag). From those, a health score per
//! worker, alerts, a one-hour history, Prometheus text and a live dashboard. The machinery lives in
//! [`common::metrics`]; this crate composes it and gives the workers routes worth measuring.
//!
//! Layout:
//! - [`Settings`]: the alert and health thresholds (`ALERT_*`) and `MONITORING`;
//! - [`cluster`]: the whole cluster, ready to `run()`;
//! - [`worker_router`]: what each worker serves: `/`, `/work`, `/delay`, `/burn`, `/block`, `/fail`;
//! - [`master_routes`]: `/metrics`, `/metrics/prometheus`, `/alerts`, `/history` and `/dashboard`
//!   (all from [`common::metrics::routes`]).

use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common::config::{self, ConfigError, ProcessEnv, Source};
use common::metrics::{Monitor, Thresholds, routes};
use common::{Cluster, ClusterHandle, Config, MasterRoutes, WorkerContext};
use serde::Deserialize;
use serde_json::json;

/// The dashboard page (it lives in `common`, which every lesson with monitoring serves it from).
pub use common::metrics::routes::DASHBOARD_HTML;

/// The longest `/delay` sleeps.
pub const MAX_DELAY_MS: u64 = 60_000;
/// The longest `/burn` burns a core.
pub const MAX_BURN_MS: u64 = 30_000;
/// The longest `/block` blocks the worker's runtime: well under the hang detector's three missed
/// heartbeats at the default `HEALTH_CHECK_INTERVAL` (5 s), so a demonstration never gets the
/// worker killed.
pub const MAX_BLOCK_MS: u64 = 2_000;
/// How often the master snapshots the cluster into `/history`.
pub const HISTORY_INTERVAL: Duration = Duration::from_secs(1);

/// The lesson's own settings; the runtime's (`PORT`, `WORKERS`, …) are in [`Config`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// `ALERT_CPU_PERCENT` (80), `ALERT_MEMORY_PERCENT` (85), `ALERT_LAG_MS` (100),
    /// `ALERT_ERROR_RATE` (5, percent) and `ALERT_P95_MS` (1000).
    pub thresholds: Thresholds,
    /// `MONITORING` = `on` (default) or `off`: off leaves the monitor off the edge's request path,
    /// so `scripts/bench-monitoring` can measure what it costs. CPU and memory are still sampled.
    pub observe: bool,
}

impl Settings {
    /// Reads the process environment; on a bad value prints the reason and exits with status 2.
    pub fn from_env_or_exit() -> Self {
        Self::from_source(&ProcessEnv).unwrap_or_else(|e| config::exit_bad_config(&e))
    }

    /// Reads every variable from `src`.
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let observe = config::var(src, "MONITORING", "on or off", |s| match s {
            "on" => Some(true),
            "off" => Some(false),
            _ => None,
        })?
        .unwrap_or(true);
        Ok(Self {
            thresholds: Thresholds::from_source(src)?,
            observe,
        })
    }
}

/// The lesson's cluster: workers with measurable routes, a monitor on the edge, and the master's
/// observability routes.
pub fn cluster(config: Config, settings: Settings) -> Cluster {
    // Memory percentages are of MAX_MEMORY when set (the limit that gets a worker replaced).
    let monitor = Monitor::new(settings.thresholds, config.max_memory);
    let for_routes = monitor.clone();
    let for_history = monitor.clone();
    let for_health = monitor.clone();
    let mut cluster = Cluster::new("performance-monitoring", config)
        .worker(worker_router)
        // /health reports each ready worker's score, and "degraded" when one scores 50 or less.
        .health_scorer(move |workers| for_health.scores(workers));
    if settings.observe {
        cluster = cluster.observe(monitor);
    }
    cluster
        .master(move |handle| master_routes(for_routes, handle))
        .on_start(move |handle| {
            tokio::spawn(for_history.keep_history(handle, HISTORY_INTERVAL));
        })
        .hint("open {url}/dashboard")
        .hint("curl {url}/metrics")
        .hint("curl {url}/metrics/prometheus")
        .hint("ab -l -n 2000 -c 20 {url}/work")
}

/// The master's routes: the monitor's JSON and Prometheus routes, and the dashboard.
pub fn master_routes(monitor: Monitor, handle: ClusterHandle) -> MasterRoutes {
    routes::routes(monitor, handle).merge(routes::dashboard())
}

#[derive(Debug, Deserialize)]
struct Ms {
    ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Status {
    status: Option<u16>,
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response()
}

/// `?ms=N` within `0..=max`, or `default` when absent.
fn millis(q: Result<Query<Ms>, QueryRejection>, default: u64, max: u64) -> Result<u64, String> {
    match q {
        Ok(Query(Ms { ms: None })) => Ok(default),
        Ok(Query(Ms { ms: Some(ms) })) if ms <= max => Ok(ms),
        Ok(Query(Ms { ms: Some(ms) })) => Err(format!("ms={ms} is too long: expected 0 to {max}")),
        Err(e) => Err(format!(
            "{e}: expected ?ms=N, a whole number of milliseconds from 0 to {max}"
        )),
    }
}

/// The router each worker serves.
///
/// - `/`: who answered;
/// - `/work`: a typical request: 5 to 50 ms of waiting, and 2% answer 500 (for the dashboard);
/// - `/delay?ms=N`: waits N ms without using the CPU: a known latency to check percentiles against;
/// - `/burn?ms=N`: keeps one core busy for N ms on a blocking thread (the runtime stays responsive);
/// - `/block?ms=N`: blocks the worker's runtime thread for N ms, as a synchronous handler would:
///   every other request on this worker waits, and the runtime lag shows it;
/// - `/fail?status=N`: answers status N (default 500).
pub fn worker_router(ctx: &WorkerContext) -> Router {
    let id = ctx.id;
    let pid = ctx.pid;
    Router::new()
        .route(
            "/",
            get(move || async move { Json(json!({ "workerId": id, "workerPid": pid })) }),
        )
        .route(
            "/work",
            get(move || async move {
                let ms = rand::random_range(5..=50u64);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let status = if rand::random_bool(0.02) {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                };
                (
                    status,
                    Json(json!({ "workerId": id, "processingTime": ms })),
                )
            }),
        )
        .route(
            "/delay",
            get(move |q: Result<Query<Ms>, QueryRejection>| async move {
                let ms = match millis(q, 100, MAX_DELAY_MS) {
                    Ok(ms) => ms,
                    Err(msg) => return bad_request(msg),
                };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Json(json!({ "workerId": id, "delayedMs": ms })).into_response()
            }),
        )
        .route(
            "/burn",
            get(move |q: Result<Query<Ms>, QueryRejection>| async move {
                let ms = match millis(q, 1000, MAX_BURN_MS) {
                    Ok(ms) => ms,
                    Err(msg) => return bad_request(msg),
                };
                let burned = tokio::task::spawn_blocking(move || burn(Duration::from_millis(ms)))
                    .await
                    .unwrap_or(0);
                Json(json!({ "workerId": id, "burnedMs": ms, "iterations": burned }))
                    .into_response()
            }),
        )
        .route(
            "/block",
            get(move |q: Result<Query<Ms>, QueryRejection>| async move {
                let ms = match millis(q, 500, MAX_BLOCK_MS) {
                    Ok(ms) => ms,
                    Err(msg) => return bad_request(msg),
                };
                // Deliberately blocking: this is the mistake the lag metric exists to catch.
                std::thread::sleep(Duration::from_millis(ms));
                Json(json!({ "workerId": id, "blockedMs": ms })).into_response()
            }),
        )
        .route(
            "/fail",
            get(move |q: Result<Query<Status>, QueryRejection>| async move {
                let code = match q {
                    Ok(Query(Status { status })) => status.unwrap_or(500),
                    Err(e) => return bad_request(format!("{e}: expected ?status=N")),
                };
                match StatusCode::from_u16(code) {
                    Ok(status) if code >= 400 => {
                        (status, Json(json!({ "workerId": id, "status": code }))).into_response()
                    }
                    _ => bad_request(format!(
                        "status={code} is not an error status: expected 400 to 599"
                    )),
                }
            }),
        )
}

/// Spins until `how_long` has passed; returns the iterations, so the work cannot be optimised away.
fn burn(how_long: Duration) -> u64 {
    let start = Instant::now();
    let mut x: u64 = 0;
    while start.elapsed() < how_long {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn ctx() -> WorkerContext {
        WorkerContext {
            id: 1,
            pid: 42,
            generation: 0,
            version: None,
            pool: None,
        }
    }

    async fn get_status(uri: &str) -> StatusCode {
        worker_router(&ctx())
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn bad_or_out_of_range_queries_are_400_not_a_panic() {
        assert_eq!(get_status("/delay?ms=abc").await, StatusCode::BAD_REQUEST);
        assert_eq!(
            get_status("/delay?ms=99999999").await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(get_status("/block?ms=5000").await, StatusCode::BAD_REQUEST);
        assert_eq!(
            get_status("/fail?status=200").await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(get_status("/fail?status=x").await, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn routes_answer() {
        assert_eq!(get_status("/").await, StatusCode::OK);
        assert_eq!(get_status("/delay?ms=1").await, StatusCode::OK);
        assert_eq!(get_status("/burn?ms=1").await, StatusCode::OK);
        assert_eq!(
            get_status("/fail?status=503").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn settings_are_read_from_the_environment() {
        let s = Settings::from_source(&[("ALERT_P95_MS", "300")]).unwrap();
        assert_eq!(s.thresholds.p95_ms, 300.0);
        assert!(s.observe, "monitoring is on by default");
        assert!(
            !Settings::from_source(&[("MONITORING", "off")])
                .unwrap()
                .observe
        );
        let e = Settings::from_source(&[("ALERT_LAG_MS", "soon")]).unwrap_err();
        assert_eq!(e.var, "ALERT_LAG_MS");
        let e = Settings::from_source(&[("MONITORING", "maybe")]).unwrap_err();
        assert_eq!(e.var, "MONITORING");
    }
}
