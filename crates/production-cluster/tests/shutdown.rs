//! Checklist: graceful shutdown for a load balancer. From the moment SIGTERM arrives,
//! `/health/ready` says 503 while the master still serves (`SHUTDOWN_DELAY`); requests in flight
//! finish; the master exits 0.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::BIN;
use test_support::{ClusterProcess, Http, eventually_async};

#[tokio::test]
async fn readiness_turns_503_at_sigterm_while_in_flight_requests_finish_and_the_exit_is_0() {
    let mut cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "2"),
            ("SHUTDOWN_DELAY", "1500"),
            ("SHUTDOWN_TIMEOUT", "10000"),
        ],
    );
    let http = Http::new();
    assert_eq!(http.get(&cluster.url("/health/ready")).await.status, 200);
    let slow_url = cluster.url("/slow?ms=3000");
    let slow = tokio::spawn({
        let http = http.clone();
        async move { http.get(&slow_url).await }
    });
    // In flight once a worker counts it.
    let health = cluster.base();
    let in_flight = eventually_async(Duration::from_secs(5), || async {
        let h = http.health(&health).await;
        h["workers"]["slots"]
            .as_array()
            .is_some_and(|s| s.iter().any(|w| w["inFlight"].as_u64().unwrap_or(0) > 0))
    })
    .await;
    assert!(in_flight, "the slow request is in flight");

    let sent = Instant::now();
    cluster.signal(Signal::SIGTERM);
    let ready_url = cluster.url("/health/ready");
    let mut seen = None;
    while sent.elapsed() < Duration::from_millis(1500) {
        let r = http.get(&ready_url).await;
        if r.status == 503 {
            seen = Some((sent.elapsed(), r));
            break;
        }
    }
    let (after, r) = seen.expect("/health/ready said 503 within the shutdown delay");
    assert_eq!(r.json()["status"], "draining", "{}", r.body);
    assert!(after < Duration::from_millis(1500), "503 after {after:?}");

    let slow = slow.await.expect("the slow request's task");
    assert_eq!(
        slow.status, 200,
        "the in-flight request finished: {}",
        slow.body
    );
    assert_eq!(slow.json()["sleptMs"], 3000);
    let status = cluster
        .wait_exit(Duration::from_secs(15))
        .expect("the master exited");
    assert_eq!(
        status.code(),
        Some(0),
        "a clean shutdown exits 0: {}",
        cluster.stderr()
    );
}
