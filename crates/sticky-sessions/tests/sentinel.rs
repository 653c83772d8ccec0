//! `SESSION_STORE=redis+sentinel://…`: a Redis primary, a replica and three Sentinels on free
//! loopback ports; the primary is SIGKILLed under the cluster's feet.
//!
//! Proves: sessions written (and replicated) before the kill are all there after the failover;
//! every request answered meanwhile either found its own session or got a 503, never a fresh
//! empty one; and measures the window from the kill to the first request served again.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{BIN, Jar};
use test_support::services::redis::{RedisProcess, cli, info_field};
use test_support::{ClusterProcess, Http, eventually};

const NAME: &str = "rcp";
/// Sentinels call the primary down after this long without an answer.
const DOWN_AFTER_MS: u64 = 500;
const SESSIONS: usize = 20;

fn offset(port: u16, field: &str) -> Option<u64> {
    info_field(&cli(port, &["INFO", "replication"]), field)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_sigkill_of_the_primary() {
    let mut primary = RedisProcess::primary();
    let replica = RedisProcess::replica_of(primary.port);
    let linked = eventually(Duration::from_secs(10), || {
        info_field(
            &cli(replica.port, &["INFO", "replication"]),
            "master_link_status",
        )
        .as_deref()
            == Some("up")
    });
    assert!(linked, "the replica never synced");
    let sentinels: Vec<RedisProcess> = (0..3)
        .map(|_| RedisProcess::sentinel(primary.port, NAME, 2, DOWN_AFTER_MS))
        .collect();
    // Each Sentinel must know the replica (to promote it) and the other two (to reach a quorum).
    let aware = eventually(Duration::from_secs(20), || {
        sentinels.iter().all(|s| {
            let info = cli(s.port, &["INFO", "sentinel"]);
            info.contains("slaves=1") && info.contains("sentinels=3")
        })
    });
    assert!(
        aware,
        "sentinels did not discover each other and the replica"
    );

    let hosts: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let url = format!("redis+sentinel://{}/{NAME}", hosts.join(","));
    let cluster = ClusterProcess::start(BIN, &[("WORKERS", "2"), ("SESSION_STORE", &url)]);
    let http = Http::new();
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let mut jars = Vec::new();
    for i in 0..SESSIONS {
        let mut jar = Jar::new(&http);
        let r = jar
            .send(
                "POST",
                &cluster.url("/data"),
                &form,
                &format!("data=keep-{i}"),
            )
            .await
            .expect("POST /data");
        assert!(
            r.status == 303 || r.status == 200,
            "{}: {}",
            r.status,
            r.body
        );
        let j = jar.get(&cluster.url("/session")).await.json();
        assert_eq!(j["session"]["data"]["data"], format!("keep-{i}"), "{j}");
        // The JSON shows a shortened id; the cookie holds the whole one.
        let short = j["session"]["id"].as_str().unwrap().to_string();
        jars.push((jar, short));
    }
    // A writer that overwrites one session's data with 1, 2, 3 … until the kill: what the new
    // primary has afterwards shows which acknowledged writes the failover lost.
    let mut writer = Jar::new(&http);
    let r = writer
        .send("POST", &cluster.url("/data"), &form, "data=0")
        .await
        .expect("POST /data");
    assert!(r.status == 303 || r.status == 200, "{}", r.status);
    // Replication is asynchronous: wait until the replica has everything the primary has, so
    // the sessions are ones a failover must not lose.
    let written = offset(primary.port, "master_repl_offset").expect("primary offset");
    let caught_up = eventually(Duration::from_secs(10), || {
        offset(replica.port, "slave_repl_offset").is_some_and(|o| o >= written)
    });
    assert!(caught_up, "the replica did not catch up");

    // A probe: one session read over and over through the failover.
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let (mut jar, id) = (jars[0].0.clone(), jars[0].1.clone());
        let cookie = jar.cookie.clone();
        let url = cluster.url("/session");
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut unavailable, mut wrong) = (0u32, 0u32, Vec::new());
            let mut last_ok_gap = Duration::ZERO;
            let mut since_ok = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                // Never adopt a new cookie: a fresh session would hide a lost one.
                jar.cookie = cookie.clone();
                match jar.send("GET", &url, &[], "").await {
                    Ok(r) if r.status == 200 && r.json()["session"]["id"] == id.as_str() => {
                        ok += 1;
                        last_ok_gap = last_ok_gap.max(since_ok.elapsed());
                        since_ok = Instant::now();
                    }
                    Ok(r) if r.status == 503 => unavailable += 1,
                    Ok(r) => wrong.push(format!("{}: {}", r.status, r.body)),
                    Err(e) => wrong.push(e),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, unavailable, wrong, last_ok_gap)
        })
    };
    let killing = Arc::new(AtomicBool::new(false));
    let writes = {
        let (mut jar, url, killing) = (writer.clone(), cluster.url("/data"), killing.clone());
        tokio::spawn(async move {
            let form = [("content-type", "application/x-www-form-urlencoded")];
            let mut acked: Vec<(u64, Instant)> = Vec::new();
            let mut n = 0;
            while !killing.load(Ordering::Relaxed) {
                n += 1;
                let body = format!("data={n}");
                if let Ok(r) = jar.send("POST", &url, &form, &body).await
                    && r.status == 303
                {
                    acked.push((n, Instant::now()));
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    killing.store(true, Ordering::Relaxed);
    let killed = Instant::now();
    primary.kill();
    let promoted = eventually(Duration::from_secs(30), || {
        cli(
            sentinels[0].port,
            &["SENTINEL", "get-master-addr-by-name", NAME],
        )
        .lines()
        .nth(1)
        .is_some_and(|p| p.trim() == replica.port.to_string())
    });
    assert!(promoted, "no failover:\n{}", sentinels[0].log());
    let switched = killed.elapsed();
    // The first request served from the promoted replica.
    let mut jar = jars[1].0.clone();
    let mut served = None;
    while killed.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = jar.send("GET", &cluster.url("/session"), &[], "").await
            && r.status == 200
        {
            served = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let served = served.expect("requests served again after the failover");
    stop.store(true, Ordering::Relaxed);
    let (ok, unavailable, wrong, gap) = probe.await.unwrap();
    println!(
        "failover: sentinels switched {switched:?} after the kill, first request served \
         {served:?} after it; probe: {ok} ok, {unavailable} × 503, longest gap between answers {gap:?}"
    );
    assert!(
        wrong.is_empty(),
        "answers that were neither the session nor a 503: {wrong:?}"
    );

    let acked = writes.await.unwrap();
    let kept: u64 = writer.get(&cluster.url("/session")).await.json()["session"]["data"]["data"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("the writer's session survived");
    let lost: Vec<&(u64, Instant)> = acked.iter().filter(|(n, _)| *n > kept).collect();
    let window = match (acked.iter().find(|(n, _)| *n == kept), lost.last()) {
        (Some((_, kept_at)), Some((_, last_at))) => last_at.duration_since(*kept_at),
        _ => Duration::ZERO,
    };
    println!(
        "asynchronous replication: {} writes acknowledged before the kill, \
         the last one kept was #{kept}; {} acknowledged writes lost, spanning {window:?}",
        acked.len(),
        lost.len()
    );
    assert!(!acked.is_empty(), "the writer wrote");

    for (i, (jar, id)) in jars.iter_mut().enumerate() {
        let j = jar.get(&cluster.url("/session")).await.json();
        assert_eq!(j["session"]["id"], id.as_str(), "session {i} lost: {j}");
        assert_eq!(j["session"]["data"]["data"], format!("keep-{i}"), "{j}");
    }
    let role = cli(replica.port, &["ROLE"]);
    assert!(role.starts_with("master"), "{role}");
}
