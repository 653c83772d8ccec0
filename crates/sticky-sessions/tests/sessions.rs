//! Sticky sessions against one shared two-worker cluster with the in-memory store: cookies, affinity
//! under concurrency, forged ids, session data, stats and the WebSocket.

mod support;

use std::sync::OnceLock;

use futures_util::{SinkExt, StreamExt};
use support::{BIN, Jar, assert_no_session_lost, run_jars, set_session};
use test_support::{Http, SharedCluster};
use tokio_tungstenite::tungstenite::Message;

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();

fn cluster() -> SharedCluster {
    // 127.0.0.1 is trusted as a proxy so each test client can name its own IP in X-Forwarded-For,
    // and new sessions are placed by that IP (the default, least connections, is in four_workers).
    SharedCluster::get(
        &CLUSTER,
        BIN,
        &[
            ("WORKERS", "2"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
            ("STICKY_NEW", "ip"),
        ],
    )
}

#[tokio::test]
async fn a_first_request_gets_a_safe_session_cookie() {
    let mut jar = Jar::new(&Http::new());
    let r = jar.get(&cluster().url("/")).await;
    assert_eq!(r.status, 200);
    let set = r.header("set-cookie");
    let id = set_session(&r).unwrap_or_else(|| panic!("no session cookie in {set:?}"));
    let (slot, secret) = id.split_once('.').expect("id is <slot>.<secret>");
    assert_eq!(
        slot,
        r.header("x-worker-id"),
        "the id names the worker that minted it"
    );
    assert_eq!(secret.len(), 32, "128 random bits as hex: {id}");
    for attr in ["Path=/", "Max-Age=1800", "HttpOnly", "SameSite=Lax"] {
        assert!(set.contains(attr), "{attr} missing from {set:?}");
    }
    assert!(
        r.body.contains(&format!("Served by worker {slot}")),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_cookie_jar_keeps_its_worker_and_its_session() {
    let mut jar = Jar::new(&Http::new());
    let mut seen = Vec::new();
    for expected in 1..=5 {
        let j = jar.get(&cluster().url("/session")).await.json();
        assert_eq!(j["session"]["requestCount"], expected, "{j}");
        seen.push((j["workerId"].clone(), j["session"]["id"].clone()));
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "one worker, one session: {seen:?}"
    );
}

#[tokio::test]
async fn a_thousand_cookie_jars_lose_no_session_with_two_workers() {
    // 1,000 clients, each with its own IP and cookie jar, 3 requests each, 64 jars at a time.
    let runs = run_jars(&cluster().url(""), 1000, 3, 64).await;
    let per_worker = assert_no_session_lost(&runs);
    eprintln!("jars per worker: {per_worker:?}");
    assert_eq!(
        per_worker.len(),
        2,
        "clients spread over both workers: {per_worker:?}"
    );
    assert!(
        per_worker.values().all(|n| *n >= 350),
        "roughly even: {per_worker:?}"
    );
}

#[tokio::test]
async fn a_forged_or_unknown_cookie_is_never_adopted() {
    let http = Http::new();
    let forged = [
        "1.0123456789abcdef0123456789abcdef", // well formed, slot 1, never minted
        "2.0123456789abcdef0123456789abcdef", // well formed, slot 2, never minted
        "99.0123456789abcdef0123456789abcdef", // a slot that does not exist
        "admin",                              // not an id at all
        "1.0123456789ABCDEF0123456789ABCDEF", // wrong alphabet
    ];
    for id in forged {
        let mut jar = Jar::new(&http);
        jar.cookie = Some(id.to_string());
        let r = jar.get(&cluster().url("/session")).await;
        let minted = set_session(&r).expect("a new cookie is set");
        assert_ne!(minted, id, "forged id {id:?} was adopted");
        assert_eq!(
            r.json()["session"]["requestCount"],
            1,
            "{id:?} got a fresh session: {}",
            r.body
        );
        assert!(
            minted.starts_with(&format!("{}.", r.header("x-worker-id"))),
            "{minted} minted by its worker"
        );
        // The new session works from then on.
        assert_eq!(
            jar.get(&cluster().url("/session")).await.json()["session"]["requestCount"],
            2
        );
    }
}

#[tokio::test]
async fn posted_data_stays_in_the_session() {
    let mut jar = Jar::new(&Http::new());
    jar.get(&cluster().url("/")).await;
    let r = jar
        .send(
            "POST",
            &cluster().url("/data"),
            &[("content-type", "application/x-www-form-urlencoded")],
            "data=hello+%3Cworld%3E",
        )
        .await
        .expect("POST /data");
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), "/data");
    let j = jar.get(&cluster().url("/session")).await.json();
    assert_eq!(j["session"]["data"]["data"], "hello <world>", "{j}");
    let page = jar.get(&cluster().url("/data")).await;
    assert!(
        page.body.contains("hello &lt;world&gt;"),
        "escaped in HTML: {}",
        page.body
    );

    let big = format!("data={}", "x".repeat(5000));
    let r = jar
        .send(
            "POST",
            &cluster().url("/data"),
            &[("content-type", "application/x-www-form-urlencoded")],
            &big,
        )
        .await
        .expect("POST /data");
    assert_eq!(r.status, 413, "{}", r.body);
}

#[tokio::test]
async fn stats_describe_the_worker_and_its_sessions() {
    let mut jar = Jar::new(&Http::new());
    let first = jar.get(&cluster().url("/session")).await.json();
    let stats = jar.get(&cluster().url("/stats")).await.json();
    assert_eq!(stats["workerId"], first["workerId"], "{stats}");
    assert_eq!(stats["store"], "memory");
    assert!(
        stats["activeSessions"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
    assert!(stats["memory"]["rss"].as_u64().unwrap_or(0) > 0, "{stats}");
    let listed = stats["sessions"].as_array().expect("sessions");
    assert!(listed.len() <= 20, "the list is capped");
    // Ids in stats are shortened: the secret part never leaves the cookie.
    assert!(
        listed.iter().all(|s| s["id"]
            .as_str()
            .is_some_and(|id| id.ends_with('…') && id.len() < 20)),
        "{stats}"
    );
}

#[tokio::test]
async fn sticky_stats_count_cookie_and_ip_routing() {
    let http = Http::new();
    let before = http.get(&cluster().url("/sticky-stats")).await.json();
    let mut jar = Jar::new(&http);
    jar.get(&cluster().url("/")).await; // no cookie: placed by IP
    jar.get(&cluster().url("/")).await; // cookie
    let after = http.get(&cluster().url("/sticky-stats")).await.json();
    assert_eq!(after["strategy"], "sticky");
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    assert!(
        n(&after, "ipRouted") > n(&before, "ipRouted"),
        "{before} -> {after}"
    );
    assert!(
        n(&after, "cookieRouted") > n(&before, "cookieRouted"),
        "{before} -> {after}"
    );
    let workers = after["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2, "{after}");
    assert!(
        workers.iter().all(|w| w["sessions"].is_u64()),
        "each worker reports its sessions: {after}"
    );
}

#[tokio::test]
async fn the_websocket_stays_on_its_sessions_worker() {
    let mut jar = Jar::new(&Http::new());
    let s = jar.get(&cluster().url("/session")).await.json();
    let cookie = jar.cookie.clone().expect("cookie");
    for _ in 0..3 {
        let (mut ws, resp) = support::websocket_with_session(cluster().addr, &cookie).await;
        assert_eq!(
            resp.headers()["x-worker-id"].to_str().ok(),
            Some(s["workerId"].to_string().as_str())
        );
        for text in ["hello", "again"] {
            ws.send(Message::text(text)).await.expect("send");
            let reply = ws.next().await.expect("a reply").expect("a frame");
            let j: serde_json::Value =
                serde_json::from_str(reply.to_text().expect("text")).expect("json");
            assert_eq!(j["echo"], text);
            assert_eq!(j["worker"], s["workerId"], "{j}");
            assert_eq!(j["session"], s["session"]["id"], "{j}");
        }
        let _ = ws.close(None).await;
    }
}

#[tokio::test]
async fn unknown_paths_are_404_and_mint_no_session() {
    let r = Http::new().get(&cluster().url("/nope")).await;
    assert_eq!(r.status, 404);
    assert_eq!(set_session(&r), None);
    assert_eq!(r.json()["error"], "not_found");
}
