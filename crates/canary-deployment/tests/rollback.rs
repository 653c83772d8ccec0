//! A bad canary (the fault knob at 20% errors) is rolled back within its first step, by the
//! analysis, while users keep being served: every failed request came from the canary's injected
//! faults, none from the stable pool or the edge.

mod support;

use std::time::{Duration, Instant};

use support::{BIN, CANARY, STABLE, UserLoad, post, post_ok, status, users, wait_status};
use test_support::{ClusterProcess, Http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_a_fifth_of_its_requests_is_rolled_back_within_one_step() {
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "2"),
            ("CANARY_WORKERS", "1"),
            ("CANARY_STEP_SECONDS", "3"),
            ("CANARY_MIN_REQUESTS", "40"),
            ("CANARY_STEPS", "25,50,100"),
            ("CANARY_SALT", "rollback-test-salt"),
        ],
    );
    let base = cluster.base();
    let http = Http::new();

    // The knob refuses what it cannot use, and GET on it is not a way to set it.
    let bad = post(
        &http,
        &format!("{base}/faults/canary"),
        r#"{"errorRate": 2}"#,
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let bad = post(&http, &format!("{base}/faults/canary"), r#"{"errorRate": "#).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    for path in [
        "/canary/increase",
        "/canary/rollout",
        "/canary/rollback",
        "/canary/promote",
    ] {
        let r = http.get(&format!("{base}{path}")).await;
        assert_eq!(r.status, 405, "GET {path}");
    }

    post_ok(
        &http,
        &base,
        "/faults/canary",
        r#"{"errorRate": 0.2, "latencyMs": 0}"#,
    )
    .await;
    let load = UserLoad::start(&base, 8, 500);
    let started = Instant::now();
    let r = post_ok(&http, &base, "/canary/rollout", "").await;
    assert_eq!(r["canaryPercentage"], 25);
    let (rolled_back, s) = wait_status(&http, &base, Duration::from_secs(30), |s| {
        s["deployment"]["mode"] == "rolledBack"
    })
    .await;
    let took = started.elapsed();
    let report = load.finish().await;
    assert!(rolled_back, "not rolled back: {s:#}");
    println!(
        "rolled back after {took:?}; served ok {:?}, failed {:?}, transport errors {}",
        report.ok, report.failed, report.errors
    );

    // Within the first step: it never got past 25%.
    let history = s["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(history.len(), 1, "{s:#}");
    assert_eq!(history[0]["percent"], 25);
    assert_eq!(history[0]["endedBy"], "rolledBack");
    let verdict = &history[0]["verdict"];
    assert_eq!(verdict["outcome"], "unhealthy", "{verdict:#}");
    assert_eq!(verdict["checks"][0]["metric"], "errorRate");
    assert_eq!(verdict["checks"][0]["passed"], false);
    assert!(
        verdict["canary"]["errorRate"].as_f64().unwrap_or(0.0) > 0.1,
        "{verdict:#}"
    );
    assert_eq!(s["deployment"]["canaryPercentage"], 0);

    // No stable user and no request of the edge failed: only the injected canary faults did.
    assert!(report.served_by(STABLE) > 100, "{report:?}");
    assert_eq!(report.failed.get(STABLE), None, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(
        report.all_failed(),
        report.failed.get(CANARY).copied().unwrap_or(0),
        "{report:?}"
    );

    // Everyone is on stable now, and the canary workers drained away.
    let (versions, failures) = users(&http, &base, "after", 400).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        versions.keys().collect::<Vec<_>>(),
        [STABLE],
        "{versions:?}"
    );
    let (drained, s) = wait_status(&http, &base, Duration::from_secs(15), |s| {
        s["deployment"]["canaryWorkers"] == 0
    })
    .await;
    assert!(drained, "{s:#}");
    assert_eq!(status(&http, &base).await["versions"]["stable"], STABLE);
}
