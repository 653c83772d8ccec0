//! Checklist: a process manager. A worker that stops answering heartbeats is killed and
//! replaced (hang detection), and one that dies is restarted in its slot (the restart policy);
//! the cluster keeps serving throughout.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::BIN;
use test_support::{Http, SharedCluster, eventually_async};

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();

fn cluster() -> SharedCluster {
    // Heartbeats every 200 ms: three missed (600 ms) and the worker is hung.
    SharedCluster::get(
        &CLUSTER,
        BIN,
        &[
            ("WORKERS", "2"),
            ("HEALTH_CHECK_INTERVAL", "200"),
            ("RESTART_DELAY", "50"),
            ("ACCESS_LOG", "off"),
        ],
    )
}

/// The pid now serving `slot`, once it is Ready.
async fn pid_of(http: &Http, base: &str, slot: u64) -> Option<u64> {
    http.ready_pids(base)
        .await
        .into_iter()
        .find(|(s, _)| *s == slot)
        .map(|(_, p)| p)
}

async fn replaced(http: &Http, base: &str, slot: u64, old: u64) -> bool {
    eventually_async(Duration::from_secs(20), || async {
        pid_of(http, base, slot).await.is_some_and(|p| p != old)
    })
    .await
}

#[tokio::test]
async fn a_hung_worker_is_replaced_and_the_cluster_keeps_answering() {
    let c = cluster();
    let (http, base) = (Http::new(), c.url(""));
    let old = pid_of(&http, &base, 1).await.expect("slot 1 is ready");
    // SIGSTOP freezes it: no heartbeat, no answer, as a worker stuck in a loop.
    kill(Pid::from_raw(old as i32), Signal::SIGSTOP).expect("stop the worker");
    for _ in 0..5 {
        assert_eq!(
            http.get(&c.url("/")).await.status,
            200,
            "the other worker answers"
        );
    }
    assert!(
        replaced(&http, &base, 1, old).await,
        "slot 1 has a new process"
    );
    let _ = kill(Pid::from_raw(old as i32), Signal::SIGKILL);
}

#[tokio::test]
async fn a_killed_worker_is_restarted_in_its_slot() {
    let c = cluster();
    let (http, base) = (Http::new(), c.url(""));
    let old = pid_of(&http, &base, 2).await.expect("slot 2 is ready");
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill the worker");
    assert!(replaced(&http, &base, 2, old).await, "slot 2 was restarted");
    let health = http.health(&base).await;
    let restarts = health["workers"]["slots"]
        .as_array()
        .and_then(|s| s.iter().find(|w| w["id"] == 2))
        .map(|w| w["restarts"].as_u64().unwrap_or(0));
    assert_eq!(restarts, Some(1), "{health}");
}
