//! `DISPATCH=handoff`: the master passes whole client connections to workers.

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use test_support::{ClusterProcess, Http, SharedCluster, eventually_async};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");
static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();

fn cluster() -> SharedCluster {
    SharedCluster::get(
        &CLUSTER,
        FIXTURE,
        &[("WORKERS", "2"), ("DISPATCH", "handoff")],
    )
}

/// One request on a fresh connection that is closed afterwards.
async fn once(path: &str) -> String {
    let mut s = TcpStream::connect(cluster().addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn worker_of(reply: &str) -> Option<u64> {
    let body = reply.split("\r\n\r\n").nth(1)?;
    serde_json::from_str::<serde_json::Value>(body).ok()?["worker"].as_u64()
}

#[tokio::test]
async fn new_connections_are_spread_over_the_workers() {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let reply = once("/whoami").await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        seen.insert(worker_of(&reply).expect("a worker answered"));
    }
    assert_eq!(seen.len(), 2, "both workers took connections: {seen:?}");
}

#[tokio::test]
async fn a_keep_alive_connection_stays_with_one_worker() {
    let mut s = TcpStream::connect(cluster().addr).await.unwrap();
    let mut workers = std::collections::BTreeSet::new();
    for _ in 0..5 {
        s.write_all(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        workers.insert(worker_of(&reply).expect("a JSON reply in one read"));
    }
    assert_eq!(workers.len(), 1, "one connection, one worker: {workers:?}");
}

#[tokio::test]
async fn a_worker_answers_pipelined_requests_in_order_before_and_after_one_with_a_body() {
    // The worker serves plain requests itself and hands the connection to hyper at the first
    // one with a body, with the bytes it already read: all in one write, so they are.
    let mut s = TcpStream::connect(cluster().addr).await.unwrap();
    s.write_all(
        b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
        HEAD /whoami HTTP/1.1\r\nHost: x\r\n\r\n\
        GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    let parts: Vec<&str> = out.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
    assert_eq!(parts.len(), 4, "four answers: {out}");
    let first = worker_of(&format!(
        "x\r\n\r\n{}",
        parts[0].split("\r\n\r\n").nth(1).unwrap()
    ));
    let last = worker_of(&format!(
        "x\r\n\r\n{}",
        parts[3].split("\r\n\r\n").nth(1).unwrap()
    ));
    assert!(first.is_some() && first == last, "one worker: {out}");
    assert!(parts[1].ends_with("\r\n\r\nhello"), "{out}");
    assert!(parts[2].ends_with("\r\n\r\n"), "HEAD: no body: {out}");
}

#[tokio::test]
async fn the_master_still_answers_its_own_routes_then_closes() {
    let reply = once("/health").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"ready\":2"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
}

#[tokio::test]
async fn malformed_http_gets_400_from_the_master() {
    let mut s = TcpStream::connect(cluster().addr).await.unwrap();
    s.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test]
async fn websockets_work_on_a_handed_off_connection() {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", cluster().addr))
        .await
        .expect("handshake");
    ws.send(Message::text("hi")).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(
        reply.starts_with("worker ") && reply.ends_with(": hi"),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_go_to_the_survivors_when_a_worker_dies() {
    // A killed Ready worker is restarted at once; to keep its slot down, its replacements crash
    // at start (unstable restarts, which back off for a minute).
    let flag = std::env::temp_dir().join(format!("handoff-fail-{}", std::process::id()));
    let flag_s = flag.to_string_lossy().into_owned();
    let c = ClusterProcess::start(
        FIXTURE,
        &[
            ("WORKERS", "2"),
            ("DISPATCH", "handoff"),
            ("RESTART_DELAY", "60000"),
            ("FIXTURE_FAIL_START_FILE", flag_s.as_str()),
        ],
    );
    let http = Http::new();
    let pids = http.ready_pids(&c.base()).await;
    std::fs::write(&flag, b"").expect("create the flag file");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0].1 as i32),
        Signal::SIGKILL,
    );
    let base = c.base();
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            http.ready_pids(&base).await.len() == 1
        })
        .await
    );
    for _ in 0..6 {
        // A fresh client each time: each request is a new connection to route.
        let r = Http::new().get(&c.url("/whoami")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["worker"].as_u64(), Some(pids[1].0));
    }
    let _ = std::fs::remove_file(&flag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_on_handed_off_connections() {
    let mut c = ClusterProcess::start(FIXTURE, &[("WORKERS", "2"), ("DISPATCH", "handoff")]);
    let http = Http::new();
    let url = c.url("/slow?ms=1000");
    let slow = tokio::spawn(async move { http.send("GET", &url, &[], "").await });
    // Once a worker reports (over IPC) that it is running the request, ask the master to stop.
    let (ask, base) = (Http::new(), c.base());
    let busy = || async {
        let mut running = 0;
        for slot in 1..=2 {
            let r = ask.get(&format!("{base}/fixture/ask?slot={slot}")).await;
            running += r.json()["slow"].as_u64().unwrap_or(0);
        }
        running == 1
    };
    assert!(eventually_async(Duration::from_secs(5), busy).await);
    c.signal(Signal::SIGTERM);
    let r = slow.await.unwrap().expect("the slow request completed");
    assert_eq!(r.status, 200);
    assert_eq!(
        c.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0),
        "{}",
        c.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_handed_off_connection_is_closed_by_the_worker_after_header_timeout() {
    let c = ClusterProcess::start(
        FIXTURE,
        &[
            ("WORKERS", "1"),
            ("DISPATCH", "handoff"),
            ("HEADER_TIMEOUT", "300"),
        ],
    );
    let mut s = TcpStream::connect(c.addr).await.unwrap();
    s.write_all(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "served by the worker first"
    );
    // Now idle: the worker (which owns the connection) must close it, not keep it forever.
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "closed: {closed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_find_no_worker_wait_for_the_replacements() {
    // Its own cluster: this test kills every worker.
    let c = ClusterProcess::start(
        FIXTURE,
        &[
            ("WORKERS", "2"),
            ("DISPATCH", "handoff"),
            ("RUST_LOG", "warn"),
        ],
    );
    let http = Http::new();
    let pids: Vec<u64> = http
        .ready_pids(&c.base())
        .await
        .iter()
        .map(|p| p.1)
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // Gone, not just signalled: a connection handed to a worker in the instant before the kernel
    // tears it down dies with it (handoff mode's known limit, see RELIABILITY.md).
    assert!(test_support::eventually(Duration::from_secs(5), || {
        pids.iter().all(|p| !test_support::is_alive(*p as u32))
    }));
    // Each on a fresh connection, sent while both slots are being replaced.
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let addr = c.addr;
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let req = "GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
                s.write_all(req.as_bytes()).await.unwrap();
                let mut out = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
                String::from_utf8_lossy(&out).into_owned()
            })
        })
        .collect();
    for call in calls {
        let reply = call.await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
}
