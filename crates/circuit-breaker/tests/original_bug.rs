//! The Node original's bug, fixed: its breaker was keyed by worker, so ten failures on
//! `/api/fail` opened it and the healthy `/` answered 503 too. Here `/api/fail` has a circuit of
//! its own and `/` touches none.

mod support;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use support::{all_in, states};
use test_support::{Http, SharedCluster};

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();

use support::WORKERS;

fn cluster() -> SharedCluster {
    // The default 10 s wait keeps the circuit open for the whole test.
    support::two_workers(&CLUSTER)
}

#[tokio::test]
async fn ten_failures_on_api_fail_leave_the_healthy_route_answering_on_every_worker() {
    let http = Http::new();
    let base = cluster().url("");
    // Round-robin gives each of the two workers five in a row: its fail circuit's threshold.
    for _ in 0..10 {
        let r = http.get(&format!("{base}/api/fail")).await;
        assert_eq!(r.status, 500, "{}", r.body);
        assert_eq!(r.json()["error"], "Forced failure", "{}", r.body);
    }
    assert!(
        all_in(&http, &base, "fail", WORKERS, &["OPEN"]).await,
        "the fail circuit is open on every worker: {:?}",
        states(&http, &base, "fail").await
    );
    let r = http.get(&format!("{base}/api/fail")).await;
    assert_eq!(r.status, 503, "open now: {}", r.body);
    assert_eq!(r.json()["circuit"], "fail", "{}", r.body);
    assert!(!r.header("retry-after").is_empty(), "Retry-After is set");

    let mut answered = BTreeSet::new();
    for _ in 0..20 {
        let r = http.get(&format!("{base}/")).await;
        assert_eq!(r.status, 200, "/ must not be refused: {}", r.body);
        answered.insert(r.header("x-worker-id").to_string());
    }
    assert_eq!(
        answered.len(),
        WORKERS,
        "every worker answered /: {answered:?}"
    );
    for circuit in ["external", "database", "payments"] {
        assert!(
            all_in(&http, &base, circuit, WORKERS, &["CLOSED"]).await,
            "{circuit} untouched by /api/fail: {:?}",
            states(&http, &base, circuit).await
        );
    }
}
