//! The master's memory stays flat over 100,000 requests: no per-request growth in the monitor.

mod support;

use std::time::Instant;

use support::{BIN, FAST, metrics};
use test_support::{ClusterProcess, Http};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_hundred_thousand_requests_leave_the_masters_memory_bounded() {
    const WARM: usize = 10_000;
    const REQUESTS: usize = 100_000;
    let cluster = ClusterProcess::start(BIN, &[("WORKERS", "2"), FAST[0], FAST[1]]);
    let http = Http::new();
    let url = cluster.url("/");
    let send = |n: usize| test_support::send_many(&http, &url, n, 32);
    // Warm up first: each slot's window (about 1 MB of histograms) is allocated by its first request,
    // and connection pools fill; the comparison then measures growth per request, not the first fill.
    assert!(send(WARM).await.is_empty());
    let warm = rss_kib(cluster.pid());
    let began = Instant::now();
    let failures = send(REQUESTS).await;
    let took = began.elapsed();
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let after = rss_kib(cluster.pid());
    eprintln!(
        "master RSS after warm-up {warm} KiB, after {REQUESTS} more requests {after} KiB ({took:?})"
    );
    let m = metrics(&Http::new(), &cluster.base()).await;
    assert_eq!(
        m["cluster"]["totalRequests"],
        WARM + REQUESTS,
        "{}",
        m["cluster"]
    );
    // A per-request leak of even 100 bytes would be 10 MB here. Allow allocator noise.
    assert!(
        after.saturating_sub(warm) < 8 * 1024,
        "master RSS grew {} KiB over {REQUESTS} requests",
        after.saturating_sub(warm)
    );
}
