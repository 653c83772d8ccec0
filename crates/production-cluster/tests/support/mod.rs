//! What the lesson's integration tests share: the binary, the admin token they configure, and
//! requests with and without it.

#![allow(dead_code, reason = "each test file uses its own subset")]

use test_support::{Http, Reply};

/// The lesson's binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_production-cluster");

/// The admin token the test clusters are started with.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// `method url` with `headers` and `body`, panicking on a transport error.
pub async fn send(
    http: &Http,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    http.send(method, url, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// `method url` as the admin, with a JSON body.
pub async fn admin(http: &Http, method: &str, url: &str, body: &str) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    send(http, method, url, &headers, body).await
}

/// The slots `GET /admin/workers` lists, with their states.
pub async fn admin_workers(http: &Http, base: &str) -> serde_json::Value {
    let r = admin(http, "GET", &format!("{base}/admin/workers"), "").await;
    assert_eq!(r.status, 200, "/admin/workers: {}", r.body);
    r.json()
}
