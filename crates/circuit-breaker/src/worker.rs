//! What each worker serves, and how it answers the master's questions about its breakers.
//!
//! Fallbacks tell the cases apart, because a client must react differently to each:
//! - the circuit is open: `503` at once, with `Retry-After` and a body naming the circuit (the
//!   service was not called; retry later);
//! - the call was made and failed (an error status, a refused connection, a timeout): `502`;
//! - either way, if the service answered well before, its last good answer rides along as
//!   `fallback: {"stale": true, "data": …, "ageMs": …}`, for a caller that prefers old data to
//!   none.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use common::BoxError;
use common::WorkerContext;
use common::breaker::{CircuitOpen, guarded};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::Breakers;
use crate::services::{Addresses, SERVICES};

/// The longest a call to a service may take, body included, before it counts as failed. Above
/// the 3 s latency the lesson's tests inject, so "slow" and "failed" stay different things.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A service's last good answer and when it came.
type LastGood = Mutex<Option<(Value, Instant)>>;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

#[derive(Clone)]
struct Worker {
    ctx: WorkerContext,
    breakers: Arc<Breakers>,
    addresses: Addresses,
    client: HttpClient,
    /// Each service's last good answer and when it came, for the stale fallback.
    last_good: Arc<Vec<LastGood>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What each worker serves: `/` (no dependency, always 200), `/api/{external,database,payments}`
/// (a real call through that service's breaker) and `/api/fail` (fails on purpose, through its
/// own breaker, as the original's did).
///
/// While `failing` is set (`POST /faults/workers/{id}` on the master), every route but
/// `/ping` fails without an answer (the handler panics, which ends its connection): this
/// worker is broken on its own, whatever its dependencies do, which is what the master's
/// outlier ejection is for.
pub fn router(
    ctx: &WorkerContext,
    breakers: Arc<Breakers>,
    addresses: Addresses,
    failing: Arc<AtomicBool>,
) -> Router {
    let state = Worker {
        ctx: ctx.clone(),
        breakers,
        addresses,
        // One pooled keep-alive client per worker: a call reuses a connection instead of paying a
        // TCP handshake, as a real service client would.
        client: Client::builder(TokioExecutor::new()).build_http(),
        last_good: Arc::new(SERVICES.iter().map(|_| Mutex::new(None)).collect()),
    };
    let mut router = Router::new()
        .route("/", get(home))
        .route("/api/fail", get(fail));
    for (index, name) in SERVICES.into_iter().enumerate() {
        router = router.route(
            &format!("/api/{name}"),
            get(move |s: State<Worker>| call(s, index, name)),
        );
    }
    let id = ctx.id;
    router.with_state(state).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let failing = failing.load(Ordering::Relaxed);
            async move {
                // A worker with a bug of its own: the request's task dies, and its connection
                // with it, so the master gets no answer at all.
                assert!(
                    !failing,
                    "worker {id} is failing on purpose (POST /faults/workers/{id})"
                );
                next.run(req).await
            }
        },
    ))
}

/// The original's `{worker, message, timestamp}`.
async fn home(State(s): State<Worker>) -> Json<Value> {
    Json(json!({ "worker": s.ctx.id, "message": "OK", "timestamp": now_ms() }))
}

/// Calls `name` through its breaker.
async fn call(State(s): State<Worker>, index: usize, name: &'static str) -> Response {
    let (Some(breaker), Some(addr)) = (s.breakers.get(name), s.addresses.get(name)) else {
        return error(
            &s,
            StatusCode::INTERNAL_SERVER_ERROR,
            name,
            "unconfigured",
            None,
        );
    };
    let request = match http::Request::get(format!("http://{addr}/{name}"))
        // The service counts calls per worker from this.
        .header("x-worker-id", s.ctx.id)
        .body(Empty::new())
    {
        Ok(r) => r,
        Err(e) => {
            return error(
                &s,
                StatusCode::INTERNAL_SERVER_ERROR,
                name,
                &e.to_string(),
                None,
            );
        }
    };
    let client = s.client.clone();
    let send = tower::service_fn(move |req: http::Request<Empty<Bytes>>| {
        let client = client.clone();
        async move {
            // The body is read inside the breaker, so a call that dies mid-body counts as failed.
            let exchange = async {
                let res = client.request(req).await?;
                let (parts, body) = res.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok::<_, BoxError>(http::Response::from_parts(parts, body))
            };
            match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}").into()),
            }
        }
    });
    let outcome = guarded(breaker, send, request).await;
    let slot = &s.last_good[index];
    match outcome {
        Ok(res) if res.status().is_success() => {
            let data: Value = serde_json::from_slice(res.body()).unwrap_or(Value::Null);
            *slot.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((data.clone(), Instant::now()));
            Json(json!({
                "worker": s.ctx.id,
                "message": "OK",
                "service": name,
                "data": data,
                "timestamp": now_ms(),
            }))
            .into_response()
        }
        Ok(res) => {
            let why = format!("{name} answered {}", res.status());
            error(&s, StatusCode::BAD_GATEWAY, name, &why, Some(index))
        }
        Err(e) => match e.downcast_ref::<CircuitOpen>() {
            Some(open) => refused(&s, open, Some(index)),
            None => error(
                &s,
                StatusCode::BAD_GATEWAY,
                name,
                &e.to_string(),
                Some(index),
            ),
        },
    }
}

