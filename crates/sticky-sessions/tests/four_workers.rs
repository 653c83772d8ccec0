//! Affinity with four workers: every one of 1,000 concurrent cookie jars keeps its session, whether
//! new sessions are placed by client IP or by least connections.

mod support;

use support::{BIN, assert_no_session_lost, run_jars};
use test_support::ClusterProcess;

#[tokio::test]
async fn a_thousand_cookie_jars_lose_no_session_with_four_workers() {
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "4"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
            ("STICKY_NEW", "ip"),
        ],
    );
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

#[tokio::test]
async fn three_hundred_fresh_jars_from_one_ip_spread_over_four_workers_by_default() {
    // The case: every client is 127.0.0.1 (no proxy trusted), so IP placement would put
    // them all on one worker. Least connections spreads them; each keeps its session.
    let cluster = ClusterProcess::start(BIN, &[("WORKERS", "4")]);
    let runs = run_jars(&cluster.base(), 300, 3, 16).await;
    let per_worker = assert_no_session_lost(&runs);
    assert_eq!(
        per_worker.len(),
        4,
        "every worker got new sessions: {per_worker:?}"
    );
    assert!(
        per_worker.values().all(|n| *n >= 50),
        "roughly even (a fair share is 75): {per_worker:?}"
    );
    let stats = test_support::Http::new()
        .get(&cluster.url("/sticky-stats"))
        .await
        .json();
    assert_eq!(stats["newSessions"], "balance", "{stats}");
    assert_eq!(
        (stats["balanceRouted"].as_u64(), stats["ipRouted"].as_u64()),
        (Some(300), Some(0)),
        "one balanced request per jar: {stats}"
    );
    assert_eq!(
        stats["cookieRouted"], 600,
        "every later request by cookie: {stats}"
    );
}

#[tokio::test]
async fn with_sticky_new_ip_fresh_jars_from_one_ip_all_stick_to_one_worker() {
    let cluster = ClusterProcess::start(BIN, &[("WORKERS", "4"), ("STICKY_NEW", "ip")]);
    let runs = run_jars(&cluster.base(), 40, 2, 8).await;
    let per_worker = assert_no_session_lost(&runs);
    assert_eq!(
        per_worker.len(),
        1,
        "one address, one worker: {per_worker:?}"
    );
    let stats = test_support::Http::new()
        .get(&cluster.url("/sticky-stats"))
        .await
        .json();
    assert_eq!(
        (stats["ipRouted"].as_u64(), stats["balanceRouted"].as_u64()),
        (Some(40), Some(0)),
        "{stats}"
    );
}

#[tokio::test]
async fn a_websocket_handed_to_a_worker_goes_to_its_sessions_worker() {
    // The master routes the handshake by the session cookie, then hands the connection itself to
    // that worker (its debug line names the slot), for sessions on several workers.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "4"),
            ("RUST_LOG", "info,common::edge::upgrade=debug"),
        ],
    );
    let http = test_support::Http::new();
    let mut workers = std::collections::BTreeSet::new();
    let handed_lines = |cluster: &ClusterProcess| {
        cluster
            .stderr()
            .lines()
            .filter(|l| l.contains("upgrade handed to its worker"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let mut logged = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let mut jar = support::Jar::new(&http);
        let s = jar.get(&cluster.url("/session")).await.json();
        let worker = s["workerId"].as_u64().expect("a worker id");
        workers.insert(worker);
        let cookie = jar.cookie.clone().expect("a session cookie");
        let before = http.get(&cluster.url("/sticky-stats")).await.json();
        let (mut ws, resp) = support::websocket_with_session(cluster.addr, &cookie).await;
        assert_eq!(
            resp.headers()["x-worker-id"].to_str().ok(),
            Some(worker.to_string().as_str())
        );
        ws.send(Message::text("hi")).await.expect("send");
        let reply = ws.next().await.expect("a reply").expect("a frame");
        let j: serde_json::Value =
            serde_json::from_str(reply.to_text().expect("text")).expect("json");
        assert_eq!(j["worker"], worker, "{j}");
        assert_eq!(j["session"], s["session"]["id"], "{j}");
        let _ = ws.close(None).await;
        let after = http.get(&cluster.url("/sticky-stats")).await.json();
        assert_eq!(
            after["cookieRouted"].as_u64(),
            before["cookieRouted"].as_u64().map(|n| n + 1),
            "the handshake was routed by its cookie: {before} -> {after}"
        );
        // The log is written in batches (`common::log_buffer`): wait for this handshake's line
        // (each names its handoff's id, so it is one not logged before).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let handed = loop {
            let new = handed_lines(&cluster)
                .into_iter()
                .find(|l| !logged.contains(l));
            match new {
                Some(line) => break line,
                None if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                None => panic!("no handoff logged:\n{}", cluster.stderr()),
            }
        };
        logged.insert(handed.clone());
        assert!(handed.contains(&format!("slot={worker} ")), "{handed}");
    }
    assert!(
        workers.len() > 1,
        "sessions on one worker only: {workers:?}"
    );
}
