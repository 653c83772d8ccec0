//! The supervisor keeps slots filled: crashes, kills, hangs, garbage on IPC, crash loops, scaling.
//! Each test owns its cluster, because each one breaks it on purpose.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use test_support::{ClusterProcess, Http, eventually, eventually_async, load};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

fn sigkill(pid: u64) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

fn event(line: &str) -> Value {
    serde_json::from_str(line.trim_start_matches("event: ")).expect("event lines are JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_respawned_in_its_slot_and_the_events_say_so_in_order() {
    let mut c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2"), ("RESTART_DELAY", "50")]);
    let http = Http::new();
    let before = http.ready_pids(&c.base()).await;
    assert_eq!(before.len(), 2, "{before:?}");
    let (slot, pid) = before[1];
    sigkill(pid);

    // exited (signal 9) → restarted (same slot, new pid) → ready (that pid), in this order.
    let exited = c
        .wait_line(|l| l.contains("\"exited\""), Duration::from_secs(10))
        .expect("an exited event");
    let exited = event(&exited);
    assert_eq!(
        (exited["slot"].as_u64(), exited["pid"].as_u64()),
        (Some(slot), Some(pid))
    );
    assert_eq!(exited["signal"], 9, "{exited}");
    let restarted = event(
        &c.wait_line(|l| l.contains("\"restarted\""), Duration::from_secs(10))
            .expect("a restarted event"),
    );
    assert_eq!(restarted["slot"].as_u64(), Some(slot));
    assert_eq!(restarted["restarts"], 1);
    let new_pid = restarted["pid"].as_u64().expect("pid");
    assert_ne!(new_pid, pid);
    let ready = event(
        &c.wait_line(|l| l.contains("\"ready\""), Duration::from_secs(10))
            .expect("a ready event"),
    );
    assert_eq!(
        (ready["slot"].as_u64(), ready["pid"].as_u64()),
        (Some(slot), Some(new_pid))
    );

    assert!(
        eventually_async(Duration::from_secs(5), || async {
            http.ready_pids(&c.base()).await.len() == 2
        })
        .await,
        "both slots ready again"
    );
    let h = http.health(&c.base()).await;
    let s = &h["workers"]["slots"][(slot - 1) as usize];
    assert_eq!(s["restarts"], 1, "/health counts the restart: {h}");
    assert_eq!(s["pid"].as_u64(), Some(new_pid), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_every_second_under_load_fails_no_request() {
    let c = ClusterProcess::start(
        FIXTURE,
        &[
            ("WORKERS", "3"),
            ("RESTART_DELAY", "50"),
            ("RUST_LOG", "warn"),
        ],
    );
    let http = Http::new();
    let url = c.url("/whoami");
    let base = c.base();
    let killer = {
        let http = http.clone();
        tokio::spawn(async move {
            let mut killed = 0;
            for round in 0..5u64 {
                tokio::time::sleep(Duration::from_millis(900)).await;
                let ready = http.ready_pids(&base).await;
                // Only kill while every slot is up, so one worker at a time is down.
                if ready.len() == 3 {
                    sigkill(ready[(round % 3) as usize].1);
                    killed += 1;
                }
            }
            killed
        })
    };
    let report = load(&http, &url, 32, Duration::from_secs(5)).await;
    let killed = killer.await.unwrap();
    assert!(killed >= 3, "the chaos actually happened: {killed} kills");
    assert!(report.ok > 1000, "traffic flowed: {report:?}");
    assert_eq!(
        report.failed, 0,
        "no request failed across {killed} kills: {:?}",
        report.failures
    );
    assert!(c.children().len() >= 3, "slots were refilled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_writing_garbage_on_its_control_channel_is_replaced() {
    let mut c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2"), ("RESTART_DELAY", "50")]);
    let http = Http::new();
    let slot = 1;
    // The answer may be lost with the worker; either way slot 1 wrote garbage.
    let _ = http.send("GET", &c.url("/garbage?slot=1"), &[], "").await;
    let exited = event(
        &c.wait_line(|l| l.contains("\"exited\""), Duration::from_secs(10))
            .expect("the worker is killed"),
    );
    assert_eq!(exited["slot"].as_u64(), Some(slot));
    assert_eq!(exited["signal"], 9);
    c.wait_line(|l| l.contains("\"ready\""), Duration::from_secs(10))
        .expect("a replacement becomes ready");
    for _ in 0..10 {
        assert_eq!(
            http.get(&c.url("/whoami")).await.status,
            200,
            "the master keeps serving"
        );
    }
    assert!(
        c.stderr().contains("control"),
        "the master logged why: {}",
        c.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_worker_is_detected_by_missed_heartbeats_and_replaced() {
    let mut c = ClusterProcess::start(
        FIXTURE,
        &[
            ("WORKERS", "2"),
            ("RESTART_DELAY", "50"),
            ("HEALTH_CHECK_INTERVAL", "100"),
        ],
    );
    let http = Http::new();
    let pids = http.ready_pids(&c.base()).await;
    let (slot, pid) = pids[0];
    // The request that hangs worker `slot` is itself lost, so run it in the background.
    let hang_url = c.url(&format!("/hang?slot={slot}"));
    let hang = tokio::spawn({
        let http = http.clone();
        async move { http.send("GET", &hang_url, &[], "").await }
    });
    let exited = event(
        &c.wait_line(|l| l.contains("\"exited\""), Duration::from_secs(10))
            .expect("the hung worker is killed"),
    );
    assert_eq!(
        (exited["slot"].as_u64(), exited["pid"].as_u64()),
        (Some(slot), Some(pid))
    );
    assert!(c.stderr().contains("heartbeats"), "{}", c.stderr());
    let _ = hang.await;
    assert_eq!(http.get(&c.url("/whoami")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_crashes_at_start_ends_failed_while_the_others_serve() {
    let mut c = ClusterProcess::start(
        FIXTURE,
        &[
            ("WORKERS", "2"),
            ("FIXTURE_CRASH_SLOT", "2"),
            ("RESTART_DELAY", "20"),
            ("MAX_RESTARTS", "3"),
        ],
    );
    let failed = event(
        &c.wait_line(|l| l.contains("\"failed\""), Duration::from_secs(10))
            .expect("slot 2 fails"),
    );
    assert_eq!(failed["slot"], 2);
    let http = Http::new();
    let h = http.health(&c.base()).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["workers"]["failed"], 1, "{h}");
    assert_eq!(h["workers"]["ready"], 1, "{h}");
    assert_eq!(
        h["workers"]["slots"][1]["restarts"], 3,
        "three restarts, then given up: {h}"
    );
    for _ in 0..5 {
        let r = http.get(&c.url("/whoami")).await;
        assert_eq!((r.status, r.header("x-worker-id")), (200, "1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttin_adds_a_worker_and_ttou_drains_one() {
    let c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2")]);
    let http = Http::new();
    let base = c.base();
    c.signal(Signal::SIGTTIN);
    let ready = |n: usize| {
        let (http, base) = (&http, &base);
        move || async move { http.ready_pids(base).await.len() == n }
    };
    assert!(
        eventually_async(Duration::from_secs(10), ready(3)).await,
        "TTIN: three ready workers"
    );
    assert_eq!(c.children().len(), 3);
    c.signal(Signal::SIGTTOU);
    assert!(
        eventually_async(Duration::from_secs(10), ready(2)).await,
        "TTOU: two ready workers"
    );
    let total = || async { http.health(&base).await["workers"]["total"] == 2 };
    assert!(
        eventually_async(Duration::from_secs(10), total).await,
        "slot 3 is gone from /health once its process exited"
    );
    assert_eq!(c.children().len(), 2, "the third process exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_can_ask_a_worker_over_ipc_and_gets_the_matching_reply() {
    let c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2")]);
    let http = Http::new();
    for slot in [1, 2, 1] {
        let r = http.get(&c.url(&format!("/fixture/ask?slot={slot}"))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.json(),
            serde_json::json!({ "worker": slot, "asked": "ping", "slow": 0 })
        );
    }
    let r = http.get(&c.url("/fixture/ask?slot=9")).await;
    assert_eq!(
        r.status, 502,
        "no such slot is an error, not a hang: {}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_asks_every_worker_to_reload() {
    let c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2")]);
    c.signal(Signal::SIGHUP);
    let reloaded = || c.stderr().matches("reload requested").count() == 2;
    assert!(
        eventually(Duration::from_secs(5), reloaded),
        "{}",
        c.stderr()
    );
    assert_eq!(Http::new().get(&c.url("/ping")).await.body, "pong\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_max_memory_is_replaced_gracefully() {
    let mut c = ClusterProcess::start(
        FIXTURE,
        &[
            ("WORKERS", "1"),
            ("MAX_MEMORY", "96M"),
            ("METRICS_INTERVAL", "50"),
        ],
    );
    let http = Http::new();
    let old = http.ready_pids(&c.base()).await[0].1;
    assert_eq!(http.get(&c.url("/alloc?mb=128")).await.status, 200);
    let exited = event(
        &c.wait_line(|l| l.contains("\"exited\""), Duration::from_secs(10))
            .expect("the old worker exits"),
    );
    assert_eq!(exited["pid"].as_u64(), Some(old));
    assert_eq!(
        exited["code"], 0,
        "it drained and exited on its own: {exited}"
    );
    let now = http.ready_pids(&c.base()).await;
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].1, old, "a new process serves the slot");
    let h = http.health(&c.base()).await;
    assert_eq!(
        h["workers"]["slots"][0]["restarts"], 0,
        "a planned replacement is not a crash: {h}"
    );
    assert!(c.stderr().contains("MAX_MEMORY"), "{}", c.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_queues_requests_at_the_master_instead_of_failing() {
    // One upstream connection per worker (one edge thread, so the pool is not split), two workers,
    // six 300 ms requests: at most two run at once,
    // so the last ones must wait their turn at the master: at least three rounds, all answered.
    let c = ClusterProcess::start(
        FIXTURE,
        &[("WORKERS", "2"), ("POOL_SIZE", "1"), ("EDGE_THREADS", "1")],
    );
    let http = Http::new();
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (http, url) = (http.clone(), c.url("/slow?ms=300"));
            tokio::spawn(async move { http.send("GET", &url, &[], "").await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().expect("answered").status, 200);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "six requests through two connections took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_gets_its_whole_pool_whichever_edge_threads_its_requests_arrive_on() {
    // POOL_SIZE=16 over four edge threads is four shares of four. The kernel spreads client
    // connections over the threads by a hash of their addresses, so sixteen of them seldom land
    // four to a thread: a thread whose share is in use must borrow a free place from another for
    // all sixteen to run at once. Four rounds, each on new connections, so that an even spread
    // cannot pass for borrowing; then more than sixteen must wait, whichever thread they are on.
    let c = ClusterProcess::start(
        FIXTURE,
        &[("WORKERS", "1"), ("POOL_SIZE", "16"), ("EDGE_THREADS", "4")],
    );
    let base = c.base();
    let slow = |n: usize, ms: u64| -> Vec<_> {
        // A client of its own: its connections are new ones, spread afresh.
        let http = Http::new();
        (0..n)
            .map(|_| {
                let (http, url) = (http.clone(), c.url(&format!("/slow?ms={ms}")));
                tokio::spawn(async move { http.send("GET", &url, &[], "").await })
            })
            .collect()
    };
    let ask = Http::new();
    let running = || async {
        ask.get(&format!("{base}/fixture/ask?slot=1")).await.json()["slow"]
            .as_u64()
            .unwrap_or(0)
    };
    for round in 0..4 {
        let calls = slow(16, 1500);
        assert!(
            eventually_async(Duration::from_millis(1200), || async {
                running().await == 16
            })
            .await,
            "round {round}: all sixteen ran at once: {} did",
            running().await
        );
        for call in calls {
            assert_eq!(call.await.unwrap().expect("answered").status, 200);
        }
    }
    let calls = slow(24, 1500);
    assert!(
        eventually_async(Duration::from_millis(1200), || async {
            running().await == 16
        })
        .await
    );
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = running().await;
        assert!(n <= 16, "{n} ran at once, over POOL_SIZE");
    }
    for call in calls {
        assert_eq!(call.await.unwrap().expect("answered").status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_taken_from_another_edge_threads_share_moves_there_with_its_connection() {
    // Four shares of four again, and sixteen requests at once: a thread with more than four of
    // them takes the missing places from other threads' shares. A place moves for good, and an
    // idle connection of the lender's moves with it, so the worker's sixteen connections are the
    // same ones round after round: a second round on the same client connections (the same
    // spread over the threads), and a third on new ones (spread anew), open none. A place lent
    // for one request instead had its connection closed after use, and one taken with a close
    // of the lender's idle connection made the borrower connect anew.
    let c = ClusterProcess::start(
        FIXTURE,
        &[("WORKERS", "1"), ("POOL_SIZE", "16"), ("EDGE_THREADS", "4")],
    );
    let base = c.base();
    let (first, second) = (Http::new(), Http::new());
    let ask = Http::new();
    let reply = |what: &'static str| {
        let (ask, base) = (ask.clone(), base.clone());
        async move {
            ask.get(&format!("{base}/fixture/ask?slot=1&what={what}"))
                .await
                .json()
        }
    };
    let mut held = Vec::new();
    for (round, http) in [&first, &first, &second].into_iter().enumerate() {
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let (http, url) = (http.clone(), c.url("/slow?ms=800"));
                tokio::spawn(async move { http.send("GET", &url, &[], "").await })
            })
            .collect();
        assert!(
            eventually_async(Duration::from_millis(700), || async {
                reply("ping").await["slow"] == 16
            })
            .await,
            "round {round}: all sixteen ran at once: {} did",
            reply("ping").await["slow"]
        );
        // Sixteen running, each on a connection of its own, and the pool holds no more.
        let ids = reply("connections").await["connections"].clone();
        assert_eq!(
            ids.as_array().map(Vec::len),
            Some(16),
            "round {round}: {ids}"
        );
        held.push(ids);
        for call in calls {
            assert_eq!(call.await.unwrap().expect("answered").status, 200);
        }
    }
    assert_eq!(
        held[0], held[1],
        "round 1 ran on other upstream connections"
    );
    assert_eq!(
        held[0], held[2],
        "round 2 ran on other upstream connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_when_no_worker_is_ready() {
    let c = ClusterProcess::start(
        FIXTURE,
        &[
            ("WORKERS", "1"),
            ("FIXTURE_CRASH_SLOT", "1"),
            ("RESTART_DELAY", "20"),
            ("MAX_RESTARTS", "1"),
        ],
    );
    let http = Http::new();
    let r = http.get(&c.url("/health")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["status"], "unavailable");
    let r = http.get(&c.url("/whoami")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(r.json()["error"], "no_worker_available");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_see_every_proxied_request_and_5xx_count_as_errors() {
    let c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2")]);
    let http = Http::new();
    for _ in 0..5 {
        assert_eq!(http.get(&c.url("/whoami")).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(http.get(&c.url("/status?code=503")).await.status, 503);
    }
    // The hook runs when the response body ends, just after the client has read it.
    let observed = || async { http.get(&c.url("/fixture/observed")).await.json() };
    assert!(
        eventually_async(Duration::from_secs(2), || async {
            observed().await["complete"] == 7
        })
        .await,
        "7 complete: {}",
        observed().await
    );
    let o = observed().await;
    assert_eq!(
        (o["errors"].as_u64(), o["failed"].as_u64()),
        (Some(2), Some(0)),
        "{o}"
    );
    let h = http.health(&c.base()).await;
    let slots = h["workers"]["slots"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let sum = |k: &str| slots.iter().filter_map(|s| s[k].as_u64()).sum::<u64>();
    assert_eq!(
        (sum("requests"), sum("errors")),
        (7, 2),
        "/health counts the same: {h}"
    );
}

/// How the fixture's observer saw requests end, as (abandoned, failed, errors), with its JSON.
async fn outcomes(
    http: &Http,
    c: &ClusterProcess,
) -> ((Option<u64>, Option<u64>, Option<u64>), Value) {
    let o = http.get(&c.url("/fixture/observed")).await.json();
    let ended = (
        o["abandoned"].as_u64(),
        o["failed"].as_u64(),
        o["errors"].as_u64(),
    );
    (ended, o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_is_not_a_worker_error_but_a_timeout_is() {
    use tokio::io::AsyncWriteExt;
    let c = ClusterProcess::start(FIXTURE, &[("WORKERS", "1"), ("UPSTREAM_TIMEOUT", "1500")]);
    let http = Http::new();
    let base = c.base();
    let slow_running = |n: u64| {
        let (http, base) = (&http, &base);
        move || async move { http.get(&format!("{base}/fixture/ask?slot=1")).await.json()["slow"] == n }
    };
    // 1. The client sends a slow request and hangs up while the worker is still on it.
    let mut s = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    s.write_all(b"GET /slow?ms=600 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(eventually_async(Duration::from_secs(5), slow_running(1)).await);
    drop(s);
    let settled = || async { http.health(&base).await["workers"]["slots"][0]["inFlight"] == 0 };
    assert!(eventually_async(Duration::from_secs(5), settled).await);
    let (ended, o) = outcomes(&http, &c).await;
    assert_eq!(ended, (Some(1), Some(0), Some(0)), "{o}");
    assert_eq!(http.health(&base).await["workers"]["slots"][0]["errors"], 0);

    // 1b. The client hangs up in the middle of its body, while the worker echoes it back.
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'x'; 300_000]).await.unwrap();
    let mut echoed = vec![0; 4096];
    assert!(s.read(&mut echoed).await.unwrap() > 0, "the echo started");
    drop(s);
    assert!(eventually_async(Duration::from_secs(5), settled).await);
    let (ended, o) = outcomes(&http, &c).await;
    assert_eq!(ended, (Some(2), Some(0), Some(0)), "{o}");

    // 2. A worker slower than UPSTREAM_TIMEOUT: the client gets a 504 and the worker an error.
    let r = http.get(&c.url("/slow?ms=3000")).await;
    assert_eq!(r.status, 504);
    let o = http.get(&c.url("/fixture/observed")).await.json();
    assert_eq!(
        (o["failed"].as_u64(), o["errors"].as_u64()),
        (Some(1), Some(1)),
        "{o}"
    );
    assert_eq!(http.health(&base).await["workers"]["slots"][0]["errors"], 1);
}

/// Every `restarted` event among `lines`.
fn restarted_events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l.starts_with("event: ") && l.contains("\"restarted\""))
        .map(|l| event(l))
        .collect()
}

/// Waits until every one of `n` slots is Ready with a process not in `dead`; how long it took.
async fn all_ready_without(
    http: &Http,
    base: &str,
    n: usize,
    dead: &[u64],
    timeout: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    let ok = eventually_async(timeout, || async {
        let ready = http.ready_pids(base).await;
        ready.len() == n && ready.iter().all(|(_, pid)| !dead.contains(pid))
    })
    .await;
    ok.then(|| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_workers_killed_every_300ms_restart_at_once_with_the_default_delay_and_fail_nothing()
{
    // The default RESTART_DELAY (1 s) and MAX_RESTARTS (5): six kills in two seconds would have
    // backed both slots off and then failed them under the old policy.
    let mut c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2"), ("RUST_LOG", "warn")]);
    let http = Http::new();
    let base = c.base();
    let load = test_support::BackgroundLoad::start(c.url("/whoami"), 16);
    let mut killed = Vec::new();
    for round in 0..6usize {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Each kill must find both slots Ready again within a second of the previous one.
        let back = all_ready_without(&http, &base, 2, &killed, Duration::from_secs(1)).await;
        assert!(
            back.is_some(),
            "round {round}: both slots Ready within 1 s of the last kill: {:?}",
            http.slot_states(&base).await
        );
        let ready = http.ready_pids(&base).await;
        let pid = ready[round % ready.len()].1;
        sigkill(pid);
        killed.push(pid);
    }
    let back = all_ready_without(&http, &base, 2, &killed, Duration::from_secs(1)).await;
    assert!(
        back.is_some(),
        "every slot Ready within 1 s of the last kill: {:?}",
        http.slot_states(&base).await
    );
    let (report, worst) = load.finish().await;
    assert!(report.ok > 100, "traffic flowed: {report:?}");
    assert_eq!(
        report.failed, 0,
        "no request failed across six kills (worst {worst:?}): {:?}",
        report.failures
    );
    let h = http.health(&base).await;
    assert_eq!(h["workers"]["failed"], 0, "no slot Failed: {h}");
    let restarts: u64 = (0..2)
        .filter_map(|i| h["workers"]["slots"][i]["restarts"].as_u64())
        .sum();
    assert_eq!(restarts, 6, "every kill was a restart: {h}");
    for i in 0..2 {
        let s = &h["workers"]["slots"][i];
        if s["restarts"] != 0 {
            assert_eq!(s["lastRestart"]["rule"], "killed", "/health says why: {h}");
            assert_eq!(s["lastRestart"]["delayMs"], 0, "{h}");
            assert_eq!(s["lastExit"]["cause"], "outside", "{h}");
            assert_eq!(s["lastExit"]["signal"], 9, "{h}");
        }
    }
    let events = restarted_events(&c.lines_so_far());
    assert_eq!(events.len(), 6, "{events:?}");
    for ev in &events {
        assert_eq!(
            (ev["reason"].as_str(), ev["delay_ms"].as_u64()),
            (Some("killed"), Some(0)),
            "{ev}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_min_uptime_is_stable_and_one_sooner_backs_off_and_counts() {
    let mut c = ClusterProcess::start(
        FIXTURE,
        &[
            ("WORKERS", "1"),
            ("MIN_UPTIME", "300"),
            ("RESTART_DELAY", "400"),
        ],
    );
    let http = Http::new();
    let base = c.base();
    // Past MIN_UPTIME: the worker's uptime in /health counts from its start, so more than enough.
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            http.health(&base).await["workers"]["slots"][0]["uptimeMs"]
                .as_u64()
                .is_some_and(|ms| ms > 500)
        })
        .await
    );
    let _ = http.send("POST", &c.url("/exit?code=3"), &[], "").await;
    let ev = event(
        &c.wait_line(|l| l.contains("\"restarted\""), Duration::from_secs(5))
            .expect("a restart"),
    );
    assert_eq!(
        (ev["reason"].as_str(), ev["delay_ms"].as_u64()),
        (Some("stable"), Some(0)),
        "{ev}"
    );
    c.wait_line(|l| l.contains("\"ready\""), Duration::from_secs(5))
        .expect("the replacement is ready");
    // At once, well inside MIN_UPTIME: unstable, so it waits RESTART_DELAY less jitter.
    let _ = http.send("POST", &c.url("/exit?code=3"), &[], "").await;
    let ev = event(
        &c.wait_line(|l| l.contains("\"restarted\""), Duration::from_secs(5))
            .expect("a second restart"),
    );
    assert_eq!(ev["reason"], "unstable", "{ev}");
    let delay = ev["delay_ms"].as_u64().unwrap_or(0);
    assert!(
        (320..=400).contains(&delay),
        "RESTART_DELAY less jitter: {ev}"
    );
    c.wait_line(|l| l.contains("\"ready\""), Duration::from_secs(5))
        .expect("ready again");
    let h = http.health(&base).await;
    let s = &h["workers"]["slots"][0];
    assert_eq!(s["lastRestart"]["rule"], "unstable", "{h}");
    assert_eq!(s["lastExit"]["code"], 3, "{h}");
    assert_eq!(s["lastExit"]["cause"], "own", "{h}");
    assert_eq!(s["restarts"], 2, "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_worker_is_killed_at_once_requests_wait_for_the_replacements() {
    let c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2"), ("RUST_LOG", "warn")]);
    let http = Http::new();
    let base = c.base();
    // Background load: some requests are in flight on both workers as they die.
    let load = test_support::BackgroundLoad::start(c.url("/whoami"), 8);
    let mut killed = Vec::new();
    for round in 0..3 {
        assert!(
            all_ready_without(&http, &base, 2, &killed, Duration::from_secs(2))
                .await
                .is_some(),
            "round {round}: {:?}",
            http.slot_states(&base).await
        );
        // Warm keep-alive connections to both workers, so the first tries meet dead ones.
        assert!(
            test_support::send_many(&http, &c.url("/whoami"), 16, 8)
                .await
                .is_empty()
        );
        let pids: Vec<u64> = http.ready_pids(&base).await.iter().map(|p| p.1).collect();
        for pid in &pids {
            sigkill(*pid);
        }
        killed.extend(pids);
        // Sent while no worker is Ready: they wait for the replacements.
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let (http, url) = (http.clone(), c.url("/whoami"));
                tokio::spawn(async move { http.send("GET", &url, &[], "").await })
            })
            .collect();
        for call in calls {
            let r = call.await.unwrap().expect("answered");
            assert_eq!(r.status, 200, "round {round}: {}", r.body);
            let pid = r.json()["pid"].as_u64().unwrap_or(0);
            assert!(
                !killed.contains(&pid),
                "served by a replacement: {}",
                r.body
            );
        }
    }
    let (report, worst) = load.finish().await;
    assert_eq!(
        report.failed, 0,
        "requests in flight as both died were resent (worst {worst:?}): {:?}",
        report.failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_no_worker_is_ready_at_most_queue_max_requests_wait_and_only_queue_timeout_long() {
    let flag = std::env::temp_dir().join(format!("fixture-fail-{}", std::process::id()));
    let flag_s = flag.to_string_lossy().into_owned();
    let mut c = ClusterProcess::start(
        FIXTURE,
        &[
            ("WORKERS", "1"),
            ("FIXTURE_FAIL_START_FILE", flag_s.as_str()),
            ("RESTART_DELAY", "5000"),
            ("QUEUE_MAX", "2"),
            ("QUEUE_TIMEOUT", "600"),
        ],
    );
    let http = Http::new();
    let pid = http.ready_pids(&c.base()).await[0].1;
    // From now on new workers crash at start: the slot backs off for 4–5 s with no worker Ready.
    std::fs::write(&flag, b"").expect("create the flag file");
    sigkill(pid);
    c.wait_line(
        |l| l.contains("\"exited\"") && l.contains("\"code\":3"),
        Duration::from_secs(10),
    )
    .expect("the replacement crashed at start");
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let (http, url) = (http.clone(), c.url("/whoami"));
            tokio::spawn(async move {
                let r = http.send("GET", &url, &[], "").await;
                (r, started.elapsed())
            })
        })
        .collect();
    let mut full = 0;
    let mut timed_out = 0;
    for call in calls {
        let (r, took) = call.await.unwrap();
        let r = r.expect("answered");
        assert_eq!(
            (r.status, r.header("retry-after")),
            (503, "1"),
            "{}",
            r.body
        );
        let message = r.json()["message"].as_str().unwrap_or("").to_string();
        if message.contains("QUEUE_MAX") {
            assert!(
                took < Duration::from_millis(500),
                "turned away at once: {took:?}"
            );
            full += 1;
        } else {
            assert!(message.contains("QUEUE_TIMEOUT"), "{message}");
            assert!(
                took >= Duration::from_millis(550) && took < Duration::from_secs(3),
                "waited QUEUE_TIMEOUT: {took:?}"
            );
            timed_out += 1;
        }
    }
    let _ = std::fs::remove_file(&flag);
    assert_eq!(
        (full, timed_out),
        (3, 2),
        "two waited, three were turned away"
    );
}

/// Waits until both slots are Ready and past the default `MIN_UPTIME`, so that a crash of either is
/// a stable restart and no slot can end Failed.
async fn both_ready_past_min_uptime(http: &Http, base: &str) {
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            let h = http.health(base).await;
            (0..2).all(|i| {
                let s = &h["workers"]["slots"][i];
                s["state"] == "ready" && s["uptimeMs"].as_u64().is_some_and(|ms| ms > 1100)
            })
        })
        .await,
        "both slots Ready and past MIN_UPTIME"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_of_death_kills_at_most_two_workers_gets_502_and_no_bystander_fails() {
    let c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2"), ("RUST_LOG", "warn")]);
    let http = Http::new();
    let base = c.base();
    let load = test_support::BackgroundLoad::start(c.url("/whoami"), 8);
    let restarts = |h: &Value| -> u64 {
        (0..2)
            .filter_map(|i| h["workers"]["slots"][i]["restarts"].as_u64())
            .sum()
    };
    for round in 0..3 {
        both_ready_past_min_uptime(&http, &base).await;
        let before = restarts(&http.health(&base).await);
        let id = format!("query-of-death-{round}");
        let r = http
            .send(
                "GET",
                &c.url("/abort"),
                &[("x-request-id", id.as_str())],
                "",
            )
            .await
            .expect("answered");
        assert_eq!(r.status, 502, "round {round}: {}", r.body);
        // The 502 can reach the client before the master has reaped the dead worker: until it
        // has, the slot still reads Ready with its old pid, so "both Ready" alone is no sign that
        // the restart was counted (seen once: "0 deaths").
        assert!(
            eventually_async(Duration::from_secs(5), || async {
                let h = http.health(&base).await;
                restarts(&h) > before
                    && (0..2).all(|i| h["workers"]["slots"][i]["state"] == "ready")
            })
            .await,
            "round {round}: a worker died and both slots are Ready again: {:?}",
            http.slot_states(&base).await
        );
        let died = restarts(&http.health(&base).await) - before;
        assert!((1..=2).contains(&died), "round {round}: {died} deaths");
        assert!(
            eventually(Duration::from_secs(2), || c.stderr().contains(&id)),
            "the master's log names {id}: {}",
            c.stderr()
        );
    }
    let (report, worst) = load.finish().await;
    assert_eq!(
        report.failed, 0,
        "other clients' requests did not fail (worst {worst:?}): {:?}",
        report.failures
    );
    assert_eq!(http.health(&base).await["workers"]["failed"], 0);
}

/// The pids of the workers a stalling query of death has stopped so far, in order.
fn stalled_pids(c: &ClusterProcess) -> Vec<u64> {
    c.stderr()
        .lines()
        .filter_map(|l| {
            l.strip_prefix("fixture: pid ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Each slot's requests in flight, by `/health`.
async fn in_flight(http: &Http, base: &str) -> Vec<u64> {
    let h = http.health(base).await;
    (0..2)
        .map(|i| h["workers"]["slots"][i]["inFlight"].as_u64().unwrap_or(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_avoids_a_worker_that_just_lost_a_request_while_it_is_still_dying() {
    // Under load, a crashing worker can hang up its connections some milliseconds before it has
    // exited and left the ready set. A request resent in that window to the other worker the
    // query of death killed fails a second time: the bystander failure this test pins down. The
    // fixture stops both workers in that window and the test lets them finish one at a time.
    let c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2"), ("RUST_LOG", "warn")]);
    let http = Http::new();
    let base = c.base();
    both_ready_past_min_uptime(&http, &base).await;
    let r = http
        .send(
            "GET",
            &c.url("/abort?stall=true"),
            &[("x-request-id", "stalling-query-of-death")],
            "",
        )
        .await
        .expect("answered");
    assert_eq!(r.status, 502, "{}", r.body);
    let stalled = stalled_pids(&c);
    assert_eq!(stalled.len(), 2, "both workers stalled: {}", c.stderr());
    assert_eq!(http.ready_pids(&base).await.len(), 2, "both still listed");

    // Bystanders reach both stopped workers and wait there.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (http, url) = (http.clone(), c.url("/whoami"));
            tokio::spawn(async move { http.send("GET", &url, &[], "").await })
        })
        .collect();
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            let n = in_flight(&http, &base).await;
            n.iter().sum::<u64>() == 4 && n.iter().all(|&k| k > 0)
        })
        .await,
        "four requests in flight, on both workers: {:?}",
        in_flight(&http, &base).await
    );
    let cont = |pid: u64| kill(Pid::from_raw(pid as i32), Signal::SIGCONT).expect("SIGCONT");
    // The first one dies: its requests are resent. The other worker lost the query of death's
    // resend and is still listed; a resend sent there would wait with it, then fail with it.
    cont(stalled[0]);
    let answered = eventually(Duration::from_secs(5), || {
        calls.iter().filter(|c| c.is_finished()).count() >= 2
    });
    cont(stalled[1]);
    assert!(
        answered,
        "the first worker's requests were answered while the second was still stopped"
    );
    for call in calls {
        let r = call.await.unwrap().expect("answered");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(http.health(&base).await["workers"]["failed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_master_leaves_no_worker_behind_and_frees_its_port() {
    let mut c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2")]);
    let addr = c.addr;
    let workers = c.children();
    assert_eq!(workers.len(), 2);
    c.signal(Signal::SIGKILL);
    assert!(c.wait_exit(Duration::from_secs(5)).is_some());
    assert!(
        eventually(Duration::from_secs(5), || workers
            .iter()
            .all(|p| !test_support::is_alive(*p))),
        "no orphan"
    );
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpListener::bind(addr)
            .is_ok()),
        "the port is free again"
    );
}
