//! The master's A/B routes.
//!
//! - `GET /ab/status`: each variant's requests, exposures, conversions and rate, and the z-test
//!   of B against A ([`Status`](super::Status));
//! - `POST /ab/convert` with `{"user": "alice"}`: counts alice's conversion (200), once; a user
//!   never served a variant is a 409 and counts nothing; a bad body a 400;
//! - `GET /ab/variant?user=U`: which variant U sees, counting nothing (to check an assignment).
//!
//! GET on `/ab/convert` is a 405, so a link or a prefetch cannot count a conversion.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::experiment::{AbTest, Converted};
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
