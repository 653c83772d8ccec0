//! The breaker's promises on a real cluster, with real services behind it: at most
//! `BREAKER_HALF_OPEN_CALLS` probes reach a recovering service per worker, an open circuit
//! refuses fast however slow the service is, and a healed service is closed again within one
//! wait plus its probes.
//!
//! One cluster for the file; each test drives a different circuit, so they can run at once.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use support::{
    all_in, calls_by_worker, circuit_on_workers, open_everywhere, post, quantile, set_faults,
    states,
};
use test_support::{Http, SharedCluster, eventually_async};

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();

const WORKERS: usize = 2;
const HALF_OPEN_CALLS: u64 = 3;

fn cluster() -> SharedCluster {
    SharedCluster::get(
        &CLUSTER,
        support::BIN,
        &[
            ("WORKERS", "2"),
            ("BREAKER_SCOPE", "worker"),
            // Short, so half-open comes quickly; each failed round doubles it.
            ("BREAKER_WAIT_IN_OPEN", "200"),
            ("BREAKER_HALF_OPEN_CALLS", "3"),
        ],
    )
}

#[tokio::test]
async fn half_open_lets_at_most_the_permitted_probes_reach_the_service_per_worker() {
    let http = Http::new();
    let base = cluster().url("");
    set_faults(&http, &base, "payments", r#"{"down": true}"#).await;
    open_everywhere(&http, &base, "payments", WORKERS).await;

    // Up again but slow, so the probes are still in flight while the other calls arrive.
    set_faults(&http, &base, "payments", r#"{"latencyMs": 2000}"#).await;
    let half_open = eventually_async(Duration::from_secs(10), || {
        all_in(&http, &base, "payments", WORKERS, &["HALF_OPEN"])
    })
    .await;
    assert!(
        half_open,
        "half-open on every worker once the wait is over: {:?}",
        states(&http, &base, "payments").await
    );
    let before = calls_by_worker(&http, &base, "payments").await;

    let url = format!("{base}/api/payments");
    let replies = join_all((0..50).map(|_| http.send("GET", &url, &[], ""))).await;
    let after = calls_by_worker(&http, &base, "payments").await;

    let mut ok = 0;
    let mut refused = 0;
    for r in &replies {
        match r {
            Ok(r) if r.status == 200 => ok += 1,
            Ok(r) if r.status == 503 => {
                assert_eq!(r.json()["error"], "circuit_open", "{}", r.body);
                refused += 1;
            }
            other => panic!("a probe or a refusal, not {other:?}"),
        }
    }
    let count =
        |v: &[(String, u64)], w: &str| v.iter().find(|(k, _)| k == w).map_or(0, |(_, n)| *n);
    let mut reached = 0;
    for w in 1..=WORKERS {
        let w = w.to_string();
        let n = count(&after, &w) - count(&before, &w);
        eprintln!("worker {w}: {n} of the 50 calls reached payments");
        assert!(
            n <= HALF_OPEN_CALLS,
            "worker {w} let {n} calls through while half-open (cap {HALF_OPEN_CALLS})"
        );
        reached += n;
    }
    eprintln!(
        "50 concurrent calls while half-open: {ok} answered, {refused} refused, {reached} reached the service"
    );
    assert!(reached >= 1, "probes did go through");
    assert_eq!(
        ok, reached,
        "every probe that reached the healed service succeeded"
    );
    assert_eq!(ok + refused, 50);
    set_faults(&http, &base, "payments", "{}").await;
}

#[tokio::test]
async fn an_open_circuit_refuses_fast_however_slow_the_service_is() {
    let http = Http::new();
    let base = cluster().url("");
    set_faults(&http, &base, "database", r#"{"latencyMs": 3000}"#).await;
    let r = post(&http, &format!("{base}/circuit/database/open"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(all_in(&http, &base, "database", WORKERS, &["FORCED_OPEN"]).await);
    let before = calls_by_worker(&http, &base, "database").await;

    // Measured here, at the client: the edge's hop and the worker's included.
    let url = format!("{base}/api/database");
    let mut took = Vec::new();
    for _ in 0..4 {
        let batch = join_all((0..50).map(|_| async {
            let started = Instant::now();
            let r = http.send("GET", &url, &[], "").await;
            (started.elapsed(), r)
        }))
        .await;
        for (elapsed, r) in batch {
            let r = r.unwrap_or_else(|e| panic!("GET /api/database: {e}"));
            assert_eq!(r.status, 503, "{}", r.body);
            assert!(!r.header("retry-after").is_empty(), "Retry-After is set");
            took.push(elapsed);
        }
    }
    took.sort();
    let (p50, p99, max) = (
        quantile(&took, 0.5),
        quantile(&took, 0.99),
        quantile(&took, 1.0),
    );
    eprintln!(
        "{} refused calls, 50 at a time, service at 3000 ms: p50 {p50:?}, p99 {p99:?}, max {max:?}",
        took.len()
    );
    // 50 at a time on two cores, the figure is mostly queueing in the test client and the
    // edge; what matters is that no refusal came anywhere near the service's 3 s.
    assert!(
        max < Duration::from_secs(1),
        "an open circuit answers without waiting on the service: max {max:?}"
    );
    // One at a time: the refusal's own cost, without 50 requests queueing on two cores. Each
    // refused call is paired with a `/ping` on the same client, edge and workers: the floor any
    // answer through the cluster pays (the test client, the edge's hop, the worker's loop).
    let ping = format!("{base}/ping");
    let (mut alone, mut floor, mut over) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..200 {
        let started = Instant::now();
        let r = http.get(&url).await;
        let refused = started.elapsed();
        alone.push(refused);
        assert_eq!(r.status, 503, "{}", r.body);
        let started = Instant::now();
        let r = http.get(&ping).await;
        let pinged = started.elapsed();
        floor.push(pinged);
        assert_eq!(r.status, 200, "{}", r.body);
        // Each pair ran back to back, so a loaded machine slows both alike: their difference
        // is the refusal's own cost, and the median of the differences ignores the pairs a
        // scheduler hiccup split.
        over.push(refused.as_secs_f64() - pinged.as_secs_f64());
    }
    alone.sort();
    floor.sort();
    over.sort_by(f64::total_cmp);
    let (p50, p99) = (quantile(&alone, 0.5), quantile(&alone, 0.99));
    let (f50, f99) = (quantile(&floor, 0.5), quantile(&floor, 0.99));
    let own = Duration::from_secs_f64(over[over.len() / 2].max(0.0));
    eprintln!(
        "200 refused calls one at a time: p50 {p50:?}, p99 {p99:?}; /ping on the same path: \
         p50 {f50:?}, p99 {f99:?}; the refusal's own cost at the median: {own:?}"
    );
    // The issue's figure, < 1 ms, for what the breaker and the route add: the median over the
    // floor (a p99 on two shared cores is the scheduler's, and /ping's own p99 swings the same).
    assert!(
        own < Duration::from_millis(1),
        "a refusal costs {own:?} over /ping at the median"
    );
    // End to end, a bound a loaded CI machine still meets (under 1 ms measured unloaded).
    assert!(
        p99 < Duration::from_millis(50),
        "an open circuit refuses fast: p99 {p99:?} one at a time"
    );
    assert_eq!(
        calls_by_worker(&http, &base, "database").await,
        before,
        "no call reached the service"
    );
    let r = post(&http, &format!("{base}/circuit/database/close"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    set_faults(&http, &base, "database", "{}").await;
}

#[tokio::test]
async fn a_healed_service_is_closed_again_within_one_wait_plus_the_probes() {
    let http = Http::new();
    let base = cluster().url("");
    set_faults(&http, &base, "external", r#"{"down": true}"#).await;
    open_everywhere(&http, &base, "external", WORKERS).await;

    set_faults(&http, &base, "external", "{}").await;
    let healed = Instant::now();
    // The wait still to run on each worker (it doubles after each failed round of probes).
    let wait = circuit_on_workers(&http, &base, "external")
        .await
        .iter()
        .map(|(_, b)| b["nextAttemptInMs"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let url = format!("{base}/api/external");
    let closed = eventually_async(Duration::from_secs(15), || async {
        for _ in 0..WORKERS * 2 {
            let _ = http.send("GET", &url, &[], "").await;
        }
        all_in(&http, &base, "external", WORKERS, &["CLOSED"]).await
    })
    .await;
    let took = healed.elapsed();
    assert!(
        closed,
        "closed again: {:?}",
        states(&http, &base, "external").await
    );
    eprintln!("healed → closed on every worker in {took:?} (wait left at heal: {wait} ms)");
    // One wait, then three instant probes per worker; a second of slack for a loaded machine.
    let bound = Duration::from_millis(wait) + Duration::from_secs(1);
    assert!(took < bound, "closed in {took:?}, more than {bound:?}");
    for (id, b) in circuit_on_workers(&http, &base, "external").await {
        let last = b["stats"]["stateChanges"]
            .as_array()
            .and_then(|c| c.last().cloned())
            .unwrap_or_default();
        assert_eq!(last["from"], "HALF_OPEN", "worker {id}: {b}");
        assert_eq!(last["to"], "CLOSED", "worker {id}: {b}");
    }
}
