//! What each worker serves:
//!
//! - `/`: who answered;
//! - `/session`, `GET`/`POST /data`: the course's session routes (`common::session::web`), with
//!   the session kept in `SESSION_STORE`;
//! - `/slow?ms=N`: answers after N ms (at most [`MAX_SLOW_MS`]), for watching a drain;
//! - `/api/notes`: the application's own resource, a small notes API (`GET` lists the newest
//!   100, `POST {"text": …}` adds, `GET /api/notes/{id}` reads one), kept where [`crate::notes`]
//!   says: each worker's memory by default, PostgreSQL with `DATABASE_URL`;
//! - `/api/downstream`: one call to `DOWNSTREAM_URL` through the `downstream` breaker. An open
//!   circuit is a 503 at once with `Retry-After`; a failed call is a 502. Nothing else is behind
//!   the breaker: `/` answers whatever the dependency does.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use bytes::Bytes;
use common::breaker::{BreakerConfig, CircuitBreaker, CircuitOpen, WorkerLink, guarded};
use common::db::notes::NotesError;
use common::session::web::{SessionApp, save_data, session, show_data, with_session};
use common::{BoxError, WorkerContext};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Settings;
use crate::notes::NotesStore;

/// The longest `/slow` waits.
pub const MAX_SLOW_MS: u64 = 60_000;
/// The longest note text, in bytes.
pub const MAX_NOTE_BYTES: usize = 1000;
/// The longest a downstream call may take, body included, before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The breaker's name.
pub const DOWNSTREAM: &str = "downstream";

/// One worker process's breakers (one, `downstream`), shared by its router and its answers to
/// the master: its own (worker scope) or a follower of the master's (cluster scope).
#[derive(Debug)]
pub struct Breakers {
    downstream: CircuitBreaker,
}

impl Breakers {
    /// A closed breaker.
    pub fn new(config: &BreakerConfig) -> Self {
        Self {
            downstream: CircuitBreaker::new(DOWNSTREAM, config.clone()),
        }
    }

    /// A follower of the master's breaker (cluster scope): it reports outcomes to the master and
    /// opens when the master's opens, for every worker at once.
    pub fn following(link: &WorkerLink, config: &BreakerConfig) -> Self {
        Self {
            downstream: link.follower(DOWNSTREAM, config.clone()),
        }
    }

    /// Every call goes straight through (`BREAKER_SCOPE=off`).
    pub fn disabled(config: &BreakerConfig) -> Self {
        let b = Self::new(config);
        b.downstream.force_state(common::breaker::State::Disabled);
        b
    }
}

/// A note as `/api/notes` shows it (the repository calls its text `body`).
#[derive(Debug, Clone, Serialize)]
struct Shown {
    id: i64,
    text: String,
    created: i64,
}

impl From<common::db::notes::Note> for Shown {
    fn from(n: common::db::notes::Note) -> Self {
        Self {
            id: n.id,
            text: n.body,
            created: n.created,
        }
    }
}

#[derive(Clone)]
struct Worker {
    ctx: WorkerContext,
    sessions: SessionApp,
    breakers: Arc<Breakers>,
    downstream: Option<Arc<str>>,
    client: HttpClient,
    notes: Arc<NotesStore>,
}

impl FromRef<Worker> for SessionApp {
    fn from_ref(w: &Worker) -> Self {
        w.sessions.clone()
    }
}

