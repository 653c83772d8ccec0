//! What happens to sessions when workers die or slots go away (in-memory store).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{BIN, Jar, set_session};
use test_support::{ClusterProcess, Http};

/// Waits until `/health` shows `slot` ready with a pid other than `old`; returns the new pid.
async fn wait_replaced(http: &Http, base: &str, slot: u64, old: u64) -> u64 {
    let find = || async {
        http.ready_pids(base)
            .await
            .into_iter()
            .find(|(s, p)| *s == slot && *p != old)
            .map(|(_, p)| p)
    };
    let replaced =
        support::poll(Duration::from_secs(20), || async { find().await.is_some() }).await;
    assert!(replaced, "slot {slot} was not replaced");
    find().await.unwrap_or_default()
}

#[tokio::test]
async fn a_restarted_worker_gets_its_slots_cookies_back_but_not_their_memory() {
    let cluster = ClusterProcess::start(BIN, &[("WORKERS", "2"), ("RESTART_DELAY", "50")]);
    let http = Http::new();
    let mut jar = Jar::new(&http);
    let first = jar.get(&cluster.url("/session")).await.json();
    let slot = first["workerId"].as_u64().expect("workerId");
    let pid = first["workerPid"].as_u64().expect("workerPid");
    let old_cookie = jar.cookie.clone().expect("cookie");

    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill the worker");
    let new_pid = wait_replaced(&http, &cluster.base(), slot, pid).await;

    // The cookie still routes to its slot, now a new process whose memory never held the session:
    // a new session is minted there, for the same slot.
    let r = jar.get(&cluster.url("/session")).await;
    let j = r.json();
    assert_eq!(j["workerId"], slot, "{j}");
    assert_eq!(j["workerPid"], new_pid, "{j}");
    assert_eq!(
        j["session"]["requestCount"], 1,
        "in-memory sessions die with their worker: {j}"
    );
    let new_cookie = set_session(&r).expect("new cookie");
    assert_ne!(new_cookie, old_cookie);
    assert!(new_cookie.starts_with(&format!("{slot}.")), "{new_cookie}");
}

#[tokio::test]
async fn scaling_down_moves_only_the_removed_slots_sessions() {
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "3"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
            ("SHUTDOWN_TIMEOUT", "2000"),
        ],
    );
    let http = Http::new();
    let mut jars: Vec<(Jar, u64, String)> = Vec::new();
    for i in 0..300 {
        let mut jar = Jar::from_ip(&http, format!("10.7.{}.{}", i / 256, i % 256));
        let j = jar.get(&cluster.url("/session")).await.json();
        let slot = j["workerId"].as_u64().expect("workerId");
        let cookie = jar.cookie.clone().expect("cookie");
        jars.push((jar, slot, cookie));
    }
    let on_3 = jars.iter().filter(|(_, s, _)| *s == 3).count();
    assert!(on_3 > 50, "slot 3 holds a share of the sessions: {on_3}");

    // SIGTTOU: one worker fewer; the highest slot (3) drains and stops.
    cluster.signal(Signal::SIGTTOU);
    let left = support::poll(Duration::from_secs(20), || async {
        let pids = http.ready_pids(&cluster.base()).await;
        pids.len() == 2 && pids.iter().all(|(s, _)| *s != 3)
    })
    .await;
    assert!(left, "slot 3 never left");

    let mut moved_to: BTreeMap<u64, usize> = BTreeMap::new();
    for (jar, slot, cookie) in &mut jars {
        let j = jar.get(&cluster.url("/session")).await.json();
        if *slot == 3 {
            let to = j["workerId"].as_u64().expect("workerId");
            assert_ne!(to, 3);
            assert_eq!(
                j["session"]["requestCount"], 1,
                "a removed slot's session is new elsewhere: {j}"
            );
            assert_ne!(jar.cookie.as_deref(), Some(cookie.as_str()));
            *moved_to.entry(to).or_insert(0) += 1;
            // …and sticks to its new worker from then on.
            let again = jar.get(&cluster.url("/session")).await.json();
            assert_eq!(
                (
                    again["workerId"].as_u64(),
                    again["session"]["requestCount"].as_u64()
                ),
                (Some(to), Some(2))
            );
        } else {
            assert_eq!(
                j["workerId"], *slot,
                "sessions on the other slots did not move: {j}"
            );
            assert_eq!(j["session"]["requestCount"], 2, "{j}");
            assert_eq!(jar.cookie.as_deref(), Some(cookie.as_str()));
        }
    }
    assert_eq!(
        moved_to.len(),
        2,
        "slot 3's sessions spread over both remaining slots: {moved_to:?}"
    );
    let stats = http.get(&cluster.url("/sticky-stats")).await.json();
    assert_eq!(stats["remapped"].as_u64(), Some(on_3 as u64), "{stats}");
}
