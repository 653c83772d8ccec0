//! With `SESSION_STORE=redis://…` a session outlives the worker that made it. Each run starts its own
//! redis-server on a free port.

mod support;

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{BIN, Jar, RedisServer, poll};
use test_support::{ClusterProcess, Http};

#[tokio::test]
async fn session_data_survives_a_sigkill_of_its_worker() {
    let redis = RedisServer::start();
    let url = redis.url();
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "2"),
            ("SESSION_STORE", &url),
            ("RESTART_DELAY", "50"),
        ],
    );
    let http = Http::new();
    let mut jar = Jar::new(&http);
    jar.get(&cluster.url("/")).await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = jar
        .send("POST", &cluster.url("/data"), &form, "data=survives")
        .await
        .expect("POST /data");
    assert_eq!(r.status, 303, "{}", r.body);
    let before = jar.get(&cluster.url("/session")).await.json();
    let slot = before["workerId"].as_u64().expect("workerId");
    let pid = before["workerPid"].as_u64().expect("workerPid");
    assert_eq!(before["session"]["requestCount"], 3, "{before}");
    let cookie = jar.cookie.clone();

    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill the worker");

    // Whoever answers now (the other worker while the slot restarts, or the replacement) reads the
    // same session from Redis: same id, same data, and the count goes on.
    let after = jar.get(&cluster.url("/session")).await.json();
    assert_eq!(after["session"]["id"], before["session"]["id"], "{after}");
    assert_eq!(after["session"]["data"]["data"], "survives", "{after}");
    assert_eq!(after["session"]["requestCount"], 4, "{after}");
    assert_eq!(jar.cookie, cookie, "the cookie is kept");

    // Once the slot is back, its cookie routes to the new process, which finds the session too.
    let back = poll(Duration::from_secs(20), || async {
        http.ready_pids(&cluster.base())
            .await
            .iter()
            .any(|(s, p)| *s == slot && *p != pid)
    })
    .await;
    assert!(back, "slot {slot} was not replaced");
    let last = jar.get(&cluster.url("/session")).await.json();
    assert_eq!(last["workerId"], slot, "{last}");
    assert_ne!(last["workerPid"], pid, "{last}");
    assert_eq!(last["session"]["data"]["data"], "survives", "{last}");
    assert_eq!(last["session"]["requestCount"], 5, "{last}");

    let stats = jar.get(&cluster.url("/stats")).await.json();
    assert_eq!(stats["store"], "redis", "{stats}");
    assert!(
        stats["activeSessions"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
}

#[tokio::test]
async fn a_forged_cookie_is_not_adopted_with_redis_either() {
    let redis = RedisServer::start();
    let url = redis.url();
    let cluster = ClusterProcess::start(BIN, &[("WORKERS", "1"), ("SESSION_STORE", &url)]);
    let mut jar = Jar::new(&Http::new());
    jar.cookie = Some("1.0123456789abcdef0123456789abcdef".into());
    let j = jar.get(&cluster.url("/session")).await.json();
    assert_eq!(j["session"]["requestCount"], 1, "{j}");
    assert_ne!(
        jar.cookie.as_deref(),
        Some("1.0123456789abcdef0123456789abcdef")
    );
}
