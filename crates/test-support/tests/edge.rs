//! The edge's request path against one shared two-worker cluster: routing, headers, bodies, limits,
//! bad input and WebSockets.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use test_support::{Http, SharedCluster, read_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();

fn cluster() -> SharedCluster {
    SharedCluster::get(
        &CLUSTER,
        env!("CARGO_BIN_EXE_fixture"),
        &[
            ("WORKERS", "2"),
            ("MAX_BODY_SIZE", "1M"),
            ("MAX_HEADER_SIZE", "16384"),
            ("HEADER_TIMEOUT", "500"),
            ("UPSTREAM_TIMEOUT", "1000"),
        ],
    )
}

/// Sends raw bytes and reads until the server closes or 5 s pass.
async fn raw(request: &[u8]) -> String {
    let mut s = TcpStream::connect(cluster().addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn health_reports_every_worker_ready() {
    let h = Http::new().health(&cluster().url("")).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["workers"]["total"], 2, "{h}");
    assert_eq!(h["workers"]["ready"], 2, "{h}");
    assert_eq!(h["workers"]["failed"], 0, "{h}");
}

#[tokio::test]
async fn requests_reach_every_worker_and_round_robin_alternates() {
    let http = Http::new();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let r = http.get(&cluster().url("/whoami")).await;
        assert_eq!(r.status, 200);
        let id = r.header("x-worker-id").to_string();
        assert_eq!(
            r.json()["worker"].to_string(),
            id,
            "X-Worker-Id names the worker that answered"
        );
        *seen.entry(id).or_insert(0) += 1;
    }
    // Other tests share this cluster, so the split need not be exactly 10/10, but both must serve.
    assert_eq!(seen.len(), 2, "both workers answered: {seen:?}");
    assert!(
        seen.values().all(|n| *n >= 4),
        "round-robin spreads requests: {seen:?}"
    );
}

