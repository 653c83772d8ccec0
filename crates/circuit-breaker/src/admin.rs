//! The master's routes. In cluster scope the master owns the breakers ([`MasterBreakers`]):
//! the routes read and change them, and a change is pushed to every worker, which has it
//! before the route answers (`appliedOn` lists them).
//! In worker scope each worker has its own, so the master asks every Ready worker over the
//! control channel and gathers the answers. The services' faults it holds itself.
//!
//! - `GET /circuit-status`: the cluster's breakers (cluster scope) or every worker's (worker
//!   scope), with the original's field names;
//! - `POST /circuit-reset`: resets every breaker, everywhere (the original took GET too, so a
//!   crawler could reset it; here a GET is a 405); `changed` lists the circuits that were not
//!   closed already;
//! - `GET /circuit/{name}`, `POST /circuit/{name}/open|close|reset`: one circuit, everywhere;
//! - `GET /faults/{service}`, `POST /faults/{service}` (`{"errorRate", "latencyMs", "down"}`,
//!   omitted fields reset to 0/false): a service's faults and the calls that reached it;
//! - `POST /faults/workers/{id}` (`{"failing": bool}`): one worker fails on its own, for the
//!   outlier ejection that `/circuit-status` shows under `outlierDetection`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::balance::{Outlier, RoundRobin};
use common::breaker::{MasterBreakers, State as BreakerState};
use common::{ClusterHandle, MasterRoutes, SlotState};
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::CIRCUITS;
use crate::services::{FaultSpec, Services};

/// How long the master waits for each worker's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the master's routes share.
#[derive(Clone)]
pub struct Admin {
    handle: ClusterHandle,
    services: Services,
    /// The cluster's breakers, in cluster scope.
    cluster: Option<MasterBreakers>,
    /// The master's outlier ejection of failing workers.
    outlier: Arc<Outlier<RoundRobin>>,
}

impl Admin {
    /// Routes over `handle`'s workers and the master's `services`; `cluster` is the master's
    /// breakers in cluster scope, `None` in worker scope.
    pub fn new(
        handle: ClusterHandle,
        services: Services,
        cluster: Option<MasterBreakers>,
        outlier: Arc<Outlier<RoundRobin>>,
    ) -> Self {
        Self {
            handle,
            services,
            cluster,
            outlier,
        }
    }

    /// `outlierDetection` in `/circuit-status`: each Ready worker's ejection state, beside the
    /// breakers, since the two guard against different failures (a worker of ours that
    /// fails, a service that fails for all of them).
    fn outliers(&self) -> Value {
        let now = Instant::now();
        let ready = self.handle.upstreams();
        let workers: Vec<Value> = ready
            .workers()
            .iter()
            .map(|w| {
                let s = self.outlier.status(w, now);
                json!({
                    "id": w.slot(),
                    "pid": w.pid(),
                    "ejected": s.ejected_until.is_some(),
                    "ejectedForMs": s.ejected_until.map(|t| t.saturating_duration_since(now).as_millis() as u64),
                    "ejections": s.ejections,
                    "consecutiveErrors": s.consecutive_errors,
                })
            })
            .collect();
        let c = self.outlier.config();
        json!({
            "consecutiveErrors": c.consecutive_errors,
            "baseEjectionMs": c.base_ejection.as_millis() as u64,
            "maxEjectionPercent": c.max_ejection_percent,
            "workers": workers,
        })
    }

