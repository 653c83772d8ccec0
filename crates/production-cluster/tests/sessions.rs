//! Checklist: an external session store. With Redis, a session survives a SIGKILL of the worker
//! that made it, and `/health/ready` says 503 while Redis is unreachable.

mod support;

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::BIN;
use test_support::jar::Jar;
use test_support::redis::RedisServer;
use test_support::{ClusterProcess, Http, eventually_async};

#[tokio::test]
async fn sessions_survive_a_worker_sigkill_with_redis_and_readiness_follows_the_store() {
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
    let first = jar.get(&cluster.url("/session")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = jar
        .send("POST", &cluster.url("/data"), &form, "data=kept")
        .await
        .expect("POST /data");
    assert_eq!(r.status, 303, "{}", r.body);
    let before = jar.get(&cluster.url("/session")).await.json();
    let pid = before["workerPid"].as_u64().expect("workerPid");
    assert_eq!(before["session"]["requestCount"], 3, "{before}");

    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill the worker");

    let after = jar.get(&cluster.url("/session")).await.json();
    assert_eq!(after["session"]["id"], before["session"]["id"], "{after}");
    assert_eq!(after["session"]["data"]["data"], "kept", "{after}");
    assert_eq!(after["session"]["requestCount"], 4, "{after}");

    let ready = http.get(&cluster.url("/health/ready")).await;
    assert_eq!(
        ready.json()["sessionStore"]["kind"],
        "redis",
        "{}",
        ready.body
    );
    drop(redis);
    let ready_url = cluster.url("/health/ready");
    let unready = eventually_async(Duration::from_secs(5), || async {
        http.get(&ready_url).await.status == 503
    })
    .await;
    assert!(unready, "/health/ready says 503 once Redis is gone");
    let r = http.get(&ready_url).await.json();
    assert_eq!(r["sessionStore"]["reachable"], false, "{r}");
    assert_eq!(
        http.get(&cluster.url("/health/live")).await.status,
        200,
        "the master still lives"
    );
}
