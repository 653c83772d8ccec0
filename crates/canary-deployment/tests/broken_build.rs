//! A build that cannot become ready (`CANARY_BIN` names a program that exits at once) never takes
//! traffic: a rolling deployment of it stops at its first slot and the old workers keep serving,
//! and blue-green refuses to switch to it, naming the one green worker it started to find out.

mod support;

use support::{BIN, STABLE, UserLoad, post, users};
use test_support::{ClusterProcess, Http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_fails_its_readiness_aborts_the_roll_and_is_never_switched_to() {
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "2"),
            ("CANARY_WORKERS", "0"),
            ("CANARY_BIN", "/bin/false"),
            ("ROLLING_PAUSE_MS", "100"),
        ],
    );
    let base = cluster.base();
    let http = Http::new();
    let before = http.ready_pids(&base).await;
    assert_eq!(before.len(), 2, "{before:?}");

    let load = UserLoad::start(&base, 4, 200);
    let r = post(
        &http,
        &format!("{base}/deploy/rolling"),
        r#"{"pool": "stable", "build": "canary"}"#,
    )
    .await;
    let report = load.finish().await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("aborted"), "{}", r.body);
    assert_eq!(report.all_failed(), 0, "{:?}", report.samples);
    assert_eq!(
        http.ready_pids(&base).await,
        before,
        "the old workers keep serving"
    );

    let r = post(&http, &format!("{base}/deploy/blue-green"), "").await;
    assert_eq!(r.status, 503, "{}", r.body);
    // The green pool's first worker is brought up alone, so the failure names it: slot 3,
    // the first free slot after the two stable ones, not whichever crash was reaped first.
    assert!(
        r.body
            .contains("a green worker (slot 3) exited before it was ready"),
        "{}",
        r.body
    );
    let (versions, failures) = users(&http, &base, "after", 200).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(versions.keys().collect::<Vec<_>>(), [STABLE]);
    let bad = post(
        &http,
        &format!("{base}/deploy/rolling"),
        r#"{"pool": "blue"}"#,
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
}
