//! Sessions in a worker's axum `Router`: the settings that choose the store, the middleware that
//! finds or mints each request's session, and the course's session routes (`GET /session`,
//! `GET`/`POST /data`). Every lesson with sessions serves them the same way, from here.
//!
//! Depends on the rest of `session` only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Form, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    COOKIE_NAME, MemoryStore, Session, SessionStore, StoreError, cookie_value, mint_id, now_ms,
    parse_id, set_cookie, short_id,
};
use crate::config::{self, ConfigError, Source};

/// The most bytes `POST /data` keeps: a session is not a file store.
pub const MAX_DATA: usize = 4096;

/// Where sessions are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// In each worker's memory (the default): lost when the worker dies.
    Memory,
    /// In Redis at this URL: shared by the workers, survives them.
    Redis(String),
}

/// The session variables every lesson with sessions reads.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// `SESSION_TIMEOUT` ms, default 1800000 (30 min): idle time before a session expires; also the
    /// cookie's `Max-Age`, re-sent with every response so both slide together.
    pub session_timeout: Duration,
    /// `SESSION_MAX`, default 10000: sessions a worker keeps in memory before evicting the least
    /// recently used (ignored with Redis).
    pub session_max: usize,
    /// `SESSION_SWEEP_INTERVAL` ms, default 60000: how often idle sessions are swept from memory.
    pub sweep_interval: Duration,
    /// `SESSION_STORE` = `memory` (default), a `redis://host:port` URL, or
    /// `redis+sentinel://host:port,host:port/NAME` (the Sentinels, and the name they monitor).
    pub store: StoreKind,
}

impl SessionSettings {
    /// Reads every variable from `src`.
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let ms = Duration::from_millis;
        let session_timeout = config::duration_ms(src, "SESSION_TIMEOUT", ms(1_800_000), ms(1000))?;
        let store = config::var(
            src,
            "SESSION_STORE",
            "memory, a redis://host:port URL or redis+sentinel://host:port,host:port/NAME",
            |s| {
                if s == "memory" {
                    Some(StoreKind::Memory)
                } else if is_redis_url(s, session_timeout) {
                    Some(StoreKind::Redis(s.to_string()))
                } else {
                    None
                }
            },
        )?
        .unwrap_or(StoreKind::Memory);
        Ok(Self {
            session_timeout,
            session_max: config::number(src, "SESSION_MAX", 10_000, 1, 10_000_000)?,
            sweep_interval: config::duration_ms(src, "SESSION_SWEEP_INTERVAL", ms(60_000), ms(10))?,
            store,
        })
    }

    /// `memory` or `redis`.
    pub fn store_name(&self) -> &'static str {
        match self.store {
            StoreKind::Memory => "memory",
            StoreKind::Redis(_) => "redis",
        }
    }

    /// Opens the configured store. Nothing is connected yet: Redis connects on first use.
    pub fn open_store(&self) -> Result<Arc<dyn SessionStore>, String> {
        match &self.store {
            StoreKind::Memory => {
                let store = Arc::new(MemoryStore::new(self.session_timeout, self.session_max));
                store
                    .spawn_sweeper(self.sweep_interval)
                    .map_err(|e| format!("cannot start the session sweeper: {e}"))?;
                Ok(store)
            }
            #[cfg(feature = "redis")]
            StoreKind::Redis(url) => super::redis::RedisStore::open(url, self.session_timeout)
                .map(|s| Arc::new(s) as Arc<dyn SessionStore>)
                .map_err(|e| format!("SESSION_STORE={url}: {e}")),
            #[cfg(not(feature = "redis"))]
            StoreKind::Redis(url) => Err(format!("SESSION_STORE={url}: built without Redis")),
        }
    }

    /// For the master at startup: fails if the Redis store does not answer PING within 2 s, so a
    /// wrong URL is reported before any request rather than as a 503 on each one.
    pub fn check_store(&self) -> Result<(), String> {
        self.ping(Duration::from_secs(2))
    }

    /// Whether the store answers PING within `timeout`, blocking (run it off the runtime). The
    /// memory store always does.
    pub fn ping(&self, timeout: Duration) -> Result<(), String> {
        #[cfg(feature = "redis")]
        if let StoreKind::Redis(url) = &self.store {
            let store = super::redis::RedisStore::open(url, self.session_timeout)
                .map_err(|e| e.to_string())?;
            store
                .ping_blocking(timeout)
                .map_err(|e| format!("SESSION_STORE={url} does not answer: {e}"))?;
        }
        let _ = timeout;
        Ok(())
    }
}

#[cfg(feature = "redis")]
fn is_redis_url(s: &str, ttl: Duration) -> bool {
    (s.starts_with("redis://") || s.starts_with("rediss://") || s.starts_with("redis+sentinel://"))
        && super::redis::RedisStore::open(s, ttl).is_ok()
}

#[cfg(not(feature = "redis"))]
fn is_redis_url(_: &str, _: Duration) -> bool {
    false
}

