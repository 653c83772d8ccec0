//! The master's routes: the canary (`/canary/*`), its fault knob (`/faults/canary`) and the other
//! deployments (`/deploy/*`). Mutating routes are POST-only (GET answers 405); a body that is not
//! the expected JSON gets 400.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::MasterRoutes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::deploy::{Deployment, Refused};
use crate::worker::FaultKnob;

type Shared = State<Arc<Deployment>>;

/// Every path the master answers for this lesson.
pub const PATHS: [&str; 11] = [
    "/canary/status",
    "/canary/increase",
    "/canary/rollback",
    "/canary/rollout",
    "/canary/pause",
    "/canary/promote",
    "/faults/canary",
    "/deploy/rolling",
    "/deploy/blue-green",
    "/deploy/switch-back",
    "/deploy/status",
];

/// The routes, over `deployment`.
pub fn routes(deployment: Arc<Deployment>) -> MasterRoutes {
    let router = Router::new()
        .route("/canary/status", get(status))
        .route("/canary/increase", post(increase))
        .route("/canary/rollback", post(rollback))
        .route("/canary/rollout", post(rollout))
        .route("/canary/pause", post(pause))
        .route("/canary/promote", post(promote))
        .route("/faults/canary", post(faults).get(get_faults))
        .route("/deploy/rolling", post(rolling))
        .route("/deploy/blue-green", post(blue_green))
        .route("/deploy/switch-back", post(switch_back))
        .route("/deploy/status", get(status))
        .with_state(deployment);
    MasterRoutes::new(&PATHS, router)
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(json!({ "error": code, "message": message, "status": status.as_u16() })),
    )
        .into_response()
}

fn refusal(r: Refused) -> Response {
    let code = match r.status {
        409 => "conflict",
        400 => "bad_request",
        _ => "deployment_failed",
    };
    error(r.status, code, &r.message)
}

/// Parses a JSON body; an empty body is `{}`. Any other failure is a 400 that says why.
// Only ever returned straight to the client: boxing the error response would buy nothing.
#[allow(clippy::result_large_err)]
fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, Response> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(text)
        .map_err(|e| error(400, "bad_request", &format!("bad JSON body: {e}")))
}

async fn status(State(d): Shared) -> axum::Json<Value> {
    axum::Json(d.status())
}

async fn increase(State(d): Shared) -> Response {
    match d.increase().await {
        Ok(p) => axum::Json(json!({ "ok": true, "canaryPercentage": p })).into_response(),
        Err(r) => refusal(r),
    }
}

async fn rollout(State(d): Shared) -> Response {
    match d.rollout().await {
        Ok(p) => axum::Json(json!({ "ok": true, "canaryPercentage": p, "mode": "rollingOut" }))
            .into_response(),
        Err(r) => refusal(r),
    }
}

async fn rollback(State(d): Shared) -> Response {
    match d.rollback("manual").await {
        Ok(()) => axum::Json(json!({ "ok": true, "canaryPercentage": 0 })).into_response(),
        Err(r) => refusal(r),
    }
}

async fn pause(State(d): Shared) -> Response {
    match d.pause() {
        Ok(()) => axum::Json(json!({ "ok": true, "mode": "paused" })).into_response(),
        Err(r) => refusal(r),
    }
}

async fn promote(State(d): Shared) -> Response {
    match d.promote().await {
        Ok(()) => axum::Json(json!({ "ok": true, "mode": "promoted" })).into_response(),
        Err(r) => refusal(r),
    }
}

async fn faults(State(d): Shared, body: Bytes) -> Response {
    let knob: FaultKnob = match json_body(&body) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    if let Err(why) = knob.check() {
        return error(400, "bad_request", &why);
    }
    d.set_faults(knob).await;
    axum::Json(json!({ "ok": true, "faults": knob })).into_response()
}

async fn get_faults(State(d): Shared) -> axum::Json<Value> {
    axum::Json(d.status()["faults"].clone())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RollingBody {
    /// `stable` (default) or `canary`.
    #[serde(default)]
    pool: Option<String>,
    /// `current` (default: restart the same build) or `canary` (deploy the canary's build).
    #[serde(default)]
    build: Option<String>,
}

async fn rolling(State(d): Shared, body: Bytes) -> Response {
    let b: RollingBody = match json_body(&body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let pools = d.status()["pools"].clone();
    let pool = match b.pool.as_deref().unwrap_or("stable") {
        "stable" => pools["stable"].as_u64(),
        "canary" => pools["canary"].as_u64(),
        other => {
            return error(
                400,
                "bad_request",
                &format!("pool must be stable or canary, not {other:?}"),
            );
        }
    };
    let canary_build = match b.build.as_deref().unwrap_or("current") {
        "current" => false,
        "canary" => true,
        other => {
            return error(
                400,
                "bad_request",
                &format!("build must be current or canary, not {other:?}"),
            );
        }
    };
    match d.rolling(pool.unwrap_or(0) as usize, canary_build).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(r) => refusal(r),
    }
}

async fn blue_green(State(d): Shared) -> Response {
    match d.blue_green().await {
        Ok(report) => axum::Json(report).into_response(),
        Err(r) => refusal(r),
    }
}

async fn switch_back(State(d): Shared) -> Response {
    match d.switch_back() {
        Ok(report) => axum::Json(report).into_response(),
        Err(r) => refusal(r),
    }
}
