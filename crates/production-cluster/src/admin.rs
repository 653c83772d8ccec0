//! The master's own routes:
//!
//! - health for orchestrators: `/health/live` (the master runs: restart it if this fails),
//!   `/health/ready` (send traffic: at least one worker Ready and the session store reachable;
//!   503 from the moment SIGTERM arrives), and the runtime's `/health` in the original's shape;
//! - monitoring: `/metrics`, `/metrics/prometheus`, `/alerts`, `/history`, `/dashboard` (from
//!   `common::metrics`), and `/circuit-status`: in cluster scope the master's `downstream`
//!   breaker (`breakers`, the one that decides) and each worker's follower of it (`workers`), in
//!   worker scope every worker's own;
//! - the admin API under `/admin/`, behind `Authorization: Bearer $ADMIN_TOKEN`:
//!   `GET /admin/workers`, `POST /admin/scale {"workers": n}`, `POST /admin/restart` (rolling),
//!   `POST /admin/strategy {"strategy": "…"}`, `POST /admin/drain/{slot}`.
//!
//! The token is compared in constant time (`subtle`), so the time a wrong guess takes says
//! nothing about how much of it was right. No token configured means no admin API at all
//! (403), never an open one. Every page here carries `X-Content-Type-Options`,
//! `X-Frame-Options` with `frame-ancestors`, and `Referrer-Policy`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::balance::{Strategy, Switch};
use common::breaker::MasterBreakers;
use common::http::rate_limit::Limiter;
use common::metrics::{Monitor, routes as metrics};
use common::session::web::{SessionSettings, StoreKind};
use common::{ClusterHandle, MasterRoutes, SlotState};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::AdminToken;

/// Paths never rate limited: probes and scrapes must get through however busy their source is.
pub const EXEMPT: [&str; 7] = [
    "/health",
    "/health/",
    "/metrics",
    "/metrics/",
    "/alerts",
    "/history",
    "/dashboard",
];

/// How often the master checks that the session store answers, for `/health/ready`.
const STORE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long one check waits for the store.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long `/circuit-status` waits for each worker.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// What the master's routes need besides the cluster handle.
#[derive(Clone)]
pub struct Admin {
    /// The strategy new sessions are placed by, switchable at run time.
    pub switch: Arc<Switch>,
    /// The edge's measurements.
    pub monitor: Monitor,
    /// The cluster-wide rate limit, if on.
    pub limiter: Option<Arc<Limiter>>,
    /// `ADMIN_TOKEN`; `None` turns the admin API off.
    pub token: Option<AdminToken>,
    /// Where sessions are kept, for the readiness check.
    pub sessions: SessionSettings,
    /// The master's breakers in cluster scope (`BREAKER_SCOPE=cluster`, the default); `None`
    /// when each worker keeps its own.
    pub breakers: Option<MasterBreakers>,
    /// Whether `/api/notes` reads go through the two-level cache: its counters, summed over
    /// the workers, are then added to `/metrics/prometheus`.
    pub notes_cached: bool,
}

#[derive(Clone)]
struct Ctx {
    handle: ClusterHandle,
    admin: Admin,
    store_ok: Arc<AtomicBool>,
}

/// Every route of the master (besides the runtime's `/health`).
pub fn routes(handle: ClusterHandle, admin: Admin) -> MasterRoutes {
    let store_ok = Arc::new(AtomicBool::new(true));
    watch_store(&admin.sessions, store_ok.clone());
    let ctx = Ctx {
        handle: handle.clone(),
        admin: admin.clone(),
        store_ok,
    };
    let admin_api = Router::new()
        .route("/admin/workers", get(workers))
        .route("/admin/scale", post(scale))
        .route("/admin/restart", post(restart))
        .route("/admin/strategy", post(strategy))
        .route("/admin/drain/{slot}", post(drain))
        .fallback(admin_not_found)
        .layer(middleware::from_fn_with_state(
            admin.token.clone(),
            require_token,
        ));
    let own = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/circuit-status", get(circuit_status))
        .merge(admin_api)
        .with_state(ctx);
    let own = MasterRoutes::new(
        &[
            "/health/live",
            "/health/ready",
            "/circuit-status",
            "/admin/",
        ],
        own,
    );
    let mut monitoring = metrics::routes(admin.monitor.clone(), handle.clone());
    if admin.notes_cached {
        monitoring = monitoring.layer(|router| {
            router.layer(middleware::from_fn_with_state(handle, with_cache_counters))
        });
    }
    let all = monitoring.merge(metrics::dashboard()).merge(own);
    secure(all)
}

