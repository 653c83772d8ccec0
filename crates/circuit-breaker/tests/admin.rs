//! The master's routes on a real cluster: `POST /circuit-reset` resets every breaker on every
//! worker (and `GET` is a 405, where the original reset on any method), one circuit can be
//! forced open and closed everywhere, and a service's faults are set and read with the calls
//! that reached it.
//!
//! One cluster for the file; a reset touches every circuit, so the tests take turns.

mod support;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use support::{all_in, calls_by_worker, circuit_on_workers, post, set_faults, states, status};
use test_support::{Http, SharedCluster};
use tokio::sync::Mutex;

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();
/// Held by each test for its whole run.
static TURN: Mutex<()> = Mutex::const_new(());

use support::WORKERS;

fn cluster() -> SharedCluster {
    support::two_workers(&CLUSTER)
}

#[tokio::test]
async fn post_circuit_reset_closes_every_breaker_on_every_worker_and_get_is_405() {
    let _turn = TURN.lock().await;
    let http = Http::new();
    let base = cluster().url("");
    for _ in 0..10 {
        http.get(&format!("{base}/api/fail")).await;
    }
    let r = post(&http, &format!("{base}/circuit/payments/open"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(all_in(&http, &base, "fail", WORKERS, &["OPEN"]).await);
    assert!(all_in(&http, &base, "payments", WORKERS, &["FORCED_OPEN"]).await);

    let r = http.get(&format!("{base}/circuit-reset")).await;
    assert_eq!(r.status, 405, "a GET must not reset: {}", r.body);
    assert!(
        all_in(&http, &base, "fail", WORKERS, &["OPEN"]).await,
        "still open after the GET: {:?}",
        states(&http, &base, "fail").await
    );

    let r = post(&http, &format!("{base}/circuit-reset"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["reset"], true, "{body}");
    let ids: BTreeSet<u64> = body["workers"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w["id"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(ids.len(), WORKERS, "every worker answered: {body}");
    let s = status(&http, &base).await;
    for w in s["workers"].as_array().into_iter().flatten() {
        for b in w["breakers"].as_array().into_iter().flatten() {
            assert_eq!(
                b["state"], "CLOSED",
                "worker {} {}: {b}",
                w["id"], b["name"]
            );
        }
    }
    let r = http.get(&format!("{base}/api/fail")).await;
    assert_eq!(r.status, 500, "called again after the reset: {}", r.body);
    post(&http, &format!("{base}/circuit-reset"), "").await;
}

#[tokio::test]
async fn one_circuit_is_forced_open_and_closed_on_every_worker() {
    let _turn = TURN.lock().await;
    let http = Http::new();
    let base = cluster().url("");
    set_faults(&http, &base, "external", "{}").await;
    let r = post(&http, &format!("{base}/circuit/external/open"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = circuit_on_workers(&http, &base, "external").await;
    assert_eq!(seen.len(), WORKERS);
    assert!(
        seen.iter().all(|(_, b)| b["state"] == "FORCED_OPEN"),
        "{seen:?}"
    );

    let r = http.get(&format!("{base}/circuit/external")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    let forced = body["workers"].as_array().map(|ws| {
        ws.iter()
            .filter(|w| w["breaker"]["state"] == "FORCED_OPEN")
            .count()
    });
    assert_eq!(forced, Some(WORKERS), "{body}");

    let mut refused_by = BTreeSet::new();
    for _ in 0..4 {
        let r = http.get(&format!("{base}/api/external")).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.json()["circuit"], "external", "{}", r.body);
        assert!(!r.header("retry-after").is_empty());
        refused_by.insert(r.header("x-worker-id").to_string());
    }
    assert_eq!(refused_by.len(), WORKERS, "{refused_by:?}");

    let r = http.get(&format!("{base}/circuit/external/open")).await;
    assert_eq!(r.status, 405, "forcing is POST-only: {}", r.body);
    let r = post(&http, &format!("{base}/circuit/nope/open"), "").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = post(&http, &format!("{base}/circuit/external/explode"), "").await;
    assert_eq!(r.status, 404, "{}", r.body);

    let r = post(&http, &format!("{base}/circuit/external/close"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(all_in(&http, &base, "external", WORKERS, &["CLOSED"]).await);
    let r = http.get(&format!("{base}/api/external")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["service"], "external", "{}", r.body);
}

#[tokio::test]
async fn faults_are_set_and_read_with_the_calls_that_reached_the_service() {
    let _turn = TURN.lock().await;
    let http = Http::new();
    let base = cluster().url("");
    set_faults(&http, &base, "payments", "{}").await;
    post(&http, &format!("{base}/circuit/payments/reset"), "").await;
    let before: u64 = calls_by_worker(&http, &base, "payments")
        .await
        .iter()
        .map(|(_, n)| n)
        .sum();
    // Two good answers per worker, so each has a last good one to fall back on.
    for _ in 0..4 {
        let r = http.get(&format!("{base}/api/payments")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    let r = post(
        &http,
        &format!("{base}/faults/payments"),
        r#"{"errorRate": 1.0}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["errorRate"], 1.0, "{body}");
    assert_eq!(body["down"], false, "omitted fields are cleared: {body}");
    let r = http.get(&format!("{base}/api/payments")).await;
    assert_eq!(r.status, 502, "the call failed: {}", r.body);
    let failed = r.json();
    assert_eq!(failed["error"], "dependency_failed", "{failed}");
    assert_eq!(
        failed["fallback"]["stale"], true,
        "last good answer: {failed}"
    );
    assert_eq!(
        failed["fallback"]["data"]["service"], "payments",
        "{failed}"
    );

    let report = http.get(&format!("{base}/faults/payments")).await.json();
    assert_eq!(report["errorRate"], 1.0, "{report}");
    assert_eq!(report["calls"].as_u64(), Some(before + 5), "{report}");

    for (body, why) in [
        (r#"{"errorRate": 2}"#, "a share above 1"),
        (r#"{"latency": 5}"#, "an unknown field"),
        ("not json", "not JSON"),
    ] {
        let r = post(&http, &format!("{base}/faults/payments"), body).await;
        assert_eq!(r.status, 400, "{why}: {}", r.body);
    }
    let r = post(&http, &format!("{base}/faults/mainframe"), "{}").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = http.get(&format!("{base}/faults/payments/extra")).await;
    assert_eq!(r.status, 404, "{}", r.body);
    set_faults(&http, &base, "payments", "{}").await;
    post(&http, &format!("{base}/circuit/payments/reset"), "").await;
}
