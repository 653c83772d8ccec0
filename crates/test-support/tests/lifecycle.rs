//! The master's life: bad configuration, graceful shutdown, rolling restarts, and dying.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use test_support::{
    ClusterProcess, Http, eventually, eventually_async, is_alive, load, read_response,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

#[test]
fn bad_environment_values_exit_2_naming_the_variable() {
    for (var, value) in [
        ("WORKERS", "abc"),
        ("PORT", "70000"),
        ("SHUTDOWN_TIMEOUT", "soon"),
        ("HOST", "my-laptop"),
        ("SCHEDULING", "fast"),
        ("BODY_BUFFER", "lots"),
        ("BODY_TIMEOUT", "10s"),
    ] {
        let out = std::process::Command::new(FIXTURE)
            .env(var, value)
            .output()
            .expect("run the fixture");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid {var}=")),
            "{var}={value}: {stderr}"
        );
        assert!(
            stderr.contains("expected"),
            "says what is accepted: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_0_leaving_no_process() {
    let mut c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2"), ("SHUTDOWN_TIMEOUT", "10000")]);
    let http = Http::new();
    let workers = c.children();
    assert_eq!(workers.len(), 2);
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let http = http.clone();
            let url = c.url("/slow?ms=1500");
            tokio::spawn(async move { http.send("GET", &url, &[], "").await })
        })
        .collect();
    // Two raw keep-alive connections: one idle after a first answer, one with a request in flight.
    let mut idle = TcpStream::connect(c.addr).await.unwrap();
    idle.write_all(b"GET /whoami HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let mut busy = TcpStream::connect(c.addr).await.unwrap();
    busy.write_all(b"GET /slow?ms=1500 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // Wait until the edge counts all five in flight, then ask it to stop.
    let base = c.base();
    let all_in_flight = || async {
        let h = http.health(&base).await;
        let slots = h["workers"]["slots"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        slots
            .iter()
            .filter_map(|s| s["inFlight"].as_u64())
            .sum::<u64>()
            == 5
    };
    assert!(
        eventually_async(Duration::from_secs(5), all_in_flight).await,
        "five requests in flight"
    );
    c.signal(Signal::SIGTERM);
    // The idle connection is closed at once (well before the slow requests end); the busy one
    // gets its answer, saying the connection closes, and then the end of the stream.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_millis(1000), idle.read_to_end(&mut rest));
    assert!(closed.await.is_ok(), "an idle connection closes on SIGTERM");
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut answer));
    assert!(
        ended.await.is_ok(),
        "the busy connection ends after its answer"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with("}") && answer.contains("\"slept\":1500"),
        "{answer}"
    );
    for r in slow {
        let r = r.await.unwrap().expect("the in-flight request completed");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let status = c
        .wait_exit(Duration::from_secs(15))
        .expect("the master exits");
    assert_eq!(status.code(), Some(0), "everything drained: {}", c.stderr());
    assert!(
        workers.iter().all(|p| !is_alive(*p)),
        "no worker left: {workers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_replaces_every_worker_under_load_without_a_failed_request() {
    let c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2"), ("RUST_LOG", "warn")]);
    let http = Http::new();
    let before = http.ready_pids(&c.base()).await;
    let url = c.url("/whoami");
    let loader = {
        let http = http.clone();
        tokio::spawn(async move { load(&http, &url, 32, Duration::from_secs(4)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.signal(Signal::SIGUSR2);
    let base = c.base();
    let rolled = || async {
        let now = http.ready_pids(&base).await;
        now.len() == 2
            && now
                .iter()
                .all(|(_, pid)| before.iter().all(|(_, old)| old != pid))
    };
    let started = Instant::now();
    assert!(
        eventually_async(Duration::from_secs(10), rolled).await,
        "every worker pid changed"
    );
    let took = started.elapsed();
    let report = loader.await.unwrap();
    assert!(report.ok > 500, "{report:?}");
    assert_eq!(
        report.failed, 0,
        "no request failed during the roll ({took:?}): {:?}",
        report.failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_whose_new_worker_fails_stops_and_keeps_the_old_one_serving() {
    let dir = std::env::temp_dir().join(format!("rcp-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let flag = dir.join("fail-start");
    let flag_str = flag.to_str().unwrap().to_string();
    let env: Vec<(&str, &str)> = vec![("WORKERS", "2"), ("FIXTURE_FAIL_START_FILE", &flag_str)];
    let mut c = ClusterProcess::start(FIXTURE, &env);
    let http = Http::new();
    let before = http.ready_pids(&c.base()).await;
    std::fs::write(&flag, b"").unwrap();
    c.signal(Signal::SIGUSR2);
    let exited = c
        .wait_line(
            |l| l.contains("\"exited\"") && l.contains("\"code\":3"),
            Duration::from_secs(10),
        )
        .expect("the replacement exits at start");
    assert!(
        !before
            .iter()
            .any(|(_, p)| exited.contains(&format!("\"pid\":{p},"))),
        "it was not an old worker: {exited}"
    );
    assert!(
        c.wait_line(|l| l.contains("\"exited\""), Duration::from_millis(500))
            .is_none(),
        "the roll stopped: no other worker was touched"
    );
    assert_eq!(
        http.ready_pids(&c.base()).await,
        before,
        "the old workers keep their slots"
    );
    for _ in 0..6 {
        assert_eq!(http.get(&c.url("/whoami")).await.status, 200);
    }
    assert!(
        c.stderr().contains("rolling restart aborted"),
        "{}",
        c.stderr()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_cluster_on_a_port_in_use_exits_with_an_error_instead_of_sharing_it() {
    // The edge binds one SO_REUSEPORT socket per thread; without its first, exclusive bind,
    // a second cluster of the same user would silently take half of the first one's connections.
    let first = ClusterProcess::start(FIXTURE, &[("WORKERS", "1")]);
    let port = first.addr.port().to_string();
    let mut second = std::process::Command::new(FIXTURE)
        .env("PORT", &port)
        .env("WORKERS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the fixture");
    let exited = eventually(Duration::from_secs(10), || {
        matches!(second.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = second.kill();
    }
    let out = second
        .wait_with_output()
        .expect("the second cluster's output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited, "the second cluster is still running: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")) && stderr.contains("in use"),
        "{stderr}"
    );
}

/// The scheduling policy of every thread of `pid` (`/proc/<pid>/task/*/stat`, field 41).
fn policies(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process is alive");
    tasks
        .map(|task| {
            let stat = std::fs::read_to_string(task.expect("a task").path().join("stat"))
                .expect("its stat");
            // The command name (field 2) may hold spaces: count from the parenthesis closing it.
            let (_, rest) = stat.rsplit_once(')').expect("a stat line");
            rest.split_whitespace()
                .nth(41 - 3)
                .and_then(|f| f.parse().ok())
                .expect("a policy field")
        })
        .collect()
}

#[test]
fn the_master_and_its_workers_run_under_sched_batch_unless_told_normal() {
    const SCHED_BATCH: u32 = 3;
    // `normal` leaves the policy the master was started with: this test's own.
    let ours = policies(std::process::id())[0];
    for (setting, want) in [(None, SCHED_BATCH), (Some("normal"), ours)] {
        let env: Vec<_> = [("WORKERS", "2"), ("EDGE_THREADS", "2")]
            .into_iter()
            .chain(setting.map(|v| ("SCHEDULING", v)))
            .collect();
        let c = ClusterProcess::start(FIXTURE, &env);
        let workers = c.children();
        assert_eq!(workers.len(), 2);
        for pid in std::iter::once(c.pid()).chain(workers) {
            let got = policies(pid);
            assert!(!got.is_empty(), "{pid} has threads");
            assert!(
                got.iter().all(|&p| p == want),
                "SCHEDULING={setting:?}: process {pid}'s threads run under policies {got:?}, want {want}"
            );
        }
    }
}

#[test]
fn killing_the_master_takes_its_workers_with_it() {
    let mut c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2")]);
    let workers = c.children();
    assert_eq!(workers.len(), 2);
    c.signal(Signal::SIGKILL);
    c.wait_exit(Duration::from_secs(5))
        .expect("the master is gone");
    assert!(
        eventually(Duration::from_secs(2), || workers
            .iter()
            .all(|p| !is_alive(*p))),
        "no orphaned worker after 2 s: {workers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_that_must_cut_off_a_request_exits_non_zero() {
    let mut c = ClusterProcess::start(FIXTURE, &[("WORKERS", "1"), ("SHUTDOWN_TIMEOUT", "300")]);
    let http = Http::new();
    let url = c.url("/slow?ms=5000");
    let stuck = tokio::spawn(async move { http.send("GET", &url, &[], "").await });
    let base = c.base();
    let check = Http::new();
    let busy = || async { check.health(&base).await["workers"]["slots"][0]["inFlight"] == 1 };
    assert!(eventually_async(Duration::from_secs(5), busy).await);
    let started = Instant::now();
    c.signal(Signal::SIGTERM);
    let status = c
        .wait_exit(Duration::from_secs(5))
        .expect("the master exits");
    assert_eq!(status.code(), Some(1), "it had to kill: {}", c.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "SHUTDOWN_TIMEOUT bounds the wait"
    );
    let _ = stuck.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_into_a_pipe_carry_no_colour_codes() {
    // The test reads the cluster's stderr through a pipe, as a log file or a collector would.
    let c = ClusterProcess::start(FIXTURE, &[("WORKERS", "1")]);
    c.signal(Signal::SIGHUP);
    let logged = || c.stderr().contains("reload requested");
    assert!(eventually(Duration::from_secs(5), logged), "{}", c.stderr());
    let lines = c.stderr();
    assert!(
        !lines.contains('\x1b'),
        "an ANSI escape in piped logs: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_tagged_by_process() {
    let c = ClusterProcess::start(FIXTURE, &[("WORKERS", "1"), ("LOG_FORMAT", "json")]);
    c.signal(Signal::SIGHUP);
    let logged = || c.stderr().contains("reload requested");
    assert!(eventually(Duration::from_secs(5), logged), "{}", c.stderr());
    let lines = c.stderr();
    let mut saw = (false, false);
    for line in lines.lines().filter(|l| !l.starts_with("fixture:")) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let names: Vec<&str> = v["spans"]
            .as_array()
            .map(|s| s.iter().filter_map(|s| s["name"].as_str()).collect())
            .unwrap_or_default();
        saw.0 |= names.contains(&"master");
        saw.1 |= names.contains(&"worker") && v["fields"]["message"] == "reload requested";
    }
    assert_eq!(
        saw,
        (true, true),
        "lines from the master and from worker 1: {lines}"
    );
}

/// Sends one request on `s`, reads its whole answer and returns the status line.
async fn status_line(s: &mut TcpStream) -> String {
    s.write_all(b"GET /whoami HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(s).await;
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_caps_the_whole_master_across_its_edge_threads() {
    // Four edge threads, each with its own listener: the cap must hold for all of them together.
    let c = ClusterProcess::start(
        FIXTURE,
        &[
            ("WORKERS", "1"),
            ("EDGE_THREADS", "4"),
            ("MAX_CONNECTIONS", "2"),
        ],
    );
    let mut first = TcpStream::connect(c.addr).await.unwrap();
    let mut second = TcpStream::connect(c.addr).await.unwrap();
    assert_eq!(status_line(&mut first).await, "HTTP/1.1 200 OK");
    assert_eq!(status_line(&mut second).await, "HTTP/1.1 200 OK");

    // Two served connections fill the cap: requests on more connections are not read.
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(c.addr).await.unwrap();
        s.write_all(b"GET /whoami HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        waiting.push(s);
    }
    for (i, s) in waiting.iter_mut().enumerate() {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(300), s.read(&mut byte)).await;
        assert!(
            read.is_err(),
            "connection {} beyond MAX_CONNECTIONS=2 got an answer: {read:?}",
            i + 3
        );
    }

    // Closing one served connection frees one slot: exactly one waiting connection is answered.
    drop(first);
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        let reads = waiting.iter_mut().enumerate().map(|(i, s)| {
            Box::pin(async move {
                let mut head = [0u8; 12];
                s.read_exact(&mut head).await.map(|_| (i, head))
            })
        });
        futures_util::future::select_all(reads).await.0
    })
    .await
    .expect("a waiting connection is served once a slot frees")
    .unwrap();
    assert_eq!(&answered.1, b"HTTP/1.1 200");
    for (i, s) in waiting.iter_mut().enumerate() {
        if i == answered.0 {
            continue;
        }
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(300), s.read(&mut byte)).await;
        assert!(
            read.is_err(),
            "a second waiting connection got an answer from one freed slot"
        );
    }
    assert_eq!(
        status_line(&mut second).await,
        "HTTP/1.1 200 OK",
        "the other served connection lives on"
    );
}
