//! A flood of cookie-less requests (each one a new session) cannot grow a worker without bound.

mod support;

use support::BIN;
use test_support::{ClusterProcess, Http};

#[tokio::test]
async fn a_hundred_thousand_cookieless_requests_leave_memory_bounded() {
    const MAX: u64 = 1000;
    const REQUESTS: u64 = 100_000;
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "1"),
            ("SESSION_MAX", "1000"),
            ("RUST_LOG", "warn"),
        ],
    );
    let http = Http::new();
    let url = cluster.url("/session");
    let rss = |s: &serde_json::Value| s["memory"]["rss"].as_u64().unwrap_or(0);

    // Warm up past the cap first, so the comparison measures growth beyond it, not the first fill.
    let send = |n: u64| test_support::send_many(&http, &url, n as usize, 32);
    assert!(send(5 * MAX).await.is_empty());
    let warm = http.get(&cluster.url("/stats")).await.json();

    let failures = send(REQUESTS).await;
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );

    // /stats mints one session of its own, which evicts one more.
    let stats = http.get(&cluster.url("/stats")).await.json();
    eprintln!(
        "rss after warm-up {} KiB, after {REQUESTS} requests {} KiB",
        rss(&warm) / 1024,
        rss(&stats) / 1024
    );
    assert_eq!(stats["activeSessions"], MAX, "{stats}");
    assert!(
        stats["evicted"].as_u64().unwrap_or(0) >= REQUESTS + 4 * MAX,
        "{stats}"
    );
    // A session is a few hundred bytes: 100,000 kept would be tens of MiB. Allow allocator noise.
    let grew = rss(&stats).saturating_sub(rss(&warm));
    assert!(
        grew < 8 << 20,
        "RSS grew by {} KiB past the cap",
        grew / 1024
    );
}
