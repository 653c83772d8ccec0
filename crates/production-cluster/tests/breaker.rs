//! Checklist: circuit breakers around downstream calls. When the downstream fails, its breaker
//! opens and answers 503 at once without calling it; `/`, which needs no downstream, never
//! notices. In cluster scope (the default) one breaker in the master decides for every worker:
//! failures seen by any worker open it everywhere.

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
            ("BREAKER_SCOPE", "worker"),
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
    assert_eq!(status["scope"], "worker", "{status}");
    assert_eq!(
        status["workers"][0]["breakers"][0]["state"], "OPEN",
        "{status}"
    );
}

/// Workers in the cluster-scope test; with per-worker breakers the downstream would be called
/// `WORKERS * MIN_CALLS` times before every worker had opened its own.
const WORKERS: usize = 3;
const MIN_CALLS: u64 = 5;

#[tokio::test]
async fn in_cluster_scope_failures_on_any_worker_open_the_breaker_on_every_worker() {
    let (url, calls) = failing_downstream().await;
    let workers = WORKERS.to_string();
    let min_calls = MIN_CALLS.to_string();
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", &workers),
            ("DOWNSTREAM_URL", &url),
            ("BREAKER_MIN_CALLS", &min_calls),
            ("BREAKER_WAIT_IN_OPEN", "60000"),
            ("ACCESS_LOG", "off"),
        ],
    );
    let http = Http::new();
    // Fail calls until every worker answers "circuit open", however they are spread.
    let mut open_on = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while open_on.len() < WORKERS {
        assert!(
            std::time::Instant::now() < deadline,
            "not open on every worker: {open_on:?}, {} calls",
            calls.load(Ordering::Relaxed)
        );
        let r = http.get(&cluster.url("/api/downstream")).await;
        match r.status {
            503 => {
                assert_eq!(r.json()["error"], "circuit_open", "{}", r.body);
                open_on.insert(r.json()["workerId"].to_string());
            }
            502 => assert_eq!(r.json()["error"], "dependency_failed", "{}", r.body),
            other => panic!("{other}: {}", r.body),
        }
    }
    let made = calls.load(Ordering::Relaxed);
    assert!(
        made >= MIN_CALLS && made < WORKERS as u64 * MIN_CALLS,
        "one breaker for the cluster: {made} calls, not {MIN_CALLS} per worker"
    );
    let status = http.get(&cluster.url("/circuit-status")).await.json();
    assert_eq!(status["scope"], "cluster", "{status}");
    assert_eq!(status["breakers"][0]["name"], "downstream", "{status}");
    assert_eq!(status["breakers"][0]["state"], "OPEN", "{status}");
    let followers = status["workers"].as_array().expect("workers");
    assert_eq!(followers.len(), WORKERS, "{status}");
    for w in followers {
        assert_eq!(w["breakers"][0]["state"], "OPEN", "{status}");
    }
    for _ in 0..5 {
        let r = http.get(&cluster.url("/")).await;
        assert_eq!(r.status, 200, "/ needs no downstream: {}", r.body);
    }
    assert_eq!(
        calls.load(Ordering::Relaxed),
        made,
        "an open circuit calls nothing"
    );
}
