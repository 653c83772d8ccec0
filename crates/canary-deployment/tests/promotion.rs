//! A good canary: the automated rollout walks every step on the analysis' say-so, reaches 100%
//! and promotes (the stable pool is replaced by the canary version with a readiness-gated rolling
//! restart), with not one failed request under load throughout.

mod support;

use std::time::{Duration, Instant};

use support::{BIN, CANARY, UserLoad, post_ok, users, wait_status};
use test_support::{ClusterProcess, Http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_rolled_out_to_a_hundred_percent_and_promoted_with_no_failed_request() {
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "2"),
            ("CANARY_WORKERS", "1"),
            ("CANARY_STEP_SECONDS", "1"),
            ("CANARY_MIN_REQUESTS", "30"),
            ("CANARY_SALT", "promotion-test-salt"),
            ("ROLLING_PAUSE_MS", "200"),
            // A loaded 2-core test machine jitters latency; this test is about promotion, the
            // latency rule has unit tests of its own.
            ("CANARY_P95_FLOOR_MS", "500"),
        ],
    );
    let base = cluster.base();
    let http = Http::new();
    let before = http.ready_pids(&base).await;
    let load = UserLoad::start(&base, 8, 1000);
    let started = Instant::now();
    post_ok(&http, &base, "/canary/rollout", "").await;
    let (promoted, s) = wait_status(&http, &base, Duration::from_secs(60), |s| {
        s["deployment"]["mode"] == "promoted"
    })
    .await;
    let took = started.elapsed();
    let report = load.finish().await;
    assert!(promoted, "not promoted: {s:#}");
    println!(
        "promoted after {took:?}; served {:?}, failed {:?}, transport errors {}",
        report.ok, report.failed, report.errors
    );
    assert_eq!(report.all_failed(), 0, "{:?}", report.samples);
    assert!(report.served_by(CANARY) > 100, "{report:?}");

    // Every step passed on a healthy verdict, then the promotion.
    let history: Vec<(u64, String)> = s["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|h| {
            (
                h["percent"].as_u64().unwrap_or(0),
                h["endedBy"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected: Vec<(u64, String)> = [
        (10, "passed"),
        (25, "passed"),
        (50, "passed"),
        (75, "passed"),
        (100, "promoted"),
    ]
    .iter()
    .map(|(p, e)| (*p, e.to_string()))
    .collect();
    assert_eq!(history, expected, "{s:#}");
    for h in s["history"].as_array().into_iter().flatten().take(4) {
        assert_eq!(h["verdict"]["outcome"], "healthy", "{h:#}");
    }

    // The stable pool runs the new version, in new processes; the canary pool drained.
    assert_eq!(s["versions"]["stable"], CANARY);
    assert_eq!(s["deployment"]["canaryPercentage"], 0);
    let (versions, failures) = users(&http, &base, "after", 300).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        versions.keys().collect::<Vec<_>>(),
        [CANARY],
        "{versions:?}"
    );
    let after = http.ready_pids(&base).await;
    for (slot, pid) in &before {
        assert!(
            !after.contains(&(*slot, *pid)),
            "slot {slot} kept pid {pid}: {after:?}"
        );
    }
}
