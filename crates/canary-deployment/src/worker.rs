//! What every worker serves, whichever version it runs: `/`, `/api/data` and its own `/health`,
//! with the fault knob that makes a bad canary on purpose.
//!
//! The version comes from the runtime (`WorkerContext::version`, set from the worker's pool), and
//! the runtime puts it on every response as `X-App-Version`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::WorkerContext;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Faults a worker injects into `/` and `/api/data` (never into `/health`, so a bad canary is
/// found by its traffic, as a real one would be).
#[derive(Debug, Default)]
pub struct Faults {
    /// Errors per million requests.
    error_ppm: AtomicU32,
    latency_ms: AtomicU64,
}

/// The knob's JSON, as `POST /faults/canary` takes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultKnob {
    /// The share of requests answered 500, 0.0 to 1.0.
    #[serde(default)]
    pub error_rate: f64,
    /// Added to every request, in milliseconds (0 to 60000).
    #[serde(default)]
    pub latency_ms: u64,
}

impl FaultKnob {
    /// Why the knob cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!(
                "errorRate must be from 0.0 to 1.0, not {}",
                self.error_rate
            ));
        }
        if self.latency_ms > 60_000 {
            return Err(format!(
                "latencyMs must be from 0 to 60000, not {}",
                self.latency_ms
            ));
        }
        Ok(())
    }
}

impl Faults {
    /// Sets the knob.
    pub fn set(&self, knob: FaultKnob) {
        let ppm = (knob.error_rate.clamp(0.0, 1.0) * 1_000_000.0).round() as u32;
        self.error_ppm.store(ppm, Ordering::Relaxed);
        self.latency_ms.store(knob.latency_ms, Ordering::Relaxed);
    }

    async fn apply(&self) -> Option<Response> {
        let latency = self.latency_ms.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let ppm = self.error_ppm.load(Ordering::Relaxed);
        (ppm > 0 && rand::random_range(0..1_000_000) < ppm).then(|| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(
                    json!({ "error": "injected", "message": "a fault injected by /faults/canary" }),
                ),
            )
                .into_response()
        })
    }
}

#[derive(Clone)]
struct Ctx {
    id: usize,
    pid: u32,
    version: Arc<str>,
    faults: Arc<Faults>,
}

/// The worker's router.
pub fn router(ctx: &WorkerContext, faults: Arc<Faults>) -> Router {
    let state = Ctx {
        id: ctx.id,
        pid: ctx.pid,
        version: ctx.version.as_deref().unwrap_or("unversioned").into(),
        faults,
    };
    Router::new()
        .route("/", get(hello))
        .route("/api/data", get(data))
        .route("/health", get(health))
        .with_state(state)
}

async fn hello(State(c): State<Ctx>) -> Response {
    if let Some(fault) = c.faults.apply().await {
        return fault;
    }
    axum::Json(json!({
        "message": format!("Hello from {}", c.version),
        "version": &*c.version,
        "worker": c.id,
        "pid": c.pid,
    }))
    .into_response()
}

async fn data(State(c): State<Ctx>) -> Response {
    if let Some(fault) = c.faults.apply().await {
        return fault;
    }
    axum::Json(json!({ "version": &*c.version, "worker": c.id, "items": [1, 2, 3] }))
        .into_response()
}

async fn health(State(c): State<Ctx>) -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok", "version": &*c.version, "worker": c.id }))
}

/// Answers the master's questions over the control channel: `{"faults": {…}}` sets the knob.
pub fn answer(faults: &Faults, question: &Value) -> Value {
    match serde_json::from_value::<FaultKnob>(question["faults"].clone()) {
        Ok(knob) if knob.check().is_ok() => {
            faults.set(knob);
            json!({ "ok": true })
        }
        _ => {
            json!({ "ok": false, "error": "expected {\"faults\": {\"errorRate\": …, \"latencyMs\": …}}" })
        }
    }
}
