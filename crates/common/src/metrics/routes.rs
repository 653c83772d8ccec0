//! The master's observability routes over a [`Monitor`]: `/metrics`, `/metrics/prometheus`,
//! `/alerts` and `/history`, and the live `/dashboard` that reads them. A lesson merges them into
//! its [`MasterRoutes`].

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
use super::view::ClusterView;
use crate::http::routes::MasterRoutes;

/// The paths [`routes`] answers.
pub const PATHS: [&str; 4] = ["/metrics", "/metrics/prometheus", "/alerts", "/history"];

/// The dashboard: one self-contained page (inline CSS and JS, canvas charts, no CDN) that polls
/// `/metrics` and `/history`.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// `/dashboard`, the page of [`DASHBOARD_HTML`].
pub fn dashboard() -> MasterRoutes {
    MasterRoutes::new(
        &["/dashboard"],
        Router::new().route(
            "/dashboard",
            get(|| async { axum::response::Html(DASHBOARD_HTML) }),
        ),
    )
}

/// `/history` without `seconds`: five minutes.
const DEFAULT_HISTORY_SECONDS: usize = 300;

#[derive(Clone)]
struct Ctx<C> {
    monitor: Monitor,
    cluster: C,
}

/// `/metrics`, `/metrics/prometheus`, `/alerts` and `/history` for `cluster` (a `ClusterHandle`).
pub fn routes<C: ClusterView>(monitor: Monitor, cluster: C) -> MasterRoutes {
    let router = Router::new()
        .route("/metrics", get(metrics::<C>))
        .route("/metrics/prometheus", get(prometheus_text::<C>))
        .route("/alerts", get(alerts::<C>))
        .route("/history", get(history::<C>))
        .with_state(Ctx { monitor, cluster });
    MasterRoutes::new(&PATHS, router)
}

async fn metrics<C: ClusterView>(State(c): State<Ctx<C>>) -> impl IntoResponse {
    Json(c.monitor.report_for(&c.cluster))
}

async fn prometheus_text<C: ClusterView>(State(c): State<Ctx<C>>) -> impl IntoResponse {
    let report = c.monitor.report_for(&c.cluster);
    (
        [(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)],
        prometheus::render(&c.monitor, &report),
    )
}

async fn alerts<C: ClusterView>(State(c): State<Ctx<C>>) -> impl IntoResponse {
    let report = c.monitor.report_for(&c.cluster);
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

async fn history<C: ClusterView>(
    State(c): State<Ctx<C>>,
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
