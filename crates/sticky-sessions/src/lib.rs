//! Lesson 01: sticky sessions (session affinity).
//!
//! Sessions kept in a worker's memory only work if every request of a session reaches that worker.
//! This lesson's master routes by the session cookie, whose id names the slot that minted it
//! (`2.9f86d081…`); requests without a session are placed by consistent hashing of the client IP;
//! and a slot that goes away hands only its own sessions to its ring successors. The pieces live in
//! `common` ([`common::balance::sticky`], [`common::session`]); this crate composes them.
//!
//! Layout:
//! - [`Settings`]: the lesson's environment (`SESSION_TIMEOUT`, `SESSION_MAX`, `SESSION_STORE`,
//!   `TRUSTED_PROXIES`, `SESSION_SWEEP_INTERVAL`);
//! - [`cluster`]: the whole cluster, ready to `run()`;
//! - [`worker_router`]: what each worker serves: `/`, `/session`, `/data`, `/stats`, `/ws`;
//! - [`master_routes`]: `/sticky-stats`, answered by the master from the selector's counters and
//!   each worker's session count (asked over IPC).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, FromRef, State};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common::balance::sticky::{Sticky, TrustedProxies};
use common::config::{self, ConfigError, Source};
pub use common::session::web::{MAX_DATA, SessionSettings, StoreKind};
use common::session::web::{
    SessionApp, escape_html, save_data, session, show_data, store_down, with_session,
};
use common::session::{Session, SessionStore, now_ms, short_id};
use common::{Cluster, ClusterHandle, Config, MasterRoutes, SlotState, WorkerContext};
use serde::Serialize;
use serde_json::{Value, json};

/// How many sessions `/stats` lists (it counts them all).
const STATS_LIST: usize = 20;
/// How long `/sticky-stats` waits for each worker's session count.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// The lesson's own settings; the runtime's (`PORT`, `WORKERS`, …) are in [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SESSION_TIMEOUT`, `SESSION_MAX`, `SESSION_STORE`, `SESSION_SWEEP_INTERVAL` (see
    /// [`SessionSettings`]).
    pub sessions: SessionSettings,
    /// `TRUSTED_PROXIES`: comma-separated IPs/CIDRs whose `X-Forwarded-For` is believed; default none.
    pub trusted_proxies: TrustedProxies,
}

impl Settings {
    /// Reads the process environment; on a bad value prints the reason and exits with status 2.
    pub fn from_env_or_exit() -> Self {
        Self::from_source(&config::ProcessEnv).unwrap_or_else(|e| config::exit_bad_config(&e))
    }

    /// Reads every variable from `src`.
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let trusted_proxies = config::var(
            src,
            "TRUSTED_PROXIES",
            "a comma-separated list of IP addresses or CIDR blocks (e.g. 127.0.0.1,10.0.0.0/8)",
            TrustedProxies::parse,
        )?
        .unwrap_or_default();
        Ok(Self {
            sessions: SessionSettings::from_source(src)?,
            trusted_proxies,
        })
    }

    /// For the master at startup: see [`SessionSettings::check_store`].
    pub fn check_store(&self) -> Result<(), String> {
        self.sessions.check_store()
    }
}

/// The store of this worker process, for the IPC handler (which has no router state).
static STORE: OnceLock<Arc<dyn SessionStore>> = OnceLock::new();

/// The whole lesson: workers serving [`worker_router`], the master routing with [`Sticky`] and
/// answering [`master_routes`].
pub fn cluster(config: Config, settings: Settings) -> Cluster {
    // New sessions by least connections unless STICKY_NEW=ip (see `common::balance::sticky`).
    let sticky =
        Arc::new(Sticky::new(settings.trusted_proxies.clone()).new_sessions(config.sticky_new));
    let store_name = settings.sessions.store_name();
    let store_line = match &settings.sessions.store {
        StoreKind::Memory => "memory (each worker keeps its own sessions)".to_owned(),
        StoreKind::Redis(url) => format!("{url} (shared by every worker)"),
    };
    let for_master = sticky.clone();
    Cluster::new("sticky-sessions", config)
        .worker(move |ctx| worker_router(ctx, &settings))
        .selector(sticky)
        .master(move |handle| master_routes(handle, for_master, store_name))
        .on_request(|_ctx, _question| match STORE.get() {
            Some(store) => json!({ "store": store.name(), "stats": store.stats() }),
            None => json!({ "error": "no session store" }),
        })
        .banner_line("store", store_line)
        .hint("curl -c cookies.txt {url}/")
        .hint("curl -b cookies.txt {url}/session")
        .hint("curl {url}/sticky-stats")
}

