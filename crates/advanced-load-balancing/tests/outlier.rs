//! Passive outlier detection on a real cluster: a worker made to answer 500s is ejected after
//! `OUTLIER_CONSECUTIVE_ERRORS` in a row, the other serves everything meanwhile, and it is
//! readmitted when its ejection time is over, for longer each time it is ejected again.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;
use support::{lb_stats, set_fault, spread, worker};
use test_support::{Http, SharedCluster, eventually_async};

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();

/// Errors in a row that eject.
const THRESHOLD: u64 = 5;

fn cluster() -> SharedCluster {
    SharedCluster::get(
        &CLUSTER,
        env!("CARGO_BIN_EXE_advanced-load-balancing"),
        &[
            ("WORKERS", "2"),
            ("STRATEGY", "round-robin"),
            ("OUTLIER_CONSECUTIVE_ERRORS", "5"),
            ("OUTLIER_BASE_EJECTION_MS", "2000"),
        ],
    )
}

async fn healthy(http: &Http, base: &str, id: u64) -> bool {
    worker(&lb_stats(http, base).await, id)["healthy"] == true
}

#[tokio::test]
async fn a_failing_worker_is_ejected_then_readmitted_for_longer_each_time() {
    let http = Http::new();
    let base = cluster().url("");
    let url = format!("{base}/fast");
    set_fault(&http, &base, 2, json!({ "errorRate": 100 })).await;

    // Round-robin alternates 1, 2, 1, 2…: worker 2's fifth 500 ejects it, and nothing fails after.
    // (20 requests take well under the 2 s ejection, so it is not readmitted meanwhile.)
    let s = spread(&http, &url, 20, 1).await;
    eprintln!(
        "20 requests, worker 2 failing: {} failed, {:?} answered",
        s.failed, s.by_worker
    );
    assert_eq!(
        s.failed, THRESHOLD,
        "only the errors that tripped the ejection reach clients: {:?}",
        s.failures
    );
    assert_eq!(
        s.of(1),
        20 - THRESHOLD,
        "worker 1 served the rest: {:?}",
        s.by_worker
    );
    let stats = lb_stats(&http, &base).await;
    let w2 = worker(&stats, 2);
    assert_eq!(w2["healthy"], false, "{stats}");
    assert!(w2["ejectedUntil"].is_u64(), "{stats}");
    assert_eq!(w2["ejections"], 1, "{stats}");
    assert_eq!(worker(&stats, 1)["healthy"], true, "{stats}");

    // After 2 s it is back; still failing, it is ejected again, now for 2 × 2 s.
    assert!(
        eventually_async(Duration::from_secs(10), || healthy(&http, &base, 2)).await,
        "worker 2 readmitted after its first ejection"
    );
    // Ten requests in turn give worker 2 five: exactly enough to eject it again.
    let s = spread(&http, &url, 10, 1).await;
    assert!(
        s.failed <= THRESHOLD,
        "{} failed: {:?}",
        s.failed,
        s.failures
    );
    let ejected_twice = || async { worker(&lb_stats(&http, &base).await, 2)["ejections"] == 2 };
    assert!(
        eventually_async(Duration::from_secs(5), ejected_twice).await,
        "ejected a second time"
    );
    let stats = lb_stats(&http, &base).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let left = worker(&stats, 2)["ejectedUntil"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(now_ms);
    assert!(
        left > 3000 && left <= 4010,
        "the second ejection lasts 2 × 2 s; {left} ms left: {stats}"
    );

    // Fixed, it comes back after the ejection and takes its share again.
    set_fault(&http, &base, 2, json!({})).await;
    assert!(
        eventually_async(Duration::from_secs(10), || healthy(&http, &base, 2)).await,
        "worker 2 readmitted after its second ejection"
    );
    let s = spread(&http, &url, 20, 1).await;
    assert_eq!(s.failed, 0, "{:?}", s.failures);
    assert_eq!(s.of(2), 10, "round-robin again: {:?}", s.by_worker);
}
