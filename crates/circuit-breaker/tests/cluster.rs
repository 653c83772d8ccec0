//! Cluster scope (the default): the master's breakers own the state and every worker obeys
//! them. Half-open probes are one budget for the whole cluster; an operator's open, close or
//! reset applies on every worker before the route answers.
//!
//! One cluster for the file; each test drives a different circuit, and they take turns, since
//! `/circuit-reset` resets them all.

mod support;

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use support::{calls_by_worker, post, set_faults};
use test_support::{Http, SharedCluster, eventually_async};

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();
/// Held by each test: a reset in one must not close another's circuit mid-test.
static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WORKERS: usize = 3;
const HALF_OPEN_CALLS: u64 = 3;

fn cluster() -> SharedCluster {
    SharedCluster::get(
        &CLUSTER,
        support::BIN,
        &[
            ("WORKERS", "3"),
            ("BREAKER_SCOPE", "cluster"),
            ("BREAKER_WAIT_IN_OPEN", "300"),
            ("BREAKER_HALF_OPEN_CALLS", "3"),
        ],
    )
}

async fn ready(http: &Http, base: &str) {
    let all = eventually_async(Duration::from_secs(20), || async {
        http.ready_pids(base).await.len() == WORKERS
    })
    .await;
    assert!(all, "{WORKERS} workers ready");
}

/// The cluster breaker of circuit `name`, from `/circuit-status`.
async fn cluster_breaker(http: &Http, base: &str, name: &str) -> Value {
    let r = http.get(&format!("{base}/circuit-status")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = r.json();
    assert_eq!(s["scope"], "cluster", "{s}");
    s["breakers"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no breaker {name} in {s}"))
}

async fn state(http: &Http, base: &str, name: &str) -> String {
    cluster_breaker(http, base, name).await["state"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

fn total(calls: &[(String, u64)]) -> u64 {
    calls.iter().map(|(_, n)| n).sum()
}

/// `n` calls of `url` one at a time: the workers that answered each status.
async fn one_at_a_time(http: &Http, url: &str, n: usize) -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = http
            .send("GET", url, &[], "")
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let worker = r.json()["worker"].as_u64().unwrap_or(0);
        out.push((r.status, worker));
    }
    out
}

#[tokio::test]
async fn half_open_probes_are_one_budget_for_the_whole_cluster() {
    let _turn = TURNS.lock().await;
    let http = Http::new();
    let base = cluster().url("");
    ready(&http, &base).await;
    set_faults(&http, &base, "payments", r#"{"down": true}"#).await;
    let url = format!("{base}/api/payments");
    let opened = eventually_async(Duration::from_secs(10), || async {
        let _ = http.send("GET", &url, &[], "").await;
        state(&http, &base, "payments").await == "OPEN"
    })
    .await;
    assert!(
        opened,
        "payments opened: {}",
        cluster_breaker(&http, &base, "payments").await
    );

    // Up again but slow, so the probes are still in flight while the other calls arrive.
    set_faults(&http, &base, "payments", r#"{"latencyMs": 2000}"#).await;
    let half_open = eventually_async(Duration::from_secs(10), || async {
        state(&http, &base, "payments").await == "HALF_OPEN"
    })
    .await;
    assert!(
        half_open,
        "the master moves to half-open once the wait is over"
    );
    let before = calls_by_worker(&http, &base, "payments").await;
    let replies = join_all((0..50).map(|_| http.send("GET", &url, &[], ""))).await;
    let after = calls_by_worker(&http, &base, "payments").await;
    let (mut ok, mut refused) = (0, 0);
    let mut answered_by = BTreeSet::new();
    for r in &replies {
        match r {
            Ok(r) if r.status == 200 => ok += 1,
            Ok(r) if r.status == 503 => {
                assert_eq!(r.json()["error"], "circuit_open", "{}", r.body);
                refused += 1;
            }
            other => panic!("a probe or a refusal, not {other:?}"),
        }
        if let Ok(r) = r {
            answered_by.insert(r.json()["worker"].as_u64().unwrap_or(0));
        }
    }
    let reached = total(&after) - total(&before);
    eprintln!(
        "50 concurrent calls on {} workers while half-open: {ok} answered, {refused} refused, \
         {reached} reached the service",
        answered_by.len()
    );
    assert!(answered_by.len() > 1, "the calls were spread over workers");
    assert!(
        (1..=HALF_OPEN_CALLS).contains(&reached),
        "{reached} probes reached the service; the cluster's budget is {HALF_OPEN_CALLS} in all \
         (each worker alone would allow {HALF_OPEN_CALLS})"
    );
    assert_eq!(
        ok, reached,
        "every probe that reached the healed service succeeded"
    );
    // The probes succeeded: closed for everyone.
    let closed = eventually_async(Duration::from_secs(5), || async {
        state(&http, &base, "payments").await == "CLOSED"
    })
    .await;
    assert!(
        closed,
        "{}",
        cluster_breaker(&http, &base, "payments").await
    );
    set_faults(&http, &base, "payments", "{}").await;
}

#[tokio::test]
async fn a_forced_open_and_a_reset_apply_on_every_worker_before_the_route_answers() {
    let _turn = TURNS.lock().await;
    let http = Http::new();
    let base = cluster().url("");
    ready(&http, &base).await;
    set_faults(&http, &base, "database", "{}").await;
    let url = format!("{base}/api/database");

    let r = post(&http, &format!("{base}/circuit/database/open"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["breaker"]["state"], "FORCED_OPEN", "{}", r.body);
    assert_eq!(
        r.json()["appliedOn"],
        serde_json::json!([1, 2, 3]),
        "{}",
        r.body
    );
    let before = calls_by_worker(&http, &base, "database").await;
    // At once: the very next calls, on every worker, are refused.
    let answers = one_at_a_time(&http, &url, 3 * WORKERS).await;
    let workers: BTreeSet<u64> = answers.iter().map(|(_, w)| *w).collect();
    assert_eq!(workers.len(), WORKERS, "every worker answered: {answers:?}");
    assert!(
        answers.iter().all(|(status, _)| *status == 503),
        "refused everywhere right after the open: {answers:?}"
    );
    assert_eq!(
        total(&calls_by_worker(&http, &base, "database").await),
        total(&before),
        "no call reached the service"
    );

    let get = http.get(&format!("{base}/circuit-reset")).await;
    assert_eq!(get.status, 405, "a GET must not reset: {}", get.body);
    let r = post(&http, &format!("{base}/circuit-reset"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["appliedOn"],
        serde_json::json!([1, 2, 3]),
        "{}",
        r.body
    );
    let changed = r.json()["changed"].clone();
    assert!(
        changed
            .as_array()
            .is_some_and(|c| c.contains(&Value::from("database"))),
        "the reset names the circuit it closed: {changed}"
    );
    assert!(
        !changed
            .as_array()
            .is_some_and(|c| c.contains(&Value::from("external"))),
        "and not the ones that were closed already: {changed}"
    );
    let answers = one_at_a_time(&http, &url, 3 * WORKERS).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "served everywhere right after the reset: {answers:?}"
    );
}
