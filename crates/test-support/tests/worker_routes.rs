//! The routes `common` gives every lesson's workers (`/download`, `/echo`, `/slow`, `/ws`), each
//! through a real cluster's edge, in both dispatch modes, bounds and bad input included.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use test_support::{Http, SharedCluster, read_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

static PROXY: OnceLock<SharedCluster> = OnceLock::new();
static HANDOFF: OnceLock<SharedCluster> = OnceLock::new();

fn proxy() -> SharedCluster {
    SharedCluster::get(
        &PROXY,
        env!("CARGO_BIN_EXE_bare"),
        &[("WORKERS", "2"), ("MAX_BODY_SIZE", "4M")],
    )
}

fn handoff() -> SharedCluster {
    SharedCluster::get(
        &HANDOFF,
        env!("CARGO_BIN_EXE_bare"),
        &[("WORKERS", "2"), ("DISPATCH", "handoff")],
    )
}

/// What `/download` sends: `0123456789abcdef` repeated.
fn pattern(n: usize) -> String {
    "0123456789abcdef".chars().cycle().take(n).collect()
}

async fn download_is_exact(c: SharedCluster) {
    let http = Http::new();
    for n in [0usize, 1, 65_535, 65_536, 65_537, 3 << 20] {
        let r = http.get(&c.url(&format!("/download?bytes={n}"))).await;
        assert_eq!(r.status, 200, "bytes={n}: {}", r.body);
        assert_eq!(r.header("content-length"), n.to_string(), "bytes={n}");
        assert_eq!(r.body.len(), n, "bytes={n}");
        assert!(
            r.body == pattern(n),
            "bytes={n}: the body is not the pattern"
        );
    }
}

#[tokio::test]
async fn download_sends_exactly_the_bytes_asked_for() {
    download_is_exact(proxy()).await;
}

#[tokio::test]
async fn download_works_on_a_handed_off_connection() {
    download_is_exact(handoff()).await;
}

#[tokio::test]
async fn download_refuses_bad_and_oversized_sizes() {
    let http = Http::new();
    for q in [
        "",
        "?bytes=",
        "?bytes=abc",
        "?bytes=-1",
        "?bytes=1073741825",
    ] {
        let r = http.get(&proxy().url(&format!("/download{q}"))).await;
        assert_eq!(r.status, 400, "/download{q}: {}", r.body);
        assert_eq!(r.json()["error"], "bad_request", "/download{q}");
    }
}

#[tokio::test]
async fn a_large_download_streams_through_the_edge() {
    // 128 MiB is far more than the worker's or the master's memory grows by while it is sent:
    // read it at the client's pace, counting bytes, and check both stayed small.
    let n: u64 = 128 << 20;
    let mut s = TcpStream::connect(proxy().addr).await.unwrap();
    s.write_all(
        format!("GET /download?bytes={n} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let master = proxy().pid;
    let mut peak_kb = 0;
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read = tokio::time::timeout_at(deadline.into(), s.read(&mut buf))
            .await
            .expect("the download finished within 60 s")
            .unwrap();
        if read == 0 {
            break;
        }
        total += read as u64;
        if total % (16 << 20) < read as u64 {
            peak_kb = peak_kb.max(rss(master));
        }
    }
    // The head, then exactly n bytes.
    assert!(
        total > n && total < n + 1024,
        "read {total} bytes for a {n}-byte body"
    );
    assert!(
        peak_kb < 100 * 1024,
        "the master's RSS reached {peak_kb} kB during a {n}-byte download: it buffered"
    );
}

#[tokio::test]
async fn echo_answers_the_body_it_was_sent() {
    let http = Http::new();
    let body: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let r = http
        .send(
            "POST",
            &proxy().url("/echo"),
            &[("content-type", "text/plain")],
            &body,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "text/plain");
    assert!(
        r.body == body,
        "echoed {} bytes of {}",
        r.body.len(),
        body.len()
    );
    let r = http
        .send("POST", &proxy().url("/echo"), &[], "")
        .await
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, ""));
}