/// A pooled keep-alive HTTP client: a call reuses a connection, as a real service client would.
type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The router each worker serves (see the module docs).
pub fn router(
    ctx: &WorkerContext,
    settings: &Settings,
    breakers: Arc<Breakers>,
    notes: Arc<NotesStore>,
) -> Router {
    let store = match settings.sessions.open_store() {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let state = Worker {
        ctx: ctx.clone(),
        sessions: SessionApp {
            slot: ctx.id,
            pid: ctx.pid,
            store,
            ttl: settings.sessions.session_timeout,
        },
        breakers,
        downstream: settings.downstream.as_deref().map(Arc::from),
        client: Client::builder(TokioExecutor::new()).build_http(),
        notes,
    };
    // Only the session routes make or touch a session: a probe or an API call does not mint one.
    let sessions = Router::new()
        .route("/session", get(session))
        .route("/data", get(show_data).post(save_data))
        .route_layer(middleware::from_fn_with_state(
            state.sessions.clone(),
            with_session,
        ));
    Router::new()
        .route("/", get(home))
        .route("/slow", get(slow))
        .route("/api/notes", get(list_notes).post(add_note))
        .route("/api/notes/{id}", get(one_note))
        .route("/api/downstream", get(call_downstream))
        .merge(sessions)
        .fallback(not_found)
        .with_state(state)
}

fn bad_request(message: String) -> Response {
    let body = json!({ "error": "bad_request", "message": message, "status": 400 });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let body = json!({ "error": "not_found", "path": uri.path(), "status": 404 });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

async fn home(State(w): State<Worker>) -> Json<Value> {
    Json(
        json!({ "workerId": w.ctx.id, "workerPid": w.ctx.pid, "message": "OK", "timestamp": now_ms() }),
    )
}

#[derive(Deserialize)]
struct Ms {
    ms: Option<u64>,
}

/// `/slow?ms=N`: a request that takes N ms (default 1000), to watch a drain let it finish.
async fn slow(State(w): State<Worker>, q: Result<Query<Ms>, QueryRejection>) -> Response {
    let ms = match q {
        Ok(Query(Ms { ms: None })) => 1000,
        Ok(Query(Ms { ms: Some(ms) })) if ms <= MAX_SLOW_MS => ms,
        Ok(Query(Ms { ms: Some(ms) })) => {
            return bad_request(format!("ms={ms} is too long: expected 0 to {MAX_SLOW_MS}"));
        }
        Err(e) => return bad_request(format!("{e}: expected ?ms=N, 0 to {MAX_SLOW_MS}")),
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(json!({ "workerId": w.ctx.id, "sleptMs": ms })).into_response()
}

fn unavailable(e: &NotesError) -> Response {
    tracing::warn!(error = %e, "notes");
    let body = json!({ "error": "notes_unavailable", "message": e.to_string(), "status": 503 });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn list_notes(State(w): State<Worker>) -> Response {
    match w.notes.list().await {
        Ok(all) => {
            let notes: Vec<Shown> = all.into_iter().map(Shown::from).collect();
            Json(json!({ "workerId": w.ctx.id, "store": w.notes.name(), "count": notes.len(), "notes": notes }))
                .into_response()
        }
        Err(e) => unavailable(&e),
    }
}

#[derive(Deserialize)]
struct NewNote {
    text: String,
}

async fn add_note(State(w): State<Worker>, body: Result<Json<NewNote>, JsonRejection>) -> Response {
    let text = match body {
        Ok(Json(n)) => n.text,
        Err(e) => return bad_request(format!("{e}: expected {{\"text\": \"…\"}}")),
    };
    if text.trim().is_empty() || text.len() > MAX_NOTE_BYTES {
        return bad_request(format!("text must be 1 to {MAX_NOTE_BYTES} bytes"));
    }
    match w.notes.insert(&text).await {
        Ok(note) => {
            let note = Shown::from(note);
            let body = json!({ "id": note.id, "text": note.text, "created": note.created, "workerId": w.ctx.id, "store": w.notes.name() });
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Err(NotesError::Invalid(why)) => bad_request(why.to_string()),
        Err(e) => unavailable(&e),
    }
}

async fn one_note(
    State(w): State<Worker>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return bad_request("the note id is a whole number".into());
    };
    match w.notes.get(id).await {
        Ok(Some(n)) => Json(Shown::from(n)).into_response(),
        Ok(None) => {
            let body =
                json!({ "error": "not_found", "message": format!("no note {id}"), "status": 404 });
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// `/api/downstream`: `GET DOWNSTREAM_URL/` through the breaker.
async fn call_downstream(State(w): State<Worker>) -> Response {
    let Some(base) = w.downstream.clone() else {
        let body = json!({ "error": "no_downstream", "message": "DOWNSTREAM_URL is not set", "status": 503 });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    };
    let request = match http::Request::get(format!("{base}/"))
        .header("x-worker-id", w.ctx.id)
        .body(Empty::new())
    {
        Ok(r) => r,
        Err(e) => return failed(&w, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let client = w.client.clone();
    let send = tower::service_fn(move |req| {
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
    match guarded(&w.breakers.downstream, send, request).await {
        Ok(res) if res.status().is_success() => {
            let data: Value = serde_json::from_slice(res.body())
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(res.body()).into()));
            Json(json!({ "workerId": w.ctx.id, "circuit": DOWNSTREAM, "data": data }))
                .into_response()
        }
        Ok(res) => failed(
            &w,
            StatusCode::BAD_GATEWAY,
            &format!("downstream answered {}", res.status()),
        ),
        Err(e) => match e.downcast_ref::<CircuitOpen>() {
            Some(open) => {
                let body = json!({
                    "error": "circuit_open",
                    "circuit": open.name(),
                    "state": open.state(),
                    "retryAfterMs": open.retry_after().as_millis() as u64,
                    "workerId": w.ctx.id,
                });
                let mut res = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
                res.headers_mut()
                    .insert(RETRY_AFTER, open.retry_after_header());
                res
            }
            None => failed(&w, StatusCode::BAD_GATEWAY, &e.to_string()),
        },
    }
}

fn failed(w: &Worker, status: StatusCode, message: &str) -> Response {
    let body = json!({ "error": "dependency_failed", "circuit": DOWNSTREAM, "message": message, "workerId": w.ctx.id });
    (status, Json(body)).into_response()
}

/// A worker's answer to the master: `{"op": "breakers"}` gets its breaker's snapshot,
/// `{"op": "notes-cache"}` its notes cache's counters (`{}` without a cache); anything else an
/// error.
pub fn answer(
    ctx: &WorkerContext,
    breakers: &Breakers,
    notes: &NotesStore,
    question: &Value,
) -> Value {
    match question["op"].as_str() {
        Some("notes-cache") => match notes.counters() {
            Some(c) => json!({
                "localHits": c.local_hits.get(),
                "redisHits": c.redis_hits.get(),
                "loads": c.loads.get(),
                "invalidations": c.invalidations.get(),
            }),
            None => json!({}),
        },
        Some("breakers") => json!({
            "id": ctx.id,
            "pid": ctx.pid,
            "breakers": [breakers.downstream.snapshot()],
        }),
        _ => json!({ "error": format!("unknown question {question}") }),
    }
}