/// What every worker handler shares.
#[derive(Clone)]
struct App {
    ctx: WorkerContext,
    sessions: SessionApp,
    started: Instant,
}

impl FromRef<App> for SessionApp {
    fn from_ref(app: &App) -> Self {
        app.sessions.clone()
    }
}

/// The router each worker serves. Every route but `/ping` runs with a session: the one the cookie
/// names if this worker's store knows it, or a new one minted for this worker's slot.
pub fn worker_router(ctx: &WorkerContext, settings: &Settings) -> Router {
    let store = match settings.sessions.open_store() {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let _ = STORE.set(store.clone());
    let app = App {
        ctx: ctx.clone(),
        sessions: SessionApp {
            slot: ctx.id,
            pid: ctx.pid,
            store,
            ttl: settings.sessions.session_timeout,
        },
        started: Instant::now(),
    };
    Router::new()
        .route("/", get(home))
        .route("/session", get(session))
        .route("/data", get(show_data).post(save_data))
        .route("/stats", get(stats))
        .route("/ws", get(ws))
        // route_layer: a 404 does not mint a session.
        .route_layer(middleware::from_fn_with_state(
            app.sessions.clone(),
            with_session,
        ))
        // Unknown paths get common's JSON 404 (the worker's fallback), outside the session layer.
        .with_state(app)
}

async fn home(State(app): State<App>, Extension(s): Extension<Session>) -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html><head><title>Sticky sessions</title></head><body>\n\
         <h1>Sticky sessions</h1>\n\
         <p>Served by worker {} (pid {}).</p>\n\
         <p>Session {}: request {} of this session.</p>\n\
         <form method=\"post\" action=\"/data\"><input name=\"data\" maxlength=\"{MAX_DATA}\"> \
         <button>Save in session</button></form>\n\
         <p><a href=\"/session\">/session</a> · <a href=\"/data\">/data</a> · <a href=\"/stats\">/stats</a></p>\n\
         </body></html>\n",
        app.ctx.id,
        app.ctx.pid,
        escape_html(&short_id(&s.id)),
        s.request_count
    ))
}

/// This process's resident memory in bytes, from /proc (0 where there is none).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

async fn stats(State(app): State<App>) -> Response {
    let now = now_ms();
    let list = match app.sessions.store.list(app.ctx.id, STATS_LIST, now).await {
        Ok(l) => l,
        Err(e) => return store_down(e),
    };
    let store_stats = app.sessions.store.stats();
    let sessions = list
        .sessions
        .iter()
        .map(|s| ListedSession {
            id: short_id(&s.id),
            request_count: s.request_count,
            age: now.saturating_sub(s.created) / 1000,
        })
        .collect();
    Json(StatsReply {
        worker_id: app.ctx.id,
        worker_pid: app.ctx.pid,
        store: app.sessions.store.name(),
        active_sessions: list.total,
        evicted: store_stats.evicted,
        expired: store_stats.expired,
        uptime: app.started.elapsed().as_secs(),
        memory: Memory { rss: rss_bytes() },
        sessions,
    })
    .into_response()
}

/// `GET /stats`: the course's fields, plus the store and its eviction counters.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatsReply {
    worker_id: usize,
    worker_pid: u32,
    store: &'static str,
    active_sessions: u64,
    evicted: u64,
    expired: u64,
    /// Seconds since this worker started.
    uptime: u64,
    memory: Memory,
    /// The most recently used sessions, at most 20.
    sessions: Vec<ListedSession>,
}

#[derive(Serialize)]
struct Memory {
    /// Resident set size in bytes.
    rss: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListedSession {
    id: String,
    request_count: u64,
    /// Seconds since the session was created.
    age: u64,
}

/// A WebSocket echo: each text message comes back as `{"worker", "session", "echo"}`, showing that the
/// socket, like its session, stays on one worker for its whole life.
async fn ws(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let tag = (app.ctx.id, short_id(&s.id));
    upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| echo(socket, tag))
}

#[derive(Serialize)]
struct Echo<'a> {
    worker: usize,
    session: &'a str,
    echo: &'a str,
}

async fn echo(mut socket: WebSocket, (worker, session): (usize, String)) {
    while let Some(Ok(msg)) = socket.recv().await {
        let text = match msg {
            Message::Text(text) => text,
            Message::Close(_) => return,
            // Pings are answered by axum; binary frames are not part of this demo.
            _ => continue,
        };
        let reply = Echo {
            worker,
            session: &session,
            echo: text.as_str(),
        };
        let Ok(reply) = serde_json::to_string(&reply) else {
            return;
        };
        if socket.send(Message::Text(reply.into())).await.is_err() {
            return;
        }
    }
}

