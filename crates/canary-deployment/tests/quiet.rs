//! Not enough data holds the step: a canary that sees too few requests is never promoted, however
//! long its steps have lasted.

mod support;

use std::time::Duration;

use support::{BIN, post_ok, status, users, wait_status};
use test_support::{ClusterProcess, Http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_canary_holds_its_step_and_is_never_promoted_on_no_evidence() {
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "1"),
            ("CANARY_WORKERS", "1"),
            ("CANARY_STEP_SECONDS", "0.3"),
            ("CANARY_MIN_REQUESTS", "1000"),
            ("CANARY_STEPS", "50,100"),
            ("CANARY_SALT", "quiet-test-salt"),
        ],
    );
    let base = cluster.base();
    let http = Http::new();
    post_ok(&http, &base, "/canary/rollout", "").await;
    // Some traffic, far below CANARY_MIN_REQUESTS on either side.
    let (_, failures) = users(&http, &base, "quiet", 100).await;
    assert!(failures.is_empty(), "{failures:?}");
    // Ten step lengths later the step is still the first one.
    let (long_enough, s) = wait_status(&http, &base, Duration::from_secs(20), |s| {
        s["deployment"]["step"]["elapsedSeconds"]
            .as_f64()
            .unwrap_or(0.0)
            >= 3.0
    })
    .await;
    assert!(long_enough, "{s:#}");
    let s = status(&http, &base).await;
    assert_eq!(s["deployment"]["mode"], "rollingOut", "{s:#}");
    assert_eq!(s["deployment"]["canaryPercentage"], 50, "{s:#}");
    assert_eq!(s["verdict"]["outcome"], "notEnoughData", "{s:#}");
    assert_eq!(s["history"].as_array().map(Vec::len), Some(0), "{s:#}");
    assert_eq!(s["versions"]["stable"], support::STABLE);
}
