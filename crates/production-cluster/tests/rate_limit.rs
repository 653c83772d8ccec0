//! Checklist: rate limiting. The limit is enforced in the master, so it holds for the whole
//! cluster: with 4 workers and `100/min`, one client's 101st request in the minute is 429
//! whichever worker would have served it. Probes are never limited, and `X-Forwarded-For` from
//! an untrusted peer buys no fresh budget.

mod support;

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Instant;

use support::BIN;
use test_support::{Http, SharedCluster};

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();

fn cluster() -> SharedCluster {
    SharedCluster::get(
        &CLUSTER,
        BIN,
        &[
            ("WORKERS", "4"),
            ("RATE_LIMIT", "100/min"),
            ("ACCESS_LOG", "off"),
        ],
    )
}

#[tokio::test]
async fn the_101st_request_in_a_minute_is_429_across_all_four_workers() {
    let c = cluster();
    // New sessions go by least connections, so without a cookie the requests spread.
    let http = Http::new();
    let started = Instant::now();
    let mut workers = BTreeSet::new();
    let mut allowed = 0u32;
    let mut first_limited = None;
    for i in 0..130 {
        let r = http.get(&c.url("/")).await;
        match r.status {
            200 => {
                allowed += 1;
                workers.insert(r.header("x-worker-id").to_string());
                assert_eq!(r.header("ratelimit-limit"), "100");
            }
            429 => {
                first_limited.get_or_insert((i, r));
            }
            other => panic!("request {i}: status {other}: {}", r.body),
        }
    }
    let elapsed = started.elapsed();
    // GCRA gives one request back every 600 ms (60 s / 100): a slow machine may earn a few.
    let earned = (elapsed.as_millis() / 600) as u32;
    assert!(
        (100..=100 + earned).contains(&allowed),
        "{allowed} allowed in {elapsed:?} (100 + {earned} earned at most)"
    );
    let (index, limited) = first_limited.expect("some request was limited");
    assert!(index >= 100, "the first 429 came at request {index}");
    assert!(
        workers.len() >= 2,
        "the allowed requests reached several workers: {workers:?}"
    );
    let retry: u64 = limited
        .header("retry-after")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(limited.header("ratelimit-remaining"), "0");
    assert!(!limited.header("ratelimit-reset").is_empty());
    assert!(
        limited.header("x-worker-id").is_empty(),
        "no worker was asked"
    );
    assert_eq!(limited.json()["error"], "rate_limited");

    // An untrusted peer naming another client in X-Forwarded-For is still the same client.
    let r = http
        .send(
            "GET",
            &c.url("/"),
            &[("x-forwarded-for", "203.0.113.7")],
            "",
        )
        .await
        .expect("GET /");
    assert_eq!(
        r.status, 429,
        "X-Forwarded-For is not believed from an untrusted peer"
    );

    // Probes and scrapes still get through.
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/metrics/prometheus",
    ] {
        let r = http.get(&c.url(path)).await;
        assert_eq!(r.status, 200, "{path} is never limited: {}", r.body);
    }
}
