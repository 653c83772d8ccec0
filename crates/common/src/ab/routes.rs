//! The master's A/B routes.
//!
//! - `GET /ab/status`: each variant's requests, exposures, conversions and rate, and the z-test
//!   of B against A ([`Status`](super::Status));
//! - `POST /ab/convert` with `{"user": "alice"}`: counts alice's conversion (200), once; a user
//!   never served a variant is a 409 and counts nothing; a bad body a 400;
//! - `GET /ab/variant?user=U`: which variant U sees, counting nothing (to check an assignment).
//!
//! And for each worker, [`page_routes`]: `GET /ab/page` renders the variant of the user named
//! by the session cookie or `X-User-Id` as `{"worker", "user", "variant"}` with an `X-Variant`
//! header; a request with no user gets A, the control. The master counts the exposure as it
//! routes the request, when its selector is wrapped in [`Exposing`](super::Exposing) for
//! [`PAGE_PATH`].
//!
//! GET on `/ab/convert` is a 405, so a link or a prefetch cannot count a conversion.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::experiment::{AbTest, Converted, Variant};
use super::exposing::user_of;
use crate::flags::flag::check_user;
use crate::http::routes::MasterRoutes;

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": code, "message": message.into(), "status": status.as_u16() });
    (status, axum::Json(body)).into_response()
}

/// `GET /ab/status`.
async fn status(State(ab): State<Arc<AbTest>>) -> Response {
    axum::Json(ab.status()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct User {
    user: String,
}

/// `POST /ab/convert`.
async fn convert(State(ab): State<Arc<AbTest>>, body: Bytes) -> Response {
    let user = match serde_json::from_slice::<User>(&body) {
        Ok(User { user }) => user,
        Err(e) => {
            let why = format!(r#"expected a JSON object like {{"user": "alice"}}: {e}"#);
            return error(StatusCode::BAD_REQUEST, "bad_request", why);
        }
    };
    if let Err(why) = check_user(&user) {
        return error(StatusCode::BAD_REQUEST, "bad_request", why.to_string());
    }
    match ab.convert(&user) {
        Converted::Counted(v) => {
            axum::Json(json!({ "user": user, "variant": v, "counted": true })).into_response()
        }
        Converted::Already(v) => {
            axum::Json(json!({ "user": user, "variant": v, "counted": false })).into_response()
        }
        Converted::NotExposed => error(
            StatusCode::CONFLICT,
            "not_exposed",
            format!("user {user:?} was never served a variant of this experiment; nothing counted"),
        ),
    }
}

#[derive(Deserialize)]
struct UserQuery {
    user: String,
}

/// `GET /ab/variant?user=U`.
async fn variant(
    State(ab): State<Arc<AbTest>>,
    query: Result<Query<UserQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(UserQuery { user })) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "say whose variant: ?user=ID",
        );
    };
    if let Err(why) = check_user(&user) {
        return error(StatusCode::BAD_REQUEST, "bad_request", why.to_string());
    }
    let body = json!({
        "experiment": ab.settings().name,
        "user": user,
        "variant": ab.assign(&user),
        "bucket": crate::flags::bucket::bucket(&ab.settings().salt, &user),
    });
    axum::Json(body).into_response()
}

/// The master's A/B routes over `ab`.
pub fn routes(ab: Arc<AbTest>) -> MasterRoutes {
    MasterRoutes::new(
        &["/ab/status", "/ab/convert", "/ab/variant"],
        Router::new()
            .route("/ab/status", get(status))
            .route("/ab/convert", post(convert))
            .route("/ab/variant", get(variant))
            .with_state(ab),
    )
}

/// The path [`page_routes`] serves, for [`Exposing`](super::Exposing).
pub const PAGE_PATH: &str = "/ab/page";

/// `GET /ab/page` on a worker: the variant `ab` assigns the request's user. Merge it into the
/// worker's router; the worker only assigns (pure), the master counts.
pub fn page_routes(ab: Arc<AbTest>, worker: usize) -> Router {
    let page = move |headers: HeaderMap| {
        let ab = ab.clone();
        async move {
            // No user, no experiment: the control, as everyone had before it.
            let user = user_of(&headers);
            let variant = user.map_or(Variant::A, |u| ab.assign(u));
            let body = json!({ "worker": worker, "user": user, "variant": variant });
            ([("x-variant", variant.as_str())], axum::Json(body)).into_response()
        }
    };
    Router::new().route(PAGE_PATH, get(page))
}
