//! The other strategies, each run through its route under load: blue-green (the idle colour
//! started and every worker's `/health` checked before one atomic switch; an instant switch back;
//! the old colour stopped after `BLUE_GREEN_KEEP_SECONDS`), rolling (per pool, with a pause,
//! 0 failed requests), and a canary started after a switch, in the warm old colour.

mod support;

use std::time::Duration;

use support::{BIN, CANARY, STABLE, UserLoad, post_ok, users};
use test_support::{Http, SharedCluster, eventually_async};

static CLUSTER: std::sync::OnceLock<SharedCluster> = std::sync::OnceLock::new();
const ENV: &[(&str, &str)] = &[
    ("WORKERS", "2"),
    ("CANARY_WORKERS", "1"),
    ("BLUE_GREEN_KEEP_SECONDS", "2"),
    ("ROLLING_PAUSE_MS", "200"),
    ("CANARY_SALT", "strategies-test-salt"),
];

/// The versions 300 fresh users see now.
async fn versions_now(http: &Http, base: &str, prefix: &str) -> Vec<String> {
    let (versions, failures) = users(http, base, prefix, 300).await;
    assert!(failures.is_empty(), "{failures:?}");
    versions.into_keys().collect()
}

/// Ready slots of `pool`, from `/health`.
async fn pool_size(http: &Http, base: &str, pool: u64) -> usize {
    let h = http.health(base).await;
    h["workers"]["slots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["pool"].as_u64().unwrap_or(0) == pool && s["state"] == "ready")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_and_switches_back_under_load_with_no_failed_request() {
    let cluster = SharedCluster::get(&CLUSTER, BIN, ENV);
    let base = format!("http://{}", cluster.addr);
    let http = Http::new();
    assert_eq!(versions_now(&http, &base, "bg0").await, [STABLE]);

    let load = UserLoad::start(&base, 8, 500);
    let switched = post_ok(&http, &base, "/deploy/blue-green", "").await;
    assert_eq!(switched["live"], "green", "{switched:#}");
    assert_eq!(switched["liveVersion"], CANARY, "{switched:#}");
    // Green was sized like blue before it took traffic.
    assert_eq!(pool_size(&http, &base, 1).await, 2);
    assert_eq!(versions_now(&http, &base, "bg1").await, [CANARY]);
    // Blue is still warm: the switch back is instant.
    let back = post_ok(&http, &base, "/deploy/switch-back", "").await;
    assert_eq!(back["live"], "blue", "{back:#}");
    assert!(back["seconds"].as_f64().unwrap_or(1.0) < 0.1, "{back:#}");
    assert_eq!(versions_now(&http, &base, "bg2").await, [STABLE]);
    let report = load.finish().await;
    println!(
        "blue-green: served {:?}, failed {:?}, transport errors {}; switch took {}s",
        report.ok, report.failed, report.errors, switched["seconds"]
    );
    assert_eq!(report.all_failed(), 0, "{:?}", report.samples);
    assert!(
        report.served_by(CANARY) > 0 && report.served_by(STABLE) > 0,
        "{report:?}"
    );

    // The colour switched away from stops after BLUE_GREEN_KEEP_SECONDS.
    let stopped = eventually_async(Duration::from_secs(15), || async {
        pool_size(&http, &base, 1).await == 0
    })
    .await;
    assert!(
        stopped,
        "green still running: {:#}",
        http.health(&base).await
    );
    // With green gone there is nothing to switch back to.
    let r = support::post(&http, &format!("{base}/deploy/switch-back"), "").await;
    assert_eq!(r.status, 409, "{}", r.body);

    // Rolling, per pool: only the stable pool's workers are replaced, with no failed request.
    let before = http.ready_pids(&base).await;
    let load = UserLoad::start(&base, 8, 500);
    let rolled = post_ok(&http, &base, "/deploy/rolling", r#"{"pool": "stable"}"#).await;
    let report = load.finish().await;
    println!(
        "rolling: {rolled}; served {:?}, failed {:?}, transport errors {}",
        report.ok, report.failed, report.errors
    );
    assert_eq!(rolled["replaced"], 2, "{rolled:#}");
    assert_eq!(report.all_failed(), 0, "{:?}", report.samples);
    let after = http.ready_pids(&base).await;
    assert_eq!(after.len(), before.len(), "{before:?} → {after:?}");
    for (slot, pid) in &before {
        assert!(
            !after.contains(&(*slot, *pid)),
            "slot {slot} kept pid {pid}"
        );
    }

    // A canary after a switch: green is stable now, and blue, still warm with v1.0.0, becomes
    // the canary pool. It must be restarted with the canary's version, and the keep-warm timer of
    // the switch must not stop it.
    post_ok(&http, &base, "/deploy/blue-green", "").await;
    let r = post_ok(&http, &base, "/canary/increase", "").await;
    assert_eq!(r["canaryPercentage"], 10);
    let s = support::status(&http, &base).await;
    assert_eq!(
        (s["pools"]["stable"].as_u64(), s["pools"]["canary"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        versions_now(&http, &base, "bgc").await,
        [CANARY],
        "no user is left on v1.0.0"
    );
    // Past BLUE_GREEN_KEEP_SECONDS (2 s) of the switch, the canary still runs.
    let (waited, s) = support::wait_status(&http, &base, Duration::from_secs(10), |s| {
        s["deployment"]["step"]["elapsedSeconds"]
            .as_f64()
            .unwrap_or(0.0)
            >= 3.0
    })
    .await;
    assert!(waited, "{s:#}");
    assert_eq!(s["deployment"]["canaryWorkers"], 1, "{s:#}");
    post_ok(&http, &base, "/canary/rollback", "").await;
}