#[tokio::test]
async fn forwarded_requests_carry_client_and_request_ids() {
    let http = Http::new();
    let r = http.get(&cluster().url("/headers")).await;
    let seen = r.json();
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert!(
        seen["x-request-id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{seen}"
    );
    assert_eq!(
        r.header("x-request-id"),
        seen["x-request-id"].as_str().unwrap_or("")
    );

    let r = http
        .send(
            "GET",
            &cluster().url("/headers"),
            &[
                ("x-request-id", "trace-42"),
                ("x-forwarded-for", "10.0.0.9"),
            ],
            "",
        )
        .await
        .unwrap();
    let seen = r.json();
    assert_eq!(
        seen["x-request-id"], "trace-42",
        "an incoming request id is kept"
    );
    assert_eq!(r.header("x-request-id"), "trace-42");
    assert_eq!(
        seen["x-forwarded-for"], "10.0.0.9, 127.0.0.1",
        "the peer is appended"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let r = Http::new()
        .send(
            "GET",
            &cluster().url("/headers"),
            &[
                ("connection", "x-secret"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
            ],
            "",
        )
        .await
        .unwrap();
    let seen = r.json();
    assert!(
        seen.get("x-secret").is_none(),
        "a header named in Connection is hop-by-hop: {seen}"
    );
    assert!(seen.get("keep-alive").is_none(), "{seen}");
}

#[tokio::test]
async fn a_large_body_streams_through_unchanged() {
    let body: String = (0..900_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let r = Http::new()
        .send("POST", &cluster().url("/echo"), &[], &body)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "the echoed body differs");
}

/// The payload of a chunked HTTP/1.1 body that starts at `body`.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk-size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = rest[size..]
            .strip_prefix("\r\n")
            .expect("CRLF after the chunk");
    }
}

#[tokio::test]
async fn a_chunked_request_body_reaches_the_worker_whole() {
    let resp = raw(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
        Connection: close\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let (head, body) = resp.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{resp}");
    // A small body is read whole at the edge (BODY_BUFFER) and forwarded with its length, so the
    // echo comes back with a Content-Length; a streamed one comes back chunked.
    let echoed = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        assert!(head.contains("content-length: 11"), "{resp}");
        body.to_string()
    };
    assert_eq!(echoed, "hello world", "{resp}");
}

#[tokio::test]
async fn a_streamed_response_arrives_whole_and_the_connection_serves_the_next_request() {
    // Two pipelined requests on one connection: the first answer streams in five pieces of
    // unknown length (chunked), and the second must still be understood after it.
    let resp = raw(b"GET /chunks?n=5 HTTP/1.1\r\nHost: t\r\n\r\n\
        GET /whoami HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    .await;
    let (first, rest) = resp.split_once("\r\n\r\n").expect("a first response");
    assert!(first.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        first
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{resp}"
    );
    let expected: String = (0..5).map(|i| format!("piece {i}\n")).collect();
    assert_eq!(dechunk(rest), expected, "{resp}");
    let second = &rest[rest.find("0\r\n\r\n").expect("the last chunk") + 5..];
    assert!(second.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(second.contains("\"worker\""), "{resp}");
}

#[tokio::test]
async fn a_worker_answering_before_reading_the_body_leaves_no_broken_connection_behind() {
    // The worker answers at once and never reads the 900 KB: the master must not wait for the
    // body to go out before reading the answer, nor pool a connection still carrying body bytes.
    let http = Http::new();
    let body = "x".repeat(900_000);
    for _ in 0..4 {
        let r = http
            .send("POST", &cluster().url("/status?code=201"), &[], &body)
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(
            r.header("connection"),
            "close",
            "the client's unread body ends its connection"
        );
        for _ in 0..4 {
            let r = http.get(&cluster().url("/whoami")).await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
}

#[tokio::test]
async fn a_body_over_max_body_size_gets_413() {
    // Refused on its Content-Length, before any of the body is sent: as curl does for large
    // uploads, the client waits for `100 Continue`, and gets the 413 instead. (A client that
    // sends the whole body anyway may see its write fail with EPIPE before it reads the 413: the
    // edge closes the connection rather than read a body it refused.)
    let resp = raw(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1048577\r\n\
        Expect: 100-continue\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("\"payload_too_large\""), "{resp}");
}

#[tokio::test]
async fn an_unknown_path_is_the_workers_404_not_the_masters() {
    let r = Http::new().get(&cluster().url("/no/such/page")).await;
    assert_eq!(r.status, 404);
    assert!(!r.header("x-worker-id").is_empty(), "a worker answered");
}

#[tokio::test]
async fn malformed_http_gets_400_and_the_master_keeps_serving() {
    let reply = raw(b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "got {reply:?}");
    let reply = raw(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "got {reply:?}");
    assert_eq!(Http::new().get(&cluster().url("/health")).await.status, 200);
}

#[tokio::test]
async fn headers_over_the_cap_get_431() {
    let big = "a".repeat(32 * 1024);
    let req = format!("GET /whoami HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let reply = raw(req.as_bytes()).await;
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "got {:?}",
        &reply[..reply.len().min(80)]
    );
}

#[tokio::test]
async fn a_client_that_stalls_mid_head_is_disconnected() {
    let started = Instant::now();
    let reply = raw(b"GET /whoami HTTP/1.1\r\nHost: x\r\n").await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "HEADER_TIMEOUT=500 ms should close the connection, waited {waited:?}"
    );
    assert!(
        !reply.contains("200 OK"),
        "no response to an unfinished request: {reply:?}"
    );
}

#[tokio::test]
async fn a_worker_slower_than_upstream_timeout_gets_504() {
    let r = Http::new().get(&cluster().url("/slow?ms=3000")).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"], "gateway_timeout");
    // An answer the edge made itself is framed and dated like a worker's.
    assert_eq!(r.header("content-length"), r.body.len().to_string());
    assert!(r.header("date").ends_with(" GMT"), "{:?}", r.headers);
}

/// Splits `raw` into the responses it holds, each as (head, body), reading each body by its
/// `Content-Length`, chunked framing, or none at all when `bodiless` says so.
fn responses(mut raw: &str, bodiless: &[bool]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for &no_body in bodiless {
        let (head, rest) = raw.split_once("\r\n\r\n").expect("another response");
        let lower = head.to_ascii_lowercase();
        let length = lower.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        });
        let (body, rest) = if no_body {
            (String::new(), rest)
        } else if lower.contains("transfer-encoding: chunked") {
            let end = rest.find("\r\n0\r\n\r\n").expect("a last chunk") + 7;
            (dechunk(&rest[..end]), &rest[end..])
        } else {
            let n = length.expect("a content-length");
            (rest[..n].to_string(), &rest[n..])
        };
        out.push((head.to_string(), body));
        raw = rest;
    }
    assert_eq!(raw, "", "nothing after the last response");
    out
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_with_bodiless_answers_framed_right() {
    // One write, five requests: a 204 and a HEAD answer carry no body, and the requests after
    // them must still be read from the right place.
    let resp = raw(
        b"GET /status?code=204 HTTP/1.1\r\nHost: t\r\nX-Request-Id: one\r\n\r\n\
        HEAD /whoami HTTP/1.1\r\nHost: t\r\nX-Request-Id: two\r\n\r\n\
        GET /chunks?n=3 HTTP/1.1\r\nHost: t\r\nX-Request-Id: three\r\n\r\n\
        GET /whoami HTTP/1.1\r\nHost: t\r\nX-Request-Id: four\r\n\r\n\
        GET /whoami HTTP/1.1\r\nHost: t\r\nX-Request-Id: five\r\nConnection: close\r\n\r\n",
    )
    .await;
    let all = responses(&resp, &[true, true, false, false, false]);
    let ids: Vec<_> = all
        .iter()
        .map(|(head, _)| {
            head.lines()
                .find_map(|l| l.strip_prefix("x-request-id: "))
                .unwrap_or("-")
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["one", "two", "three", "four", "five"], "{resp}");
    let (no_content, head) = (&all[0].0, &all[1].0);
    assert!(no_content.starts_with("HTTP/1.1 204"), "{resp}");
    assert!(
        !no_content.contains("content-length") && !no_content.contains("transfer-encoding"),
        "a 204 has no framing: {no_content}"
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{resp}");
    let whoami_len = all[3].1.len().to_string();
    assert!(
        head.contains(&format!("content-length: {whoami_len}")),
        "HEAD tells the length of the GET's body ({whoami_len}): {head}"
    );
    assert_eq!(all[2].1, "piece 0\npiece 1\npiece 2\n", "{resp}");
    assert!(all[3].1.contains("\"worker\""), "{resp}");
    assert!(all[4].0.contains("connection: close"), "{resp}");
}

#[tokio::test]
async fn a_connection_answers_every_request_in_order_after_its_first_request_with_a_body() {
    // Plain requests, then one with a body (served differently from then on), then more, all
    // pipelined in one write so that bytes already read must be served in order.
    let resp = raw(b"GET /whoami HTTP/1.1\r\nHost: t\r\n\r\n\
        POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
        GET /headers HTTP/1.1\r\nHost: t\r\nX-Request-Id: after\r\n\r\n\
        POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
        3\r\nbye\r\n0\r\n\r\n")
    .await;
    let all = responses(&resp, &[false, false, false, false]);
    assert!(all[0].1.contains("\"worker\""), "{resp}");
    assert_eq!(all[1].1, "hello", "{resp}");
    let headers: serde_json::Value = serde_json::from_str(&all[2].1).expect("JSON");
    assert_eq!(headers["x-request-id"], "after", "{resp}");
    assert_eq!(all[3].1, "bye", "{resp}");
    assert!(
        all.iter().all(|(h, _)| h.starts_with("HTTP/1.1 200")),
        "{resp}"
    );
}

#[tokio::test]
async fn a_worker_slower_than_header_timeout_but_within_upstream_timeout_answers() {
    // HEADER_TIMEOUT (500 ms) times the client; the worker gets UPSTREAM_TIMEOUT (1000 ms).
    let r = Http::new().get(&cluster().url("/slow?ms=700")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["slept"], 700);
}

/// Reads one response with a `Content-Length` body from `s`.
#[tokio::test]
async fn a_keep_alive_connection_lives_while_used_and_closes_after_header_timeout_idle() {
    let mut s = TcpStream::connect(cluster().addr).await.unwrap();
    // Eight requests 150 ms apart: 1.2 s on one connection, more than twice HEADER_TIMEOUT, so
    // the idle deadline must start again after every response.
    for i in 0..8 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        s.write_all(b"GET /whoami HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let resp = read_response(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "request {i}: {resp}");
    }
    let idle = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(4), s.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "an idle connection must be closed after HEADER_TIMEOUT"
    );
    assert!(rest.is_empty(), "nothing after the last response: {rest:?}");
    assert!(
        idle.elapsed() >= Duration::from_millis(450),
        "closed after {:?}, before HEADER_TIMEOUT (500 ms)",
        idle.elapsed()
    );
}

#[tokio::test]
async fn a_response_streamed_for_longer_than_header_timeout_is_not_cut() {
    // 150 pieces 5 ms apart: at least 750 ms of streaming, past HEADER_TIMEOUT, which must not
    // run while a response is still going out.
    let resp = raw(b"GET /chunks?n=150 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    let (head, body) = resp.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let expected: String = (0..150).map(|i| format!("piece {i}\n")).collect();
    assert_eq!(dechunk(body), expected);
}

#[tokio::test]
async fn a_websocket_stays_on_one_worker_for_its_life() {
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", cluster().addr))
        .await
        .expect("websocket handshake through the edge");
    let worker = resp
        .headers()
        .get("x-worker-id")
        .and_then(|v| v.to_str().ok())
        .expect("handshake names the worker")
        .to_string();
    for i in 0..5 {
        ws.send(Message::text(format!("msg {i}"))).await.unwrap();
        let reply = ws.next().await.expect("a reply").expect("a message");
        assert_eq!(
            reply.into_text().unwrap().as_str(),
            format!("worker {worker}: msg {i}")
        );
    }
    ws.close(None).await.unwrap();
}
