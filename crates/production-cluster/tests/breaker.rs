//! Checklist: circuit breakers around downstream calls. When the downstream fails, its breaker
//! opens and answers 503 at once without calling it; `/`, which needs no downstream, never
//! notices.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use support::BIN;
use test_support::{ClusterProcess, Http};

/// A downstream that answers 500 to everything, counting the calls it gets.
async fn failing_downstream() -> (String, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let app = Router::new().route(
        "/",
        get(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            async { (StatusCode::INTERNAL_SERVER_ERROR, "down") }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), calls)
}

#[tokio::test]
async fn a_failing_downstream_opens_its_breaker_and_slash_is_untouched() {
    let (url, calls) = failing_downstream().await;
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "1"),
            ("DOWNSTREAM_URL", &url),
            ("BREAKER_MIN_CALLS", "5"),
            ("BREAKER_WAIT_IN_OPEN", "60000"),
            ("ACCESS_LOG", "off"),
        ],
    );
    let http = Http::new();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = http.get(&cluster.url("/api/downstream")).await;
        statuses.push(r.status);
        if r.status == 503 {
            assert_eq!(r.json()["error"], "circuit_open", "{}", r.body);
            assert!(
                !r.header("retry-after").is_empty(),
                "Retry-After on an open circuit"
            );
            break;
        }
        assert_eq!(r.status, 502, "a failed call is a 502: {}", r.body);
        assert_eq!(r.json()["error"], "dependency_failed");
    }
    assert_eq!(
        statuses.last(),
        Some(&503),
        "the circuit opened: {statuses:?}"
    );
    let made = calls.load(Ordering::Relaxed);
    assert_eq!(
        made, 5,
        "opened after 5 failed calls (BREAKER_MIN_CALLS, and 5 in a row): {statuses:?}"
    );
    for _ in 0..5 {
        let r = http.get(&cluster.url("/api/downstream")).await;
        assert_eq!(r.status, 503, "{}", r.body);
    }
    assert_eq!(
        calls.load(Ordering::Relaxed),
        made,
        "an open circuit calls nothing"
    );
    for _ in 0..5 {
        let r = http.get(&cluster.url("/")).await;
        assert_eq!(r.status, 200, "/ needs no downstream: {}", r.body);
    }
    let status = http.get(&cluster.url("/circuit-status")).await.json();
    assert_eq!(
        status["workers"][0]["breakers"][0]["state"], "OPEN",
        "{status}"
    );
}
