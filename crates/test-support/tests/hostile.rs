//! Hostile input over raw TCP, in both dispatch modes: every case gets a clear status (or a closed
//! connection where RFC 9112 says so), and the master goes on serving the next normal request.
//!
//! Each test runs its case against a proxy-mode cluster and a handoff-mode cluster, both shared by
//! the whole file. RELIABILITY.md lists every case with the status it gets.

mod hostile_common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use test_support::SharedCluster;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use hostile_common::*;

const MAX_HEADER_SIZE: usize = 16 * 1024;

/// Sends raw bytes in `mode` and reads until the server closes or 5 s pass.
async fn reply(mode: Mode, request: &[u8]) -> String {
    raw_to(cluster(mode).addr, request).await.0
}

/// Sends `request` in each mode and expects `status` first, then that the cluster still serves.
async fn expect(request: &[u8], status: u16) {
    for mode in MODES {
        let reply = reply(mode, request).await;
        let got = statuses(&reply);
        assert_eq!(
            got.first(),
            Some(&status),
            "{mode:?}: {:?}\n→ {reply}",
            String::from_utf8_lossy(&request[..request.len().min(200)])
        );
        assert!(
            reply.to_ascii_lowercase().contains("connection: close"),
            "{mode:?}: a refusal closes the connection: {reply}"
        );
        still_serving(mode).await;
    }
}

#[tokio::test]
async fn a_request_without_host_gets_400() {
    // RFC 9112 §3.2: plain (no body) and with a body, which take different paths.
    expect(b"GET /whoami HTTP/1.1\r\n\r\n", 400).await;
    expect(b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 400).await;
}

