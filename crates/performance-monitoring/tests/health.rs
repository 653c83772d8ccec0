//! `/health` uses the monitor's health score: a ready worker scoring 50 or less makes the cluster
//! `degraded`.

mod support;

use std::time::Duration;

use support::BIN;
use test_support::{ClusterProcess, Http, eventually_async};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_each_score_and_degrades_when_a_worker_scores_50_or_less() {
    // Thresholds so low that memory, p95 and the error rate are all "over" once traffic flows:
    // three penalties, 100 - 3 × 20 = 40.
    let c = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "1"),
            ("RUST_LOG", "warn"),
            ("ALERT_MEMORY_PERCENT", "0.0001"),
            ("ALERT_P95_MS", "0.0001"),
            ("ALERT_ERROR_RATE", "0.0001"),
        ],
    );
    let http = Http::new();
    // The memory penalty needs the worker's first heartbeat, which carries its memory.
    let sampled =
        || async { http.health(&c.base()).await["workers"]["slots"][0]["healthScore"] != 100 };
    assert!(eventually_async(Duration::from_secs(5), sampled).await);
    let h = http.health(&c.base()).await;
    assert_eq!(h["status"], "ok", "idle: only memory is over (80): {h}");
    assert_eq!(h["workers"]["slots"][0]["healthScore"], 80, "{h}");
    assert_eq!(h["workers"]["slots"][0]["health"], "healthy", "{h}");

    for i in 0..30 {
        let path = if i % 3 == 0 { "/fail" } else { "/delay?ms=2" };
        let _ = http.get(&c.url(path)).await;
    }
    let degraded = || async { http.health(&c.base()).await["status"] == "degraded" };
    assert!(
        eventually_async(Duration::from_secs(5), degraded).await,
        "{}",
        http.health(&c.base()).await
    );
    let r = http.get(&c.url("/health")).await;
    assert_eq!(r.status, 200, "degraded still serves");
    let h = r.json();
    assert_eq!(h["workers"]["slots"][0]["healthScore"], 40, "{h}");
    assert_eq!(h["workers"]["slots"][0]["health"], "degraded", "{h}");
}
