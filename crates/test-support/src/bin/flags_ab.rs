//! A cluster that mounts the feature-flag and A/B-test routes exactly as a lesson does, for their
//! integration tests (`tests/flags.rs`, `tests/ab.rs`).
//!
//! Run with `cargo run -p test-support --bin flags_ab`. Settings besides the runtime's:
//! `FLAGS_FILE` (default: `flags-ab-flags.json` in the system's temporary directory),
//! `FLAGS_POLL_MS`, `AB_EXPERIMENT`, `AB_SALT`, `AB_SPLIT`, `AB_MAX_USERS`.
//!
//! The master answers `/flags…` and `/ab/status|convert|variant`. Each worker serves:
//! - `GET /feature/{key}?user=U`: the flag as this worker sees it, through its `FlagClient`:
//!   `{"worker", "version", "flagKey", "value", "variant", "reason"}`;
//! - `GET /ab/page` for the user in `X-User-Id` (or the session cookie): the variant it renders,
//!   `{"worker", "user", "variant"}` and an `X-Variant` header. The master counts the exposure as
//!   it routes the request (`ab::Exposing`).

use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use common::ab::{self, AbSettings, AbTest};
use common::balance::RoundRobin;
use common::config::{self, Config, Defaults, ProcessEnv};
use common::flags::{self, FlagClient, FlagSettings};
use common::{Cluster, WorkerContext};
use serde::Deserialize;
use serde_json::json;

fn main() -> ExitCode {
    let config = Config::from_env_or_exit(Defaults {
        workers: 2,
        port: 8000,
    });
    let default_file = std::env::temp_dir().join("flags-ab-flags.json");
    let flag_settings = FlagSettings::from_source(&ProcessEnv, &default_file.to_string_lossy())
        .unwrap_or_else(|e| config::exit_bad_config(&e));
    let ab_settings =
        AbSettings::from_source(&ProcessEnv).unwrap_or_else(|e| config::exit_bad_config(&e));
    // The master's store is opened before anything is bound: a corrupt file exits 2.
    let store = (!common::is_worker()).then(|| {
        flag_settings
            .open_store()
            .unwrap_or_else(|e| config::exit_bad_config(&e))
    });
    let ab = Arc::new(AbTest::new(ab_settings));
    let worker_ab = ab.clone();
    let banner = format!(
        "{} (workers reload it every {:?})",
        flag_settings.path.display(),
        flag_settings.poll
    );
    Cluster::new("flags-ab", config)
        .worker(move |ctx| {
            let client = flag_settings
                .client()
                .unwrap_or_else(|e| config::exit_bad_config(&e));
            worker(ctx, client, worker_ab.clone())
        })
        .selector(ab::Exposing::new(
            ab.clone(),
            "/ab/page",
            RoundRobin::default(),
        ))
        .master(move |_| {
            let store = store.expect("the master opened its store");
            flags::routes(store).merge(ab::routes(ab))
        })
        .banner_line("flags", banner)
        .run()
}

#[derive(Deserialize)]
struct UserQuery {
    user: String,
}

fn worker(ctx: &WorkerContext, flags: FlagClient, ab: Arc<AbTest>) -> Router {
    let id = ctx.id;
    let feature = move |Path(key): Path<String>, q: Result<Query<UserQuery>, QueryRejection>| {
        let flags = flags.clone();
        async move {
            let Ok(Query(UserQuery { user })) = q else {
                return (StatusCode::BAD_REQUEST, "say who: ?user=ID\n").into_response();
            };
            let mut body = json!(flags.evaluate(&key, &user));
            body["worker"] = json!(id);
            body["version"] = json!(flags.version());
            axum::Json(body).into_response()
        }
    };
    let page = move |headers: HeaderMap| {
        let ab = ab.clone();
        async move {
            // No user, no experiment: the control, as everyone had before it.
            let user = ab::user_of(&headers);
            let variant = user.map_or(ab::Variant::A, |u| ab.assign(u));
            let body = json!({ "worker": id, "user": user, "variant": variant });
            ([("x-variant", variant.as_str())], axum::Json(body)).into_response()
        }
    };
    Router::new()
        .route("/feature/{key}", get(feature))
        .route("/ab/page", get(page))
}
