//! Affinity with four workers: every one of 1,000 concurrent cookie jars keeps its session.

mod support;

use support::{BIN, assert_no_session_lost, run_jars};
use test_support::ClusterProcess;

#[tokio::test]
async fn a_thousand_cookie_jars_lose_no_session_with_four_workers() {
    let cluster = ClusterProcess::start(BIN, &[("WORKERS", "4"), ("TRUSTED_PROXIES", "127.0.0.1")]);
    let runs = run_jars(&cluster.base(), 1000, 3, 64).await;
    let per_worker = assert_no_session_lost(&runs);
    eprintln!("jars per worker: {per_worker:?}");
    assert_eq!(
        per_worker.len(),
        4,
        "clients spread over every worker: {per_worker:?}"
    );
    // A fair share is 250; the ring keeps each within ±15% on 10,000 keys, 1,000 IPs vary more.
    assert!(
        per_worker.values().all(|n| *n >= 150),
        "roughly even: {per_worker:?}"
    );
    let stats = test_support::Http::new()
        .get(&cluster.url("/sticky-stats"))
        .await
        .json();
    assert_eq!(stats["remapped"], 0, "no slot was missing: {stats}");
    assert_eq!(
        stats["ipRouted"], 1000,
        "one IP-routed request per jar: {stats}"
    );
    assert_eq!(
        stats["cookieRouted"], 2000,
        "every later request by cookie: {stats}"
    );
}
