//! The master's flag routes.
//!
//! - `GET /flags`: `{"version", "flags": [Flag…]}`;
//! - `GET /flags/{key}`: one flag, or 404;
//! - `POST /flags/{key}` with a JSON [`FlagUpdate`]: creates the flag (201) or changes it (200),
//!   answering `{"version", "created", "flag"}`; a bad body or value is a 400 that says what was
//!   wrong, a full store a 409;
//! - `POST /flags/{key}/delete`: deletes it (`{"version", "deleted"}`), or 404. A POST on a
//!   sub-path rather than `DELETE /flags/{key}`, like every other mutating admin route of the
//!   course (`/circuit/{name}/reset`, `/canary/rollback`): one rule for the learner, "changes are
//!   POST", and a plain `curl -X POST` for all of them;
//! - `GET /flags/{key}/evaluate?user=U`: the [`Evaluation`](super::Evaluation) for `U`, or 404.
//!
//! And for each worker, [`worker_routes`]: `GET /feature/{key}?user=U`, the flag as that worker's
//! [`FlagClient`] sees it (`{"worker", "version", "flagKey", "value", "variant", "reason"}`), to
//! watch a change reach the workers.
//!
//! GET on a mutating route is a 405 (axum answers it, with `Allow: POST`), so a crawler or a
//! prefetching browser cannot change a flag. The body is read as JSON whatever its
//! `Content-Type`, so `curl -d '{…}'` works without `-H`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::client::FlagClient;
use super::flag::{FlagUpdate, check_key, check_user};
use super::store::{FlagStore, StoreError};
use crate::http::routes::MasterRoutes;

/// The example every 400 shows, so the fix is on screen.
const EXAMPLE: &str =
    r#"{"enabled": true, "percentage": 25, "allow": ["alice"], "deny": ["bob"], "salt": "new-ui"}"#;

/// A JSON error body: `{"error": code, "message", "status"}`, the course's shape.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": code, "message": message.into(), "status": status.as_u16() });
    (status, axum::Json(body)).into_response()
}

fn no_such_flag(key: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no_such_flag",
        format!("no flag {key:?}; GET /flags lists them"),
    )
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::Invalid(why) => error(StatusCode::BAD_REQUEST, "bad_request", why.to_string()),
        StoreError::Full => error(StatusCode::CONFLICT, "store_full", e.to_string()),
        StoreError::Io { .. } | StoreError::Corrupt { .. } => {
            tracing::error!(error = %e, "flag change not saved");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "not_saved",
                e.to_string(),
            )
        }
    }
}

/// Runs a store change on a blocking thread: it waits for the file to reach the disk.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(store_error),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the flag change failed: {e}"),
        )),
    }
}

/// `GET /flags`.
async fn list(State(store): State<FlagStore>) -> Response {
    let set = store.snapshot();
    let flags: Vec<_> = set.iter().collect();
    axum::Json(json!({ "version": set.version, "flags": flags })).into_response()
}

/// `GET /flags/{key}`.
async fn show(State(store): State<FlagStore>, Path(key): Path<String>) -> Response {
    match store.snapshot().get(&key) {
        Some(flag) => axum::Json(flag).into_response(),
        None => no_such_flag(&key),
    }
}

/// `POST /flags/{key}`.
async fn upsert(State(store): State<FlagStore>, Path(key): Path<String>, body: Bytes) -> Response {
    if let Err(why) = check_key(&key) {
        return error(StatusCode::BAD_REQUEST, "bad_request", why.to_string());
    }
    let update: FlagUpdate = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            let why = format!("expected a JSON object like {EXAMPLE} (every field optional): {e}");
            return error(StatusCode::BAD_REQUEST, "bad_request", why);
        }
    };
    let saved = {
        let (store, key) = (store.clone(), key.clone());
        blocking(move || store.upsert(&key, update)).await
    };
    match saved {
        Ok((flag, created)) => {
            tracing::info!(flag = %key, enabled = flag.enabled, percentage = flag.percentage, created, "flag saved");
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let version = store.snapshot().version;
            let body = json!({ "version": version, "created": created, "flag": flag });
            (status, axum::Json(body)).into_response()
        }
        Err(res) => res,
    }
}

/// `POST /flags/{key}/delete`.
async fn delete(State(store): State<FlagStore>, Path(key): Path<String>) -> Response {
    let deleted = {
        let (store, key) = (store.clone(), key.clone());
        blocking(move || store.delete(&key)).await
    };
    match deleted {
        Ok(true) => {
            tracing::info!(flag = %key, "flag deleted");
            let version = store.snapshot().version;
            axum::Json(json!({ "version": version, "deleted": key })).into_response()
        }
        Ok(false) => no_such_flag(&key),
        Err(res) => res,
    }
}

#[derive(Deserialize)]
struct UserQuery {
    user: String,
}

/// `GET /flags/{key}/evaluate?user=U`.
async fn evaluate(
    State(store): State<FlagStore>,
    Path(key): Path<String>,
    query: Result<Query<UserQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(UserQuery { user })) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "say who to evaluate the flag for: ?user=ID",
        );
    };
    if let Err(why) = check_user(&user) {
        return error(StatusCode::BAD_REQUEST, "bad_request", why.to_string());
    }
    let set = store.snapshot();
    if set.get(&key).is_none() {
        return no_such_flag(&key);
    }
    let eval = set.evaluate(&key, &user);
    let mut body = json!(eval);
    body["user"] = json!(user);
    body["version"] = json!(set.version);
    axum::Json(body).into_response()
}

/// The master's flag routes over `store`; merge them into a lesson's own with
/// [`MasterRoutes::merge`].
pub fn routes(store: FlagStore) -> MasterRoutes {
    MasterRoutes::new(
        &["/flags", "/flags/"],
        Router::new()
            .route("/flags", get(list))
            .route("/flags/{key}", get(show).post(upsert))
            .route("/flags/{key}/delete", post(delete))
            .route("/flags/{key}/evaluate", get(evaluate))
            .with_state(store),
    )
}

/// `GET /feature/{key}?user=U` on a worker: the evaluation through `client`, with the worker's
/// id and the version of the flags it has. Merge it into the worker's router.
pub fn worker_routes(client: FlagClient, worker: usize) -> Router {
    let feature = move |Path(key): Path<String>, q: Result<Query<UserQuery>, QueryRejection>| {
        let client = client.clone();
        async move {
            let Ok(Query(UserQuery { user })) = q else {
                return error(StatusCode::BAD_REQUEST, "bad_request", "say who: ?user=ID");
            };
            if let Err(why) = check_user(&user) {
                return error(StatusCode::BAD_REQUEST, "bad_request", why.to_string());
            }
            let mut body = json!(client.evaluate(&key, &user));
            body["worker"] = json!(worker);
            body["version"] = json!(client.version());
            axum::Json(body).into_response()
        }
    };
    Router::new().route("/feature/{key}", get(feature))
}
