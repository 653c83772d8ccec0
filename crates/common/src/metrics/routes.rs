//! The master's observability routes over a [`Monitor`]: `/metrics`, `/metrics/prometheus`,
//! `/alerts` and `/history`. A lesson merges them into its [`MasterRoutes`].

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::history::HISTORY_CAPACITY;
use super::monitor::Monitor;
use super::prometheus;
use crate::cluster::ClusterHandle;
use crate::edge::MasterRoutes;

/// The paths [`routes`] answers.
pub const PATHS: [&str; 4] = ["/metrics", "/metrics/prometheus", "/alerts", "/history"];

/// `/history` without `seconds`: five minutes.
const DEFAULT_HISTORY_SECONDS: usize = 300;

#[derive(Clone)]
struct Ctx {
    monitor: Monitor,
    handle: ClusterHandle,
}

/// `/metrics`, `/metrics/prometheus`, `/alerts` and `/history` for `handle`'s cluster.
pub fn routes(monitor: Monitor, handle: ClusterHandle) -> MasterRoutes {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/metrics/prometheus", get(prometheus_text))
        .route("/alerts", get(alerts))
        .route("/history", get(history))
        .with_state(Ctx { monitor, handle });
    MasterRoutes::new(&PATHS, router)
}

async fn metrics(State(c): State<Ctx>) -> impl IntoResponse {
    Json(c.monitor.report_for(&c.handle))
}

async fn prometheus_text(State(c): State<Ctx>) -> impl IntoResponse {
    let report = c.monitor.report_for(&c.handle);
    (
        [(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)],
        prometheus::render(&c.monitor, &report),
    )
}

async fn alerts(State(c): State<Ctx>) -> impl IntoResponse {
    let report = c.monitor.report_for(&c.handle);
    let alerts = c.monitor.alerts(&report);
    Json(json!({
        "active": alerts.len(),
        "alerts": alerts,
        "thresholds": c.monitor.thresholds(),
    }))
}

#[derive(Deserialize)]
struct HistoryQuery {
    seconds: Option<usize>,
}

async fn history(
    State(c): State<Ctx>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> axum::response::Response {
    let seconds = match query {
        Ok(Query(q)) => q.seconds.unwrap_or(DEFAULT_HISTORY_SECONDS),
        Err(e) => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                Json(json!({
                    "error": format!("bad query: {e}; expected ?seconds=N with N from 1 to {HISTORY_CAPACITY}")
                })),
            )
                .into_response();
        }
    };
    let seconds = seconds.clamp(1, HISTORY_CAPACITY);
    let points = c.monitor.history(seconds);
    Json(json!({ "interval": 1, "seconds": seconds, "points": points })).into_response()
}