#[tokio::test]
async fn echo_streams_a_chunked_body_back() {
    let mut s = TcpStream::connect(proxy().addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    s.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let resp = String::from_utf8_lossy(&out);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    assert!(body.contains("hello") && body.contains("world"), "{resp}");
}

#[tokio::test]
async fn echo_refuses_a_get() {
    let r = Http::new().get(&proxy().url("/echo")).await;
    assert_eq!(r.status, 405, "{}", r.body);
}

#[tokio::test]
async fn slow_answers_after_the_time_asked_and_refuses_too_long() {
    let http = Http::new();
    let t0 = Instant::now();
    let r = http.get(&proxy().url("/slow?ms=200")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(r.json()["slept"], 200);
    assert_eq!(r.json()["worker"].to_string(), r.header("x-worker-id"));
    for q in ["?ms=60001", "?ms=x", ""] {
        let r = http.get(&proxy().url(&format!("/slow{q}"))).await;
        assert_eq!(r.status, 400, "/slow{q}: {}", r.body);
    }
}

#[tokio::test]
async fn slow_requests_overlap_on_one_worker() {
    // 20 at once on two single-threaded workers finish in about one sleep, not ten.
    let http = Http::new();
    let t0 = Instant::now();
    let replies = futures_util::future::join_all((0..20).map(|_| {
        let http = http.clone();
        async move { http.get(&proxy().url("/slow?ms=300")).await }
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
}

async fn websocket_echoes(c: SharedCluster) {
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", c.addr))
        .await
        .expect("websocket handshake through the edge");
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        ws.send(Message::text(format!("msg {i}"))).await.unwrap();
        let reply = ws.next().await.expect("a reply").expect("a message");
        assert_eq!(reply, Message::text(format!("msg {i}")));
    }
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    let reply = ws.next().await.expect("a reply").expect("a message");
    assert_eq!(reply, Message::binary(big));
    ws.close(None).await.unwrap();
    // The close handshake completes: the worker answers it and the stream ends.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the close handshake did not complete");
}

#[tokio::test]
async fn websocket_echoes_text_and_binary_through_the_master() {
    websocket_echoes(proxy()).await;
    // The edge names the worker on the handshake, so the socket was the master's to splice.
    let (_, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy().addr))
        .await
        .unwrap();
    assert!(resp.headers().contains_key("x-worker-id"), "{resp:?}");
}

#[tokio::test]
async fn websocket_echoes_on_a_handed_off_connection() {
    websocket_echoes(handoff()).await;
}

#[tokio::test]
async fn websocket_refuses_a_message_over_the_limit() {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy().addr))
        .await
        .unwrap();
    // The worker hangs up rather than echo it. It may do so while the message is still being
    // written (the worker owns the socket once the master has handed it over, and refuses as soon
    // as the frame's header says how long it is): a send cut short is that same refusal.
    let sent = ws.send(Message::binary(vec![0u8; (1 << 20) + 1])).await;
    if sent.is_ok() {
        let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the worker reacted within 5 s");
        assert!(
            !matches!(got, Some(Ok(Message::Binary(_)))),
            "an oversized message was echoed"
        );
    }
    // Only that socket was dropped: the next one is echoed as usual.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy().addr))
        .await
        .unwrap();
    ws.send(Message::text("still here")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echoed within 5 s");
    assert_eq!(got.unwrap().unwrap(), Message::text("still here"));
}

/// Opens `/ws` over a raw socket (the handshake by hand), in `cluster`'s dispatch mode.
async fn raw_websocket(cluster: SharedCluster) -> TcpStream {
    let mut s = TcpStream::connect(cluster.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed mid-head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

#[tokio::test]
async fn a_refused_websocket_message_gets_a_close_frame_that_says_why() {
    for cluster in [proxy(), handoff()] {
        // A masked binary frame announcing 2 MiB (over the 1 MiB limit), with only a few bytes of
        // it sent: the worker refuses on the header, and with nothing unread left in its socket
        // it can close cleanly, so its close frame arrives.
        let mut s = raw_websocket(cluster).await;
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&(2u64 << 20).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend_from_slice(&[0; 16]);
        s.write_all(&frame).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the worker hung up within 5 s");
        // An unmasked close frame whose payload starts with the code, 1009 (message too big).
        assert!(got.len() >= 4, "a close frame: {got:?}");
        assert_eq!(got[0], 0x88, "a final close frame: {got:?}");
        assert_eq!(u16::from_be_bytes([got[2], got[3]]), 1009, "{got:?}");

        // Text that is not UTF-8: 1007.
        let mut s = raw_websocket(cluster).await;
        let payload = [0xff, 0xfe];
        let mask = [9, 8, 7, 6];
        let mut frame = vec![0x81, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        s.write_all(&frame).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the worker hung up within 5 s");
        assert!(got.len() >= 4 && got[0] == 0x88, "a close frame: {got:?}");
        assert_eq!(u16::from_be_bytes([got[2], got[3]]), 1007, "{got:?}");

        // A frame of a reserved opcode (0x3) is not WebSocket: 1002.
        let mut s = raw_websocket(cluster).await;
        s.write_all(&[0x83, 0x80, 1, 2, 3, 4]).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the worker hung up within 5 s");
        assert!(got.len() >= 4 && got[0] == 0x88, "a close frame: {got:?}");
        assert_eq!(u16::from_be_bytes([got[2], got[3]]), 1002, "{got:?}");
    }
}

#[tokio::test]
async fn a_plain_upgrade_without_websocket_headers_is_refused() {
    // `Upgrade: websocket` without the handshake's key and version: the worker says no, and the
    // edge passes its answer on instead of switching protocols.
    let mut s = TcpStream::connect(proxy().addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let resp = read_response(&mut s).await;
    assert!(!resp.starts_with("HTTP/1.1 101"), "{resp}");
    assert!(resp.starts_with("HTTP/1.1 4"), "{resp}");
}