    /// After a change to the cluster's breakers: the Ready workers that have it. The change was
    /// queued to every worker's control channel before this asks them anything, and a worker
    /// handles its messages in order, so its answer proves it obeys the new state: the route
    /// answers only once every worker does ("at once" means before the operator's next call).
    async fn applied(&self) -> Vec<usize> {
        let mut ids: Vec<usize> = self
            .ask_all(json!({ "op": "status" }))
            .await
            .into_iter()
            .filter_map(|(slot, answer)| answer.is_ok().then_some(slot))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Asks every Ready worker `question` at once; each answer, or why there is none.
    async fn ask_all(&self, question: Value) -> Vec<(usize, Result<Value, String>)> {
        let slots: Vec<usize> = self
            .handle
            .workers()
            .into_iter()
            .filter(|w| w.state == SlotState::Ready)
            .map(|w| w.id)
            .collect();
        let asks = slots.iter().map(|&slot| {
            let question = question.clone();
            async move {
                let answer = match self.handle.request(slot, question, ASK_TIMEOUT).await {
                    Ok(a) => match a.get("error") {
                        Some(e) => Err(e.as_str().unwrap_or("error").to_string()),
                        None => Ok(a),
                    },
                    Err(e) => Err(e.to_string()),
                };
                (slot, answer)
            }
        });
        join_all(asks).await
    }

    /// Asks every worker and answers 200 with their replies, or 502 naming the ones that did
    /// not answer (the others did apply the change).
    async fn gather(&self, question: Value, mut body: Value) -> Response {
        let answers = self.ask_all(question).await;
        // An empty list would read as "no breaker is open", which nobody checked.
        if answers.is_empty() {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_ready_worker",
                "no worker is ready to answer",
            );
        }
        let mut workers = Vec::new();
        let mut failed = Vec::new();
        for (slot, answer) in answers {
            match answer {
                Ok(a) => workers.push(a),
                Err(e) => failed.push(json!({ "id": slot, "error": e })),
            }
        }
        let status = if failed.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::BAD_GATEWAY
        };
        body["workers"] = json!(workers);
        if !failed.is_empty() {
            body["failed"] = json!(failed);
        }
        (status, Json(body)).into_response()
    }
}

/// A JSON error body with a machine-readable code.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": code, "message": message.into(), "status": status.as_u16() });
    (status, Json(body)).into_response()
}

/// The 404 for a circuit that does not exist, or `None` when it does.
fn unknown_circuit(name: &str) -> Option<Response> {
    if CIRCUITS.contains(&name) {
        None
    } else {
        Some(error(
            StatusCode::NOT_FOUND,
            "no_such_circuit",
            format!("no circuit {name:?}; there are {}", CIRCUITS.join(", ")),
        ))
    }
}

/// `GET /circuit-status`: `{scope, circuits, workers: [{id, pid, breakers: [Snapshot…]}]}`; a
/// snapshot keeps the original's `name`, `state`, `failureCount`, `successCount`,
/// `failureRate`, `nextAttempt` and `stats` fields, with `slowCallRate` and the rest beside.
///
/// In cluster scope: `{scope: "cluster", circuits, breakers: [Snapshot…]}`, the master's.
async fn status(State(a): State<Admin>) -> Response {
    if let Some(cluster) = &a.cluster {
        let breakers: Vec<Value> = cluster.all().iter().map(|b| json!(b.snapshot())).collect();
        let body = json!({
            "scope": "cluster",
            "circuits": CIRCUITS,
            "breakers": breakers,
            "outlierDetection": a.outliers(),
        });
        return Json(body).into_response();
    }
    let body = json!({ "scope": "worker", "circuits": CIRCUITS, "outlierDetection": a.outliers() });
    a.gather(json!({ "op": "status" }), body).await
}

/// `POST /circuit-reset`.
async fn reset_all(State(a): State<Admin>) -> Response {
    if let Some(cluster) = &a.cluster {
        let changed = cluster.reset_all();
        let breakers: Vec<Value> = cluster.all().iter().map(|b| json!(b.snapshot())).collect();
        let applied = a.applied().await;
        let body = json!({
            "reset": true,
            "scope": "cluster",
            "changed": changed,
            "breakers": breakers,
            "appliedOn": applied,
        });
        return Json(body).into_response();
    }
    let body = json!({ "reset": true });
    a.gather(json!({ "op": "reset" }), body).await
}

/// `GET /circuit/{name}`.
async fn circuit(State(a): State<Admin>, Path(name): Path<String>) -> Response {
    if let Some(res) = unknown_circuit(&name) {
        return res;
    }
    if let Some(b) = a.cluster.as_ref().and_then(|c| c.get(&name)) {
        let body = json!({ "name": name, "scope": "cluster", "breaker": b.snapshot() });
        return Json(body).into_response();
    }
    let question = json!({ "op": "circuit", "name": name });
    a.gather(question, json!({ "name": name })).await
}

