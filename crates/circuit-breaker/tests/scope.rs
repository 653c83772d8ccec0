//! Cluster scope against worker scope, counted at the service: with four workers and the
//! external API down, how many calls reach it before every worker refuses?
//!
//! - cluster scope: the master's one breaker opens after one window's minimum calls in total,
//!   whichever workers made them, and every worker obeys it; only the calls let through while
//!   the last outcomes were on their way to the master (the batching delay) come on top;
//! - worker scope: each worker must see the minimum itself, so four times as many.
//!
//! Each test runs its own cluster (the counts must start from a closed breaker), with a wait in
//! open far longer than the test, so no probe adds to the count.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{BIN, set_faults};
use test_support::{ClusterProcess, Http, eventually_async};

const WORKERS: usize = 4;
/// The window's minimum calls, and the consecutive failures that trip it (5 by default): both
/// rules agree, so the trip comes after exactly this many failures a breaker sees.
const MIN_CALLS: u64 = 5;

fn start(scope: &str) -> ClusterProcess {
    ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "4"),
            ("BREAKER_SCOPE", scope),
            ("BREAKER_MIN_CALLS", "5"),
            ("BREAKER_WAIT_IN_OPEN", "600000"),
        ],
    )
}

/// The calls that reached the external API.
async fn calls(http: &Http, base: &str) -> u64 {
    let r = http.get(&format!("{base}/faults/external")).await.json();
    r["calls"].as_u64().expect("calls is a number")
}

/// Takes the external API down, then calls `/api/external` one request at a time until every
/// worker has refused at least once (a 503 naming the circuit); the calls that reached the
/// service meanwhile.
async fn calls_until_every_worker_refuses(cluster: &ClusterProcess) -> u64 {
    let http = Http::new();
    let base = cluster.base();
    let all_ready = eventually_async(Duration::from_secs(20), || async {
        http.ready_pids(&base).await.len() == WORKERS
    })
    .await;
    assert!(all_ready, "{WORKERS} workers ready");
    set_faults(&http, &base, "external", r#"{"down": true}"#).await;
    let before = calls(&http, &base).await;
    let url = format!("{base}/api/external");
    let mut refused_by = BTreeSet::new();
    // Bounded: far more than worker scope needs (4 × 5 plus the refusals that prove it).
    for _ in 0..400 {
        let r = http
            .send("GET", &url, &[], "")
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        if r.status == 503 {
            let body = r.json();
            assert_eq!(body["circuit"], "external", "{}", r.body);
            assert!(
                !r.header("retry-after").is_empty(),
                "a refusal has Retry-After"
            );
            refused_by.insert(body["worker"].as_u64().expect("worker id"));
            if refused_by.len() == WORKERS {
                return calls(&http, &base).await - before;
            }
        } else {
            assert_eq!(r.status, 502, "the down service's failure: {}", r.body);
        }
    }
    panic!("not every worker refused after 400 calls: {refused_by:?}");
}

#[tokio::test]
async fn in_cluster_scope_about_one_windows_minimum_calls_reach_a_dead_service_in_total() {
    let cluster = start("cluster");
    let reached = calls_until_every_worker_refuses(&cluster).await;
    println!("cluster scope: {reached} calls reached the service before every worker refused");
    // The minimum, plus what was let through while the last outcomes were batched and sent
    // (a few ms of one-at-a-time calls); worker scope's 4 × 5 = 20 is well outside.
    assert!(
        (MIN_CALLS..=MIN_CALLS + 6).contains(&reached),
        "cluster scope: {reached} calls reached the service, expected {MIN_CALLS} to {}",
        MIN_CALLS + 6
    );
}

#[tokio::test]
async fn in_worker_scope_each_worker_needs_its_own_minimum_calls_four_times_as_many() {
    let cluster = start("worker");
    let reached = calls_until_every_worker_refuses(&cluster).await;
    println!("worker scope: {reached} calls reached the service before every worker refused");
    let each = WORKERS as u64 * MIN_CALLS;
    assert!(
        (each..=each + 2).contains(&reached),
        "worker scope: {reached} calls reached the service, expected {each} to {}",
        each + 2
    );
}
