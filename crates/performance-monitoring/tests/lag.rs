//! Runtime lag rises while a worker's runtime is blocked on purpose and falls after.

mod support;

use std::time::{Duration, Instant};

use support::{BIN, FAST, metrics, worker};
use test_support::{ClusterProcess, Http, eventually_async};

#[tokio::test]
async fn lag_rises_while_the_runtime_is_blocked_and_falls_after() {
    // Heartbeats every 500 ms carry the lag; a 600 ms block always covers one tick (lateness 100 to
    // 600 ms) and stays well inside the hang detector's three missed beats (1.5 s).
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "1"),
            FAST[0],
            FAST[1],
            ("HEALTH_CHECK_INTERVAL", "500"),
        ],
    );
    let http = Http::new();
    let base = cluster.base();
    let lag = |m: &serde_json::Value| {
        worker(m, 1)["metrics"]["eventLoopLag"]
            .as_f64()
            .unwrap_or(-1.0)
    };
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            (0.0..5.0).contains(&lag(&metrics(&http, &base).await))
        })
        .await,
        "an idle worker's lag is under 5 ms"
    );

    let r = http.get(&cluster.url("/block?ms=600")).await;
    assert_eq!(r.status, 200);
    // Polled by hand rather than with eventually_async, to keep the peak and check each report.
    let mut peak = 0.0f64;
    let mut seen_penalty = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    while peak < 90.0 && Instant::now() < deadline {
        let m = metrics(&http, &base).await;
        let l = lag(&m);
        peak = peak.max(l);
        if l > 100.0 {
            // Over the 100 ms threshold: the health score must say so in the same report.
            let w = worker(&m, 1);
            assert!(
                w["penalties"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == "lag")),
                "lag {l} ms but no lag penalty: {w}"
            );
            seen_penalty = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        peak >= 90.0,
        "lag never rose above 90 ms after a 600 ms block (peak {peak} ms)"
    );
    eprintln!("lag peak after a 600 ms block: {peak} ms (penalty seen: {seen_penalty})");
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            (0.0..5.0).contains(&lag(&metrics(&http, &base).await))
        })
        .await,
        "lag fell back under 5 ms once the block ended"
    );
    let m = metrics(&http, &base).await;
    assert_eq!(
        worker(&m, 1)["restarts"],
        0,
        "the block did not get the worker killed as hung"
    );
}