#[tokio::test]
async fn two_host_lines_get_400() {
    expect(b"GET /whoami HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400).await;
    expect(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
        400,
    )
    .await;
}

#[tokio::test]
async fn an_invalid_host_value_gets_400() {
    for host in [
        "a b",
        "evil.example/path",
        "user@evil.example",
        "a:80x",
        "[::1",
    ] {
        let req = format!("GET /whoami HTTP/1.1\r\nHost: {host}\r\n\r\n");
        expect(req.as_bytes(), 400).await;
    }
}

#[tokio::test]
async fn an_http_1_0_request_may_leave_host_out() {
    for mode in MODES {
        let reply = reply(mode, b"GET /whoami HTTP/1.0\r\n\r\n").await;
        // Answered in the client's own version (RFC 9110 §6.2).
        assert!(reply.starts_with("HTTP/1.0 200"), "{mode:?}: {reply}");
    }
}

#[tokio::test]
async fn an_absolute_form_target_names_the_host_the_worker_sees() {
    // RFC 9112 §3.2.2: the target's authority wins over the Host line.
    for mode in MODES {
        let reply = reply(
            mode,
            b"GET http://real.example:8080/headers HTTP/1.1\r\nHost: other.example\r\n\
            Connection: close\r\n\r\n",
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{mode:?}: {reply}");
        let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let seen: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(seen["host"], "real.example:8080", "{mode:?}: {seen}");
    }
}

#[tokio::test]
async fn transfer_encoding_gzip_chunked_gets_501() {
    // RFC 9112 §6.1: a coding the server does not understand.
    expect(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
        5\r\nhello\r\n0\r\n\r\n",
        501,
    )
    .await;
}

#[tokio::test]
async fn chunked_applied_twice_gets_400() {
    // RFC 9112 §6.1: chunked at most once, on one line or two.
    expect(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n\
        5\r\nhello\r\n0\r\n\r\n",
        400,
    )
    .await;
    expect(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
        Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    )
    .await;
}

#[tokio::test]
async fn a_uri_longer_than_the_head_limit_gets_414() {
    let req = format!(
        "GET /{} HTTP/1.1\r\nHost: t\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    expect(req.as_bytes(), 414).await;
}

#[tokio::test]
async fn http_versions_other_than_1_x_get_505() {
    expect(b"GET /whoami HTTP/1.2\r\nHost: t\r\n\r\n", 505).await;
    expect(b"GET /whoami HTTP/2.0\r\nHost: t\r\n\r\n", 505).await;
}

#[tokio::test]
async fn a_lowercase_or_unknown_method_gets_501() {
    expect(b"get /whoami HTTP/1.1\r\nHost: t\r\n\r\n", 501).await;
    expect(b"BREW /whoami HTTP/1.1\r\nHost: t\r\n\r\n", 501).await;
}

#[tokio::test]
async fn connect_is_refused_at_the_edge() {
    expect(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        501,
    )
    .await;
}

#[tokio::test]
async fn a_long_or_unsafe_request_id_is_replaced_by_a_minted_one() {
    // Proxy mode only: in handoff mode the worker serves the client itself and no edge mints ids.
    for id in ["x".repeat(10_000), "a b".into(), "<script>".into()] {
        let req = format!(
            "GET /headers HTTP/1.1\r\nHost: t\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n"
        );
        let reply = reply(Mode::Proxy, req.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply:.200}");
        let (head, body) = reply.split_once("\r\n\r\n").expect("a response");
        let reflected = head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .expect("an id");
        assert_ne!(reflected, id, "the client's id is not reflected");
        assert!(reflected.len() <= 64, "{reflected}");
        let seen: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(
            seen["x-request-id"], reflected,
            "the worker sees the minted id only"
        );
    }
    let reply = reply(
        Mode::Proxy,
        b"GET /headers HTTP/1.1\r\nHost: t\r\nX-Request-Id: trace-42.a_b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        reply.contains("x-request-id: trace-42.a_b\r\n"),
        "a short safe id is kept: {reply}"
    );
}

#[tokio::test]
async fn a_pipelined_head_over_the_limit_gets_431_whatever_came_before_it() {
    // The first request is small; the second, in the same write, is 1.5 times the limit.
    let big = "b".repeat(MAX_HEADER_SIZE / 2);
    let second = format!(
        "GET /whoami HTTP/1.1\r\nHost: t\r\nX-A: {big}\r\nX-B: {big}\r\nX-C: {big}\r\n\r\n"
    );
    let mut req = b"GET /whoami HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
    req.extend_from_slice(second.as_bytes());
    for mode in MODES {
        let reply = reply(mode, &req).await;
        assert_eq!(statuses(&reply), [200, 431], "{mode:?}: {reply}");
        still_serving(mode).await;
    }
    // And behind a request with a body, which hyper reads.
    let mut req = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi".to_vec();
    req.extend_from_slice(second.as_bytes());
    for mode in MODES {
        let reply = reply(mode, &req).await;
        assert_eq!(statuses(&reply), [200, 431], "{mode:?}: {reply}");
        still_serving(mode).await;
    }
}

#[tokio::test]
async fn a_head_just_under_the_limit_is_served() {
    let big = "b".repeat(MAX_HEADER_SIZE - 200);
    let req = format!("GET /whoami HTTP/1.1\r\nHost: t\r\nX-A: {big}\r\nConnection: close\r\n\r\n");
    for mode in MODES {
        let reply = reply(mode, req.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{mode:?}: {reply:.300}");
    }
}

#[tokio::test]
async fn an_informational_status_is_never_a_final_answer() {
    // A handler that returns 100 has a bug: the client must get a final answer, not a 1xx and
    // silence (RFC 9110 §15.2).
    for mode in MODES {
        let reply = reply(
            mode,
            b"GET /status?code=100 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 500"), "{mode:?}: {reply}");
        still_serving(mode).await;
    }
}

#[tokio::test]
async fn a_slow_first_head_in_handoff_mode_is_cut_at_header_timeout() {
    // HEADER_TIMEOUT is 800 ms: the peek and the master's own serving share it.
    let mut s = TcpStream::connect(cluster(Mode::Handoff).addr)
        .await
        .unwrap();
    let started = Instant::now();
    s.write_all(b"GET /whoami HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), read_all(&mut s, &mut out)).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(1400),
        "cut within HEADER_TIMEOUT, not twice it: {waited:?}"
    );
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
}

#[tokio::test]
async fn a_body_over_max_body_size_gets_413_in_handoff_mode_too() {
    let reply = reply(
        Mode::Handoff,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1048577\r\n\r\nabc",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    still_serving(Mode::Handoff).await;
}

/// One worker, one pooled connection to it, and a short BODY_TIMEOUT: where a slow body that
/// held a worker connection would show at once.
static ONE_WORKER: OnceLock<SharedCluster> = OnceLock::new();

fn one_worker() -> SharedCluster {
    SharedCluster::get(
        &ONE_WORKER,
        FIXTURE,
        &[
            ("WORKERS", "1"),
            ("POOL_SIZE", "1"),
            ("EDGE_THREADS", "1"),
            ("BODY_TIMEOUT", "1500"),
            ("BODY_BUFFER", "64K"),
            ("UPSTREAM_TIMEOUT", "3000"),
        ],
    )
}

#[tokio::test]
async fn slow_request_bodies_hold_no_worker_connection_and_get_408() {
    // 16 clients announce 100 bytes and send one: with the body read at the edge first, none of
    // them takes the only pooled worker connection, so other clients are served at once.
    let addr = one_worker().addr;
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nx")
            .await
            .unwrap();
        stalled.push(s);
    }
    let started = Instant::now();
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /whoami HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        read_all(&mut s, &mut out).await;
        let reply = String::from_utf8_lossy(&out);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "other clients waited {:?} behind stalled bodies",
        started.elapsed()
    );
    // Each stalled body is cut with 408 once BODY_TIMEOUT (1.5 s) passes without a byte.
    for mut s in stalled {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), read_all(&mut s, &mut out))
            .await
            .expect("the stalled body is cut within BODY_TIMEOUT");
        let reply = String::from_utf8_lossy(&out);
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    }
}