/// Appends the notes cache's counters, summed over the Ready workers, to `/metrics/prometheus`.
async fn with_cache_counters(
    State(handle): State<ClusterHandle>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path() != "/metrics/prometheus" {
        return next.run(req).await;
    }
    let res = next.run(req).await;
    if res.status() != StatusCode::OK {
        return res;
    }
    let asks = handle
        .workers()
        .into_iter()
        .filter(|w| w.state == SlotState::Ready)
        .map(|w| {
            let handle = handle.clone();
            async move {
                handle
                    .request(w.id, json!({ "op": "notes-cache" }), ASK_TIMEOUT)
                    .await
                    .ok()
            }
        });
    let sum = common::cache::CacheCounters::default();
    for answer in futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
    {
        let n = |k: &str| answer[k].as_u64().unwrap_or(0);
        sum.local_hits.inc_by(n("localHits"));
        sum.redis_hits.inc_by(n("redisHits"));
        sum.loads.inc_by(n("loads"));
        sum.invalidations.inc_by(n("invalidations"));
    }
    let (mut parts, body) = res.into_parts();
    // The body grows: the old length would be a lie.
    parts.headers.remove(header::CONTENT_LENGTH);
    let Ok(body) = http_body_util::BodyExt::collect(body).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut text = body.to_bytes().to_vec();
    text.extend_from_slice(sum.render("production_cluster_notes").as_bytes());
    Response::from_parts(parts, axum::body::Body::from(text))
}

/// The security headers on every master page, unless a handler set its own.
fn secure(routes: MasterRoutes) -> MasterRoutes {
    routes.layer(|router| {
        let set = |name: &'static str, value: &'static str| {
            SetResponseHeaderLayer::if_not_present(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        };
        router
            .layer(set("x-content-type-options", "nosniff"))
            .layer(set("x-frame-options", "DENY"))
            .layer(set("content-security-policy", "frame-ancestors 'none'"))
            .layer(set("referrer-policy", "no-referrer"))
    })
}

/// Keeps `ok` up to date with whether the session store answers. Memory always does.
fn watch_store(sessions: &SessionSettings, ok: Arc<AtomicBool>) {
    if sessions.store == StoreKind::Memory {
        return;
    }
    let sessions = sessions.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STORE_CHECK_EVERY);
        loop {
            tick.tick().await;
            let s = sessions.clone();
            let answered = tokio::task::spawn_blocking(move || s.ping(STORE_CHECK_TIMEOUT))
                .await
                .is_ok_and(|r| r.is_ok());
            if ok.swap(answered, Ordering::Relaxed) != answered {
                tracing::warn!(reachable = answered, "session store reachability changed");
            }
        }
    });
}

async fn live(State(c): State<Ctx>) -> Json<Value> {
    Json(json!({ "status": "alive", "uptime": c.handle.uptime().as_secs_f64() }))
}

/// What `/health/ready` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Send traffic.
    Ready,
    /// Shutting down: stop sending, the master is draining.
    Draining,
    /// No worker is Ready, or the session store does not answer.
    NotReady,
}

/// The readiness rule: ready when not shutting down, the session store answers and at least one
/// worker is Ready. Draining wins, so a load balancer stops sending the moment SIGTERM arrives.
pub fn readiness(draining: bool, store_reachable: bool, ready_workers: usize) -> Readiness {
    if draining {
        Readiness::Draining
    } else if store_reachable && ready_workers >= 1 {
        Readiness::Ready
    } else {
        Readiness::NotReady
    }
}

async fn ready(State(c): State<Ctx>) -> Response {
    let health = c.handle.health();
    let store = c.store_ok.load(Ordering::Relaxed);
    let verdict = readiness(
        health.status == "shutting_down",
        store,
        health.workers.ready,
    );
    let (status, word) = match verdict {
        Readiness::Ready => (StatusCode::OK, "ready"),
        Readiness::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        Readiness::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
    };
    let body = json!({
        "status": word,
        "workers": { "ready": health.workers.ready, "total": health.workers.total },
        "sessionStore": { "kind": c.admin.sessions.store_name(), "reachable": store },
    });
    (status, Json(body)).into_response()
}

async fn circuit_status(State(c): State<Ctx>) -> Json<Value> {
    let asks = c.handle.workers().into_iter().map(|w| {
        let handle = c.handle.clone();
        async move {
            if w.state != SlotState::Ready {
                return json!({ "id": w.id, "state": w.state });
            }
            handle
                .request(w.id, json!({ "op": "breakers" }), ASK_TIMEOUT)
                .await
                .unwrap_or_else(|e| json!({ "id": w.id, "error": e.to_string() }))
        }
    });
    let workers = futures_util::future::join_all(asks).await;
    match &c.admin.breakers {
        // The master's breaker is the one that decides; the workers' followers show what each
        // worker last heard from it.
        Some(master) => {
            let breakers: Vec<Value> = master.all().iter().map(|b| json!(b.snapshot())).collect();
            Json(json!({ "scope": "cluster", "breakers": breakers, "workers": workers }))
        }
        None => Json(json!({ "scope": "worker", "workers": workers })),
    }
}

fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": code, "message": message.into(), "status": status.as_u16() });
    (status, Json(body)).into_response()
}