/// `/sticky-stats`: how the master placed requests, and how many sessions each worker holds.
pub fn master_routes(
    handle: ClusterHandle,
    sticky: Arc<Sticky>,
    store: &'static str,
) -> MasterRoutes {
    let router = Router::new().route(
        "/sticky-stats",
        get(move || sticky_stats(handle.clone(), sticky.clone(), store)),
    );
    MasterRoutes::new(&["/sticky-stats"], router)
}

async fn sticky_stats(
    handle: ClusterHandle,
    sticky: Arc<Sticky>,
    store: &'static str,
) -> Json<StickyStatsReply> {
    let routing = sticky.stats();
    let workers = handle.workers();
    let asks = workers.iter().map(|w| {
        let handle = handle.clone();
        let (slot, ready) = (w.id, w.state == SlotState::Ready);
        async move {
            if !ready {
                return Value::Null;
            }
            handle
                .request(slot, json!({ "ask": "sessions" }), ASK_TIMEOUT)
                .await
                .ok()
                .and_then(|v| v.pointer("/stats/localSessions").cloned())
                .unwrap_or(Value::Null)
        }
    });
    let sessions = futures_util::future::join_all(asks).await;
    let workers = workers
        .iter()
        .zip(sessions)
        .map(|(w, sessions)| {
            let r = routing.slots.iter().find(|s| s.slot == w.id);
            WorkerRouting {
                id: w.id,
                pid: w.pid,
                state: w.state,
                requests: w.requests,
                cookie_routed: r.map_or(0, |r| r.cookie_routed),
                ip_routed: r.map_or(0, |r| r.ip_routed),
                balance_routed: r.map_or(0, |r| r.balance_routed),
                remapped_in: r.map_or(0, |r| r.remapped_in),
                sessions,
            }
        })
        .collect();
    Json(StickyStatsReply {
        strategy: routing.strategy,
        store,
        cookie_routed: routing.cookie_routed,
        new_sessions: routing.new_sessions,
        ip_routed: routing.ip_routed,
        balance_routed: routing.balance_routed,
        remapped: routing.remapped,
        invalid_cookies: routing.invalid_cookies,
        workers,
    })
}

/// `GET /sticky-stats`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StickyStatsReply {
    strategy: &'static str,
    store: &'static str,
    /// Requests sent to the slot their session cookie names.
    cookie_routed: u64,
    /// How requests without a usable cookie are placed (`STICKY_NEW`): `balance` or `ip`.
    new_sessions: &'static str,
    /// Requests without a usable cookie, placed by client IP (`STICKY_NEW=ip`).
    ip_routed: u64,
    /// Requests without a usable cookie, placed by least connections (`STICKY_NEW=balance`).
    balance_routed: u64,
    /// Requests whose session's slot was not ready, sent to its ring successor.
    remapped: u64,
    /// Requests whose cookie was not a well-formed session id.
    invalid_cookies: u64,
    workers: Vec<WorkerRouting>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkerRouting {
    id: usize,
    pid: Option<u32>,
    state: SlotState,
    /// Requests the edge sent to this slot (all routes).
    requests: u64,
    cookie_routed: u64,
    ip_routed: u64,
    balance_routed: u64,
    remapped_in: u64,
    /// Sessions in the worker's memory; null with a shared store, where they are not the worker's
    /// to count.
    sessions: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = Settings::from_source(&[]).unwrap();
        assert_eq!(s.sessions.session_timeout, Duration::from_secs(1800));
        assert_eq!(s.sessions.session_max, 10_000);
        assert_eq!(s.sessions.store, StoreKind::Memory);
        assert_eq!(s.trusted_proxies, TrustedProxies::default());
    }

    #[test]
    fn bad_values_name_their_variable() {
        // The session variables' own cases are common::session::web's tests; these show the
        // lesson's settings read them, and its own.
        for (var, value) in [
            ("SESSION_STORE", "mysql://x"),
            ("TRUSTED_PROXIES", "10.0.0.0/40"),
        ] {
            let err = Settings::from_source(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{var}={value}: {err}");
        }
    }

    #[test]
    fn a_redis_url_selects_redis() {
        let s = Settings::from_source(&[("SESSION_STORE", "redis://127.0.0.1:6379")]).unwrap();
        assert_eq!(
            s.sessions.store,
            StoreKind::Redis("redis://127.0.0.1:6379".into())
        );
    }
}