#[tokio::test]
async fn a_chunked_body_that_never_ends_and_a_large_body_that_stalls_get_408() {
    let addr = one_worker().addr;
    for req in [
        // Never ends: chunks, then silence.
        &b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"[..],
        // Larger than BODY_BUFFER: streamed to the worker (which echoes it as it comes), and
        // cut when it stalls.
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\nabcdefgh",
    ] {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(6), read_all(&mut s, &mut out))
            .await
            .expect("cut within BODY_TIMEOUT");
        let reply = String::from_utf8_lossy(&out);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1400), "{waited:?}: {reply}");
        if req.windows(7).any(|w| w == b"chunked") {
            assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        } else {
            // The echo's answer had started: too late for a 408, so the connection is cut, and
            // the answer is left short of the length it announced.
            assert!(!reply.contains("abcdefgh\r\n0\r\n\r\n"), "{reply}");
        }
        let mut g = TcpStream::connect(addr).await.unwrap();
        g.write_all(b"GET /whoami HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        read_all(&mut g, &mut out).await;
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    }
}

#[tokio::test]
async fn a_trickling_body_in_handoff_mode_is_cut() {
    // BODY_TIMEOUT holds on the worker too, for clients handed to it (default 10 s is too long
    // for a test: this cluster's is 1.5 s).
    static HANDOFF_SLOW: OnceLock<SharedCluster> = OnceLock::new();
    let c = SharedCluster::get(
        &HANDOFF_SLOW,
        FIXTURE,
        &[
            ("WORKERS", "1"),
            ("DISPATCH", "handoff"),
            ("BODY_TIMEOUT", "1500"),
        ],
    );
    let started = Instant::now();
    let mut s = TcpStream::connect(c.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\n\r\n12345678")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(6), read_all(&mut s, &mut out))
        .await
        .expect("the connection is cut within BODY_TIMEOUT");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    // A body this small is read by the worker's plain loop, which answers the stall itself.
    let reply = String::from_utf8_lossy(&out);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    let mut g = TcpStream::connect(c.addr).await.unwrap();
    g.write_all(b"GET /whoami HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    read_all(&mut g, &mut out).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
}