/// Whether an `Authorization` header value carries `token` as a bearer token, compared in
/// constant time: the time a wrong guess takes does not depend on how much of it was right.
pub fn authorized(header: Option<&str>, token: &[u8]) -> bool {
    // RFC 9110 §11.1: the scheme is case-insensitive; RFC 6750 §2.1: `Bearer <token>`.
    header
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, t)| bool::from(t.trim().as_bytes().ct_eq(token)))
}

/// Lets a request with the right bearer token through; everything else is 401 (or 403 when no
/// token is configured) and never reaches a handler.
async fn require_token(
    State(token): State<Option<AdminToken>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return json_error(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is off: set ADMIN_TOKEN to turn it on",
        );
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !authorized(presented, token.as_bytes()) {
        let mut resp = json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer $ADMIN_TOKEN",
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    next.run(req).await
}

async fn admin_not_found(uri: axum::http::Uri) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no admin route {}", uri.path()),
    )
}

async fn workers(State(c): State<Ctx>) -> Json<Value> {
    let limit = c
        .admin
        .limiter
        .as_ref()
        .map(|l| json!({ "rate": l.rate().to_string(), "clients": l.keys() }));
    Json(json!({
        "strategy": c.admin.switch.current().name(),
        "rateLimit": limit,
        "workers": c.handle.workers(),
    }))
}

#[derive(Deserialize)]
struct Scale {
    workers: usize,
}

async fn scale(State(c): State<Ctx>, body: Result<Json<Scale>, JsonRejection>) -> Response {
    let n = match body {
        Ok(Json(s)) => s.workers,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{e}: expected {{\"workers\": n}}"),
            );
        }
    };
    match c.handle.scale_to(n).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "workers": n }))).into_response(),
        Err(e) => json_error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    }
}

async fn restart(State(c): State<Ctx>) -> Response {
    let handle = c.handle.clone();
    tokio::spawn(async move {
        if let Err(e) = handle.rolling_restart().await {
            tracing::warn!(error = %e, "rolling restart from the admin API did not finish");
        }
    });
    (
        StatusCode::ACCEPTED,
        Json(json!({ "status": "rolling restart started" })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct NewStrategy {
    strategy: String,
}

async fn strategy(
    State(c): State<Ctx>,
    body: Result<Json<NewStrategy>, JsonRejection>,
) -> Response {
    let name = match body {
        Ok(Json(s)) => s.strategy,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{e}: expected {{\"strategy\": \"…\"}}"),
            );
        }
    };
    match name.parse::<Strategy>() {
        Ok(next) => {
            let previous = c.admin.switch.set(next);
            tracing::info!(from = previous.name(), to = next.name(), "strategy changed");
            Json(json!({ "previous": previous.name(), "strategy": next.name() })).into_response()
        }
        Err(e) => json_error(StatusCode::BAD_REQUEST, "unknown_strategy", e.to_string()),
    }
}

/// Drains the worker in `slot`: a fresh one is started in the slot, traffic switches to it once
/// it is Ready, and the old one finishes its in-flight requests and exits.
async fn drain(
    State(c): State<Ctx>,
    slot: Result<Path<usize>, axum::extract::rejection::PathRejection>,
) -> Response {
    let Ok(Path(slot)) = slot else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the slot is a whole number",
        );
    };
    if !c
        .handle
        .workers()
        .iter()
        .any(|w| w.id == slot && w.state == SlotState::Ready)
    {
        return json_error(
            StatusCode::NOT_FOUND,
            "no_such_worker",
            format!("no ready worker in slot {slot}"),
        );
    }
    let handle = c.handle.clone();
    tokio::spawn(async move {
        if let Err(e) = handle.replace(slot).await {
            tracing::warn!(slot, error = %e, "drain from the admin API did not finish");
        }
    });
    let body =
        json!({ "slot": slot, "status": "draining: a new worker takes the slot once Ready" });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_wins_over_everything_else() {
        assert_eq!(readiness(false, true, 1), Readiness::Ready);
        assert_eq!(readiness(true, true, 4), Readiness::Draining);
        assert_eq!(
            readiness(false, false, 4),
            Readiness::NotReady,
            "store down"
        );
        assert_eq!(readiness(false, true, 0), Readiness::NotReady, "no worker");
    }

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let t = b"0123456789abcdef";
        assert!(authorized(Some("Bearer 0123456789abcdef"), t));
        assert!(
            authorized(Some("bearer 0123456789abcdef"), t),
            "the scheme is case-blind"
        );
        for bad in [
            "Bearer 0123456789abcde",
            "Bearer 0123456789abcdefg",
            "Basic 0123456789abcdef",
            "Bearer",
            "0123456789abcdef",
            "",
        ] {
            assert!(!authorized(Some(bad), t), "{bad:?}");
        }
        assert!(!authorized(None, t));
    }
}