/// What the session middleware and routes share: which worker this is and its store.
#[derive(Clone)]
pub struct SessionApp {
    /// The worker's slot: new session ids name it.
    pub slot: usize,
    /// The worker's pid, shown by `/session`.
    pub pid: u32,
    /// Where sessions are kept.
    pub store: Arc<dyn SessionStore>,
    /// `SESSION_TIMEOUT`: the cookie's `Max-Age`.
    pub ttl: Duration,
}

/// The 503 of a store that failed (Redis down): the request cannot be served with its session.
pub fn store_down(e: StoreError) -> Response {
    tracing::error!(error = %e, "session store failed");
    let body =
        json!({ "error": "session_store_unavailable", "message": e.to_string(), "status": 503 });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(body),
    )
        .into_response()
}

/// Middleware (`axum::middleware::from_fn_with_state`): finds or mints the request's session,
/// hands it to the handler as an `Extension<Session>`, and (re)sets the cookie.
///
/// An id is used only if it is well formed and this worker's store holds it as a live session: a
/// forged, expired or foreign id is never adopted (that would let a client pick another user's
/// session id in advance: session fixation). Instead a new session is minted for this slot.
pub async fn with_session(State(app): State<SessionApp>, mut req: Request, next: Next) -> Response {
    let now = now_ms();
    let presented = cookie_value(req.headers(), COOKIE_NAME)
        .filter(|id| parse_id(id).is_some())
        .map(str::to_owned);
    let found = match &presented {
        Some(id) => app.store.touch(id, now).await,
        None => Ok(None),
    };
    let session = match found {
        Ok(Some(s)) => s,
        Ok(None) => {
            let s = Session::new(mint_id(app.slot), now);
            if let Err(e) = app.store.insert(s.clone()).await {
                return store_down(e);
            }
            tracing::debug!(session = %short_id(&s.id), replaced = presented.is_some(), "new session");
            s
        }
        Err(e) => return store_down(e),
    };
    let cookie = set_cookie(COOKIE_NAME, &session.id, app.ttl);
    req.extensions_mut().insert(session);
    let mut resp = next.run(req).await;
    resp.headers_mut().append(header::SET_COOKIE, cookie);
    // Responses that depend on a cookie must not be shared by caches.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The session as the course's JSON shows it. The id is shortened: the cookie is `HttpOnly` so page
/// scripts cannot steal it, and echoing it whole in a body would undo that.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionView<'a> {
    id: String,
    created: u64,
    last_access: u64,
    request_count: u64,
    data: &'a BTreeMap<String, String>,
}

impl<'a> From<&'a Session> for SessionView<'a> {
    fn from(s: &'a Session) -> Self {
        Self {
            id: short_id(&s.id),
            created: s.created,
            last_access: s.last_access,
            request_count: s.request_count,
            data: &s.data,
        }
    }
}

/// `GET /session`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionReply<'a> {
    worker_id: usize,
    worker_pid: u32,
    session: SessionView<'a>,
}

/// HTML-escapes `s` for a page.
pub fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `GET /session`: the worker and the session, as JSON.
pub async fn session(State(app): State<SessionApp>, Extension(s): Extension<Session>) -> Response {
    Json(SessionReply {
        worker_id: app.slot,
        worker_pid: app.pid,
        session: (&s).into(),
    })
    .into_response()
}

/// `POST /data`'s form.
#[derive(Deserialize)]
pub struct DataForm {
    data: String,
}

/// `POST /data` (a form with `data=`): keeps it in the session, then 303 to `GET /data`.
pub async fn save_data(
    State(app): State<SessionApp>,
    Extension(s): Extension<Session>,
    Form(form): Form<DataForm>,
) -> Response {
    if form.data.len() > MAX_DATA {
        let body = json!({ "error": "data_too_large", "message": format!("data is limited to {MAX_DATA} bytes") });
        return (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response();
    }
    match app
        .store
        .set_data(&s.id, "data", &form.data, now_ms())
        .await
    {
        // 303: the browser follows with a GET, so reloading the page does not post again.
        Ok(_) => Redirect::to("/data").into_response(),
        Err(e) => store_down(e),
    }
}

/// `GET /data`: what the session holds, as a page.
pub async fn show_data(
    State(app): State<SessionApp>,
    Extension(s): Extension<Session>,
) -> Html<String> {
    let data = s
        .data
        .get("data")
        .map_or("(nothing saved yet)".to_string(), |d| escape_html(d));
    Html(format!(
        "<!doctype html>\n<html><body><h1>Session data</h1>\n<p>Worker {}, session {}.</p>\n<pre>{data}</pre>\n</body></html>\n",
        app.slot,
        escape_html(&short_id(&s.id)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = SessionSettings::from_source(&[]).unwrap();
        assert_eq!(s.session_timeout, Duration::from_secs(1800));
        assert_eq!(s.session_max, 10_000);
        assert_eq!(s.store, StoreKind::Memory);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("SESSION_TIMEOUT", "soon"),
            ("SESSION_MAX", "0"),
            ("SESSION_STORE", "mysql://x"),
            ("SESSION_STORE", "redis://"),
            ("SESSION_SWEEP_INTERVAL", "-1"),
        ] {
            let err = SessionSettings::from_source(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{var}={value}: {err}");
        }
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<b>\"x\" & 'y'</b>"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;"
        );
    }
}