/// `/api/fail`: a 500 every time while the circuit lets it through, as in the original; once
/// the `fail` circuit opens, a 503 from the breaker instead, and no other route is touched.
async fn fail(State(s): State<Worker>) -> Response {
    let Some(breaker) = s.breakers.get("fail") else {
        return error(
            &s,
            StatusCode::INTERNAL_SERVER_ERROR,
            "fail",
            "unconfigured",
            None,
        );
    };
    let id = s.ctx.id;
    let failing = tower::service_fn(move |()| async move {
        let body = json!({ "error": "Forced failure", "worker": id });
        Ok::<_, BoxError>((StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response())
    });
    match guarded(breaker, failing, ()).await {
        Ok(res) => res,
        Err(e) => match e.downcast_ref::<CircuitOpen>() {
            Some(open) => refused(&s, open, None),
            None => error(&s, StatusCode::BAD_GATEWAY, "fail", &e.to_string(), None),
        },
    }
}

/// The last good answer of service `index`, marked stale, if there is one.
fn stale(s: &Worker, index: Option<usize>) -> Option<Value> {
    let slot = s.last_good.get(index?)?;
    let guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
    let (data, at) = guard.as_ref()?;
    Some(json!({
        "stale": true,
        "data": data,
        "ageMs": at.elapsed().as_millis() as u64,
    }))
}

/// The circuit is open: 503 with `Retry-After`, without calling the service.
fn refused(s: &Worker, open: &CircuitOpen, index: Option<usize>) -> Response {
    let mut body = json!({
        "error": "circuit_open",
        "circuit": open.name(),
        "state": open.state(),
        "retryAfterMs": open.retry_after().as_millis() as u64,
        "worker": s.ctx.id,
    });
    if let Some(fallback) = stale(s, index) {
        body["fallback"] = fallback;
    }
    let mut res = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    res.headers_mut()
        .insert(RETRY_AFTER, open.retry_after_header());
    res
}

/// The call was made and failed (or could not be made).
fn error(
    s: &Worker,
    status: StatusCode,
    circuit: &str,
    message: &str,
    index: Option<usize>,
) -> Response {
    let mut body = json!({
        "error": "dependency_failed",
        "circuit": circuit,
        "message": message,
        "worker": s.ctx.id,
    });
    if let Some(fallback) = stale(s, index) {
        body["fallback"] = fallback;
    }
    (status, Json(body)).into_response()
}

/// A worker's answer to the master over the control channel:
/// - `{"op": "status"}`: every breaker's snapshot;
/// - `{"op": "reset"}`: resets every breaker, then the snapshots;
/// - `{"op": "circuit", "name": n, "action": "open"|"close"|"reset"}` (action optional): applies
///   it to that breaker, then its snapshot.
///
/// - `{"op": "failing", "failing": bool}`: makes this worker fail on its own (or not).
///
/// Anything else gets `{"error": …}`, which the master turns into a 4xx or 502.
pub fn answer(
    ctx: &WorkerContext,
    breakers: &Breakers,
    failing: &AtomicBool,
    question: &Value,
) -> Value {
    let snapshots =
        |b: &Breakers| -> Vec<Value> { b.all().iter().map(|b| json!(b.snapshot())).collect() };
    match question["op"].as_str() {
        Some("status") => json!({ "id": ctx.id, "pid": ctx.pid, "breakers": snapshots(breakers) }),
        Some("reset") => {
            let changed: Vec<&str> = breakers
                .all()
                .iter()
                .filter(|b| b.reset())
                .map(|b| b.name())
                .collect();
            json!({ "id": ctx.id, "pid": ctx.pid, "changed": changed, "breakers": snapshots(breakers) })
        }
        Some("circuit") => {
            let name = question["name"].as_str().unwrap_or_default();
            let Some(b) = breakers.get(name) else {
                return json!({ "error": format!("no circuit named {name:?}") });
            };
            match question["action"].as_str() {
                None => {}
                Some("open") => b.force_open(),
                Some("close") => b.force_closed(),
                Some("reset") => {
                    b.reset();
                }
                Some(other) => return json!({ "error": format!("no action {other:?}") }),
            }
            json!({ "id": ctx.id, "pid": ctx.pid, "breaker": b.snapshot() })
        }
        Some("failing") => match question["failing"].as_bool() {
            Some(on) => {
                failing.store(on, Ordering::Relaxed);
                json!({ "id": ctx.id, "pid": ctx.pid, "failing": on })
            }
            None => json!({ "error": "failing must be true or false" }),
        },
        _ => json!({ "error": format!("unknown question {question}") }),
    }
}
