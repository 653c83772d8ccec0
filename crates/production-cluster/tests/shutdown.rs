//! Checklist: graceful shutdown for a load balancer. From the moment SIGTERM arrives,
//! `/health/ready` says 503 while the master still serves (`SHUTDOWN_DELAY`); requests in flight
//! finish; the master exits 0, its log written out to the last line.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{BIN, send};
use test_support::{ClusterProcess, Http, eventually, eventually_async};

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

#[tokio::test]
async fn the_access_log_lines_of_the_last_requests_before_sigterm_are_written_out() {
    // Log lines are written in batches (`common`'s log buffer): the ones still gathering when
    // the master exits must be written out on the way, not lost with the process.
    let mut cluster = ClusterProcess::start(
        BIN,
        &[("WORKERS", "2"), ("ACCESS_LOG", "on"), ("RUST_LOG", "info")],
    );
    let http = Http::new();
    let ids: Vec<String> = (0..20).map(|i| format!("last-before-term-{i}")).collect();
    for id in &ids {
        let r = send(
            &http,
            "GET",
            &cluster.url("/ping"),
            &[("x-request-id", id)],
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{id}: {}", r.body);
    }
    // At once: no time for the buffer's timer, only the exit, to write the lines out.
    cluster.signal(Signal::SIGTERM);
    let status = cluster
        .wait_exit(Duration::from_secs(15))
        .expect("the master exited");
    assert_eq!(status.code(), Some(0), "{}", cluster.stderr());
    let missing = || {
        let log = cluster.stderr();
        ids.iter()
            .filter(|id| !log.contains(&format!("request_id=\"{id}\"")))
            .cloned()
            .collect::<Vec<_>>()
    };
    // The test's reader thread may still be reading the pipe the master wrote before it exited.
    let all = eventually(Duration::from_secs(5), || missing().is_empty());
    assert!(
        all,
        "access log lines missing after SIGTERM: {:?}\n{}",
        missing(),
        cluster.stderr()
    );
    let log = cluster.stderr();
    let last = log.find("request_id=\"last-before-term-19\"");
    let done = log.find("shutdown complete");
    assert!(
        matches!((last, done), (Some(l), Some(d)) if l < d),
        "the lines come in the order they were logged:\n{log}"
    );
}