/// `POST /circuit/{name}/open|close|reset`, applied on every worker.
async fn circuit_action(
    State(a): State<Admin>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    if let Some(res) = unknown_circuit(&name) {
        return res;
    }
    if !["open", "close", "reset"].contains(&action.as_str()) {
        return error(
            StatusCode::NOT_FOUND,
            "no_such_action",
            format!("no action {action:?}; there are open, close and reset"),
        );
    }
    if let Some((cluster, b)) = a.cluster.as_ref().and_then(|c| Some((c, c.get(&name)?))) {
        match action.as_str() {
            "open" => {
                cluster.force(&name, BreakerState::ForcedOpen);
            }
            "close" => {
                cluster.force(&name, BreakerState::Closed);
            }
            _ => {
                cluster.reset(&name);
            }
        }
        let applied = a.applied().await;
        let body = json!({
            "name": name,
            "action": action,
            "scope": "cluster",
            "breaker": b.snapshot(),
            "appliedOn": applied,
        });
        return Json(body).into_response();
    }
    let question = json!({ "op": "circuit", "name": name, "action": action });
    a.gather(question, json!({ "name": name, "action": action }))
        .await
}

/// The 404 for a service that does not exist.
fn no_such_service(name: &str) -> Response {
    let there = crate::services::SERVICES.join(", ");
    let why = format!("no service {name:?}; there are {there}");
    error(StatusCode::NOT_FOUND, "no_such_service", why)
}

/// `GET /faults/{service}`.
async fn faults(State(a): State<Admin>, Path(name): Path<String>) -> Response {
    match a.services.get(&name) {
        Some(dep) => Json(dep.report()).into_response(),
        None => no_such_service(&name),
    }
}

/// `POST /faults/{service}`: replaces its faults.
async fn set_faults(
    State(a): State<Admin>,
    Path(name): Path<String>,
    body: Result<Json<FaultSpec>, JsonRejection>,
) -> Response {
    let Some(dep) = a.services.get(&name) else {
        return no_such_service(&name);
    };
    let spec = match body {
        Ok(Json(spec)) => spec,
        Err(e) => {
            let why = format!(
                r#"expected a JSON body like {{"errorRate": 0.5, "latencyMs": 100, "down": false}}: {e}"#
            );
            return error(StatusCode::BAD_REQUEST, "bad_request", why);
        }
    };
    if let Err(why) = spec.validate() {
        return error(StatusCode::BAD_REQUEST, "bad_request", why);
    }
    dep.set_faults(spec);
    tracing::info!(service = %name, ?spec, "faults set");
    Json(dep.report()).into_response()
}

/// `POST /faults/workers/{id}` with `{"failing": bool}`: makes one worker fail on its own
/// (every route answers 500), for the outlier ejection beside the breakers.
async fn set_worker_fault(
    State(a): State<Admin>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let Ok(slot) = id.parse::<usize>() else {
        return error(
            StatusCode::NOT_FOUND,
            "no_such_worker",
            format!("no worker {id:?}"),
        );
    };
    let failing = match body.as_ref().map(|Json(v)| v["failing"].as_bool()) {
        Ok(Some(on)) => on,
        _ => {
            let why = r#"expected a JSON body like {"failing": true}"#;
            return error(StatusCode::BAD_REQUEST, "bad_request", why);
        }
    };
    let question = json!({ "op": "failing", "failing": failing });
    match a.handle.request(slot, question, ASK_TIMEOUT).await {
        Ok(answer) => {
            tracing::info!(worker = slot, failing, "worker fault set");
            Json(answer).into_response()
        }
        Err(e) => error(StatusCode::NOT_FOUND, "no_such_worker", e.to_string()),
    }
}

/// The master's own routes. Mutations are POST-only, so a crawler or a prefetching browser that
/// follows links cannot reset breakers or break services.
pub fn routes(admin: Admin) -> MasterRoutes {
    MasterRoutes::new(
        &["/circuit-status", "/circuit-reset", "/circuit/", "/faults/"],
        Router::new()
            .route("/circuit-status", get(status))
            .route("/circuit-reset", post(reset_all))
            .route("/circuit/{name}", get(circuit))
            .route("/circuit/{name}/{action}", post(circuit_action))
            .route("/faults/{service}", get(faults).post(set_faults))
            .route("/faults/workers/{id}", post(set_worker_fault))
            .with_state(admin),
    )
}
