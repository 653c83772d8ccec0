//! Outlier ejection beside the breakers: they guard against different failures. A worker that
//! fails on its own is ejected by the master (the others serve); a service that fails for
//! every worker opens its circuit, and no worker is ejected for it.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use support::{BIN, post, set_faults};
use test_support::{ClusterProcess, Http, eventually_async};

const WORKERS: usize = 3;

/// `outlierDetection.workers` from `/circuit-status`, by worker id.
async fn outliers(http: &Http, base: &str) -> Vec<(u64, Value)> {
    let s = http.get(&format!("{base}/circuit-status")).await.json();
    s["outlierDetection"]["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter_map(|w| Some((w["id"].as_u64()?, w.clone())))
                .collect()
        })
        .unwrap_or_default()
}

async fn ejected(http: &Http, base: &str) -> BTreeSet<u64> {
    outliers(http, base)
        .await
        .into_iter()
        .filter(|(_, w)| w["ejected"] == true)
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test]
async fn a_failing_worker_is_ejected_while_a_failing_service_only_opens_its_circuit() {
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "3"),
            ("BREAKER_SCOPE", "cluster"),
            ("OUTLIER_BASE_EJECTION_MS", "60000"),
        ],
    );
    let http = Http::new();
    let base = cluster.base();
    let all = eventually_async(Duration::from_secs(20), || async {
        http.ready_pids(&base).await.len() == WORKERS
    })
    .await;
    assert!(all, "{WORKERS} workers ready");

    // A failing downstream first: every worker answers 502, then 503 from the open circuit.
    set_faults(&http, &base, "payments", r#"{"down": true}"#).await;
    let url = format!("{base}/api/payments");
    let opened = eventually_async(Duration::from_secs(10), || async {
        let _ = http.send("GET", &url, &[], "").await;
        let s = http.get(&format!("{base}/circuit-status")).await.json();
        s["breakers"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["name"] == "payments").cloned())
            .is_some_and(|b| b["state"] == "OPEN")
    })
    .await;
    assert!(opened, "the payments circuit opened");
    for _ in 0..20 {
        let r = http.get(&url).await;
        assert_eq!(r.status, 503, "refused by the open circuit: {}", r.body);
    }
    assert_eq!(
        ejected(&http, &base).await,
        BTreeSet::new(),
        "no worker is ejected for its dependency's failures: {:?}",
        outliers(&http, &base).await
    );

    // Now one worker fails on its own: it panics on every request, so it gives no answer (the
    // edge resends each such GET to another worker, so clients still get their 200).
    let r = post(
        &http,
        &format!("{base}/faults/workers/2"),
        r#"{"failing": true}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let home = format!("{base}/");
    let out = eventually_async(Duration::from_secs(10), || async {
        let _ = http.send("GET", &home, &[], "").await;
        ejected(&http, &base).await == BTreeSet::from([2])
    })
    .await;
    assert!(out, "worker 2 ejected: {:?}", outliers(&http, &base).await);
    // With it out, `/` is served by the others, every time.
    let mut served_by = BTreeSet::new();
    for _ in 0..30 {
        let r = http.get(&home).await;
        assert_eq!(r.status, 200, "the healthy workers serve: {}", r.body);
        served_by.insert(r.json()["worker"].as_u64().unwrap_or(0));
    }
    assert_eq!(served_by, BTreeSet::from([1, 3]));
    // And the open circuit is still the payments service's business alone.
    let r = http.get(&url).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["circuit"], "payments");

    let r = post(&http, &format!("{base}/faults/workers/2"), "{}").await;
    assert_eq!(
        r.status, 400,
        "a body without `failing` is refused: {}",
        r.body
    );
    let r = post(
        &http,
        &format!("{base}/faults/workers/99"),
        r#"{"failing": true}"#,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    set_faults(&http, &base, "payments", "{}").await;
}
