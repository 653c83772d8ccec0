//! WebSockets through the master (proxy dispatch). On plain TCP the master routes the handshake and
//! hands the client's connection to the chosen worker (`edge::upgrade`); over TLS, or with
//! `WS_HANDOFF=off`, it splices the client's socket to the worker's Unix socket. Either way every
//! size of message crosses whole, bytes sent right behind a head (or behind requests the master
//! answered first on the same connection) are not lost, a worker's refusal reaches the client as it
//! was sent, a handoff that fails falls back to the splice, and when either end goes, the other
//! end's socket is closed and the worker's count comes back down.

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use test_support::{ClusterProcess, Http, SharedCluster, eventually_async, read_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();

fn cluster() -> SharedCluster {
    SharedCluster::get(&CLUSTER, env!("CARGO_BIN_EXE_bare"), &[("WORKERS", "2")])
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A WebSocket through the edge, and the slot of the worker it reached.
async fn connect(addr: std::net::SocketAddr) -> (Ws, u64) {
    let (ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("websocket handshake through the edge");
    assert_eq!(resp.status(), 101);
    let worker = resp
        .headers()
        .get("x-worker-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("the edge names the worker on the handshake");
    (ws, worker)
}

/// Sends `msg` and returns the next message back, within 10 s: a splice that lost bytes fails
/// here instead of hanging the test.
async fn round_trip<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, msg: Message) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let len = msg.len();
    ws.send(msg).await.expect("send");
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap_or_else(|_| panic!("no echo of a {len}-byte message within 10 s"))
        .expect("a reply")
        .expect("a message")
}

/// The handshake of RFC 6455 §4.1, the key being the RFC's own example.
const HANDSHAKE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// A masked client text frame (RFC 6455 §5.2) of a short `payload`.
fn client_text_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads a response head byte by byte, so nothing behind it is consumed.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("a head within 5 s")
            .expect("read");
        assert_eq!(n, 1, "closed mid-head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("a text head")
}

#[tokio::test]
async fn messages_of_every_size_cross_the_master_whole() {
    let (mut ws, _) = connect(cluster().addr).await;
    // Around the frame header's length forms (125/126, 65535/65536), the edge's 64 KiB read and
    // past it, up to the worker's 1 MiB limit.
    for n in [
        0usize,
        1,
        125,
        126,
        65_535,
        65_536,
        65_537,
        200_001,
        1 << 20,
    ] {
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let reply = round_trip(&mut ws, Message::binary(data.clone())).await;
        assert!(
            reply == Message::binary(data),
            "{n} bytes sent, {} came back",
            reply.len()
        );
        let text = "é".repeat(n / 2);
        let reply = round_trip(&mut ws, Message::text(text.clone())).await;
        assert_eq!(reply, Message::text(text), "text of {n} bytes");
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn many_sockets_at_once_each_get_their_own_echoes_in_order() {
    let sockets = futures_util::future::join_all((0..20).map(|s| async move {
        let (mut ws, _) = connect(cluster().addr).await;
        for i in 0..50 {
            let msg = format!("socket {s} message {i}");
            let reply = round_trip(&mut ws, Message::text(msg.clone())).await;
            assert_eq!(reply, Message::text(msg));
        }
        ws.close(None).await.unwrap();
    }));
    tokio::time::timeout(Duration::from_secs(30), sockets)
        .await
        .expect("1,000 echoes over 20 sockets within 30 s");
}

#[tokio::test]
async fn a_frame_sent_right_behind_the_handshake_is_not_lost() {
    // Handshake and first frame in one write: the frame is read with the head, before the worker
    // has even answered, and must still reach it.
    let mut s = TcpStream::connect(cluster().addr).await.unwrap();
    let mut both = HANDSHAKE.to_vec();
    both.extend_from_slice(&client_text_frame(b"early"));
    s.write_all(&both).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The echo: an unmasked text frame of 5 bytes.
    let mut frame = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut frame))
        .await
        .expect("the echo within 5 s")
        .expect("read");
    assert_eq!(&frame, b"\x81\x05early", "{frame:?}");
}

#[tokio::test]
async fn a_worker_refusing_the_upgrade_answers_the_client_and_the_connection_goes_on() {
    // No Sec-WebSocket-Key: the worker refuses (400); an upgrade of a path the worker does not
    // have: 404. Either answer is passed on as it is, not as a 101, and the connection then
    // serves the next request (RFC 9110 §7.8: the upgrade simply did not happen).
    for (req, status) in [
        (
            &b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
            "HTTP/1.1 400",
        ),
        (
            b"GET /no-such-route HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            "HTTP/1.1 404",
        ),
    ] {
        let mut s = TcpStream::connect(cluster().addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let resp = read_response(&mut s).await;
        assert!(resp.starts_with(status), "{resp}");
        assert!(resp.to_ascii_lowercase().contains("x-worker-id:"), "{resp}");
        s.write_all(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let next = read_response(&mut s).await;
        assert!(next.starts_with("HTTP/1.1 200"), "{next}");
        assert!(next.ends_with("pong\n"), "{next}");
    }
}

/// The requests in flight at the master for worker slot `slot`, from `/health`.
async fn in_flight(http: &Http, base: &str, slot: u64) -> u64 {
    let health = http.health(base).await;
    health["workers"]["slots"]
        .as_array()
        .and_then(|slots| {
            slots
                .iter()
                .find(|s| s["id"].as_u64() == Some(slot))
                .and_then(|s| s["inFlight"].as_u64())
        })
        .unwrap_or_else(|| panic!("no inFlight for slot {slot} in {health}"))
}

/// The master's debug line for an upgrade whose connection left it for a worker.
const HANDED: &str = "upgrade handed to its worker";
/// The master's debug line for a handoff the worker's channel refused.
const HANDOFF_FAILED: &str = "upgrade handoff failed";
/// Logs what `edge::upgrade` decides, so a test can tell the handoff from the splice.
const SAY_HANDOFFS: (&str, &str) = ("RUST_LOG", "info,common::edge::upgrade=debug");

/// How many lines of the cluster's stderr so far contain `what`.
fn count_lines(c: &ClusterProcess, what: &str) -> usize {
    c.stderr().lines().filter(|l| l.contains(what)).count()
}

/// Whether `n` lines containing `what` were read off the cluster's stderr within 5 s (they are
/// read by another thread, a little after they are written).
async fn logged(c: &ClusterProcess, what: &str, n: usize) -> bool {
    eventually_async(Duration::from_secs(5), || {
        let seen = count_lines(c, what);
        async move { seen >= n }
    })
    .await
}

#[tokio::test]
async fn a_client_that_hangs_up_ends_its_handed_off_socket() {
    // The worker reports the connection closed, and the master's count for it comes down.
    let c = ClusterProcess::start(
        env!("CARGO_BIN_EXE_bare"),
        &[("WORKERS", "1"), SAY_HANDOFFS],
    );
    hang_up_and_count(&c).await;
    assert!(logged(&c, HANDED, 1).await, "{}", c.stderr());
    let handed = c
        .stderr()
        .lines()
        .find(|l| l.contains(HANDED))
        .map(str::to_owned);
    let handed = handed.unwrap_or_else(|| panic!("no handoff logged:\n{}", c.stderr()));
    assert!(handed.contains("slot=1"), "{handed}");
}

#[tokio::test]
async fn a_client_that_hangs_up_ends_its_splice() {
    // WS_HANDOFF=off: the master keeps the connection and splices it.
    let env = [("WORKERS", "1"), ("WS_HANDOFF", "off"), SAY_HANDOFFS];
    let c = ClusterProcess::start(env!("CARGO_BIN_EXE_bare"), &env);
    hang_up_and_count(&c).await;
    assert_eq!(count_lines(&c, HANDED), 0, "{}", c.stderr());
}

/// A socket counts as in flight to its worker while open, and no longer once its client left
/// without a close frame. A cluster of one worker, so no other test's sockets share its count.
async fn hang_up_and_count(c: &ClusterProcess) {
    let http = Http::new();
    let (mut ws, worker) = connect(c.addr).await;
    round_trip(&mut ws, Message::text("hello")).await;
    assert_eq!(
        in_flight(&http, &c.base(), worker).await,
        1,
        "the open socket"
    );
    // Gone without a close frame: the TCP connection simply closes.
    drop(ws);
    let down = eventually_async(Duration::from_secs(5), || {
        let (http, base) = (http.clone(), c.base());
        async move { in_flight(&http, &base, worker).await == 0 }
    })
    .await;
    assert!(
        down,
        "the master still counts the socket 5 s after its client left"
    );
}

#[tokio::test]
async fn a_keep_alive_connection_upgrades_after_requests_the_master_answered() {
    // Two requests, the handshake and a first frame, pipelined in one write: the master answers
    // both requests before the connection changes hands, and the frame reaches the worker.
    let c = ClusterProcess::start(
        env!("CARGO_BIN_EXE_bare"),
        &[("WORKERS", "2"), SAY_HANDOFFS],
    );
    let mut s = TcpStream::connect(c.addr).await.unwrap();
    let mut all = b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n".repeat(2);
    all.extend_from_slice(HANDSHAKE);
    all.extend_from_slice(&client_text_frame(b"after two"));
    s.write_all(&all).await.unwrap();
    for _ in 0..2 {
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut body = [0u8; 5];
        s.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"pong\n");
    }
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("x-worker-id:"), "{head}");
    let mut frame = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut frame))
        .await
        .expect("the echo within 5 s")
        .expect("read");
    assert_eq!(&frame, b"\x81\x09after two", "{frame:?}");
    assert!(logged(&c, HANDED, 1).await, "{}", c.stderr());
}

#[tokio::test]
async fn upgrades_a_stopped_worker_cannot_take_are_spliced_instead_of_lost() {
    // A stopped worker takes no handed-off connection: its channel fills (the kernel holds about
    // 200 KiB of datagrams, and each of these handshakes carries 8 KiB of padding), further
    // handoffs fail, and those upgrades are spliced. Once the worker runs again, every client has
    // its 101 and its echo.
    let c = ClusterProcess::start(
        env!("CARGO_BIN_EXE_bare"),
        &[("WORKERS", "1"), SAY_HANDOFFS],
    );
    let http = Http::new();
    let (_, pid) = http.ready_pids(&c.base()).await[0];
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("stop the worker");
    let sockets = 40;
    let clients: Vec<_> = (0..sockets)
        .map(|i| {
            let addr = c.addr;
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let text = format!("socket {i:02}");
                let pad = format!("X-Pad: {}\r\n\r\n", "p".repeat(8 << 10));
                let mut both = HANDSHAKE[..HANDSHAKE.len() - 2].to_vec();
                both.extend_from_slice(pad.as_bytes());
                both.extend_from_slice(&client_text_frame(text.as_bytes()));
                s.write_all(&both).await.unwrap();
                let head = tokio::time::timeout(Duration::from_secs(20), read_head(&mut s))
                    .await
                    .expect("a head");
                let mut frame = vec![0u8; 2 + text.len()];
                tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut frame))
                    .await
                    .expect("the echo within 20 s")
                    .expect("read");
                (head, frame, text)
            })
        })
        .collect();
    let failed = eventually_async(Duration::from_secs(10), || {
        let tried = count_lines(&c, HANDOFF_FAILED) + count_lines(&c, HANDED);
        async move { tried >= sockets }
    })
    .await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("resume the worker");
    assert!(failed, "not every upgrade was tried:\n{}", c.stderr());
    assert!(
        count_lines(&c, HANDOFF_FAILED) > 0 && count_lines(&c, HANDED) > 0,
        "expected some upgrades handed over (they wait in the queue) and some spliced:\n{}",
        c.stderr()
    );
    for client in clients {
        let (head, frame, text) = client.await.expect("a client");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(&frame[2..], text.as_bytes(), "{frame:?}");
    }
}

#[tokio::test]
async fn a_handed_off_handshake_reaches_the_worker_with_the_headers_the_splice_adds() {
    // The fixture's `/headers` answers a handshake with the headers it got (200, no upgrade): a
    // handed-over connection's request carries the client's address in X-Forwarded-For and its
    // answer names the worker, exactly as when the master keeps the connection.
    let req = b"GET /headers HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
X-Forwarded-For: 203.0.113.7\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let mut seen = Vec::new();
    for (setting, handed) in [("on", 1), ("off", 0)] {
        let env = [("WORKERS", "1"), ("WS_HANDOFF", setting), SAY_HANDOFFS];
        let c = ClusterProcess::start(env!("CARGO_BIN_EXE_fixture"), &env);
        let mut s = TcpStream::connect(c.addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let resp = read_response(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(
            resp.to_ascii_lowercase().contains("x-worker-id: 1\r\n"),
            "{resp}"
        );
        let body = resp.split("\r\n\r\n").nth(1).expect("a body");
        let headers: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(
            headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1",
            "WS_HANDOFF={setting}: {headers}"
        );
        assert!(logged(&c, HANDED, handed).await, "{}", c.stderr());
        assert_eq!(count_lines(&c, HANDED), handed, "{}", c.stderr());
        seen.push(headers["sec-websocket-key"].clone());
    }
    assert_eq!(
        seen[0], seen[1],
        "the handshake's own headers arrive either way"
    );
}

#[test]
fn a_bad_ws_handoff_setting_exits_2_naming_it() {
    test_support::assert_bad_settings_exit_2(
        env!("CARGO_BIN_EXE_bare"),
        &[("WORKERS", "1"), ("PORT", "0")],
        &[("WS_HANDOFF", "maybe"), ("WS_HANDOFF", "1")],
    );
}

#[tokio::test]
async fn a_worker_dying_mid_stream_closes_its_clients_socket() {
    let c = ClusterProcess::start(env!("CARGO_BIN_EXE_bare"), &[("WORKERS", "2")]);
    let http = Http::new();
    let (mut ws, worker) = connect(c.addr).await;
    round_trip(&mut ws, Message::text("hello")).await;
    let pid = http
        .ready_pids(&c.base())
        .await
        .into_iter()
        .find(|(slot, _)| *slot == worker)
        .map(|(_, pid)| pid)
        .expect("the worker's pid");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill the worker");
    // The client learns: its stream ends (or fails) instead of waiting forever.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the client's socket stayed open after its worker died"
    );
}

#[tokio::test]
async fn a_websocket_over_tls_is_spliced_as_well() {
    // The edge splices the client's TLS stream (not its TCP socket) to the worker's: messages
    // larger than a TLS record (16 KiB) and than the edge's read cross whole.
    let certs = test_support::tls::Certs::make("websocket");
    let tls_env = certs.env();
    let mut env = vec![("WORKERS", "1"), SAY_HANDOFFS];
    env.extend(tls_env.iter().map(|(k, v)| (*k, v.as_str())));
    let c = ClusterProcess::start(env!("CARGO_BIN_EXE_bare"), &env);
    let tls = test_support::tls::https_connect(c.addr, &certs.der).await;
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
        .await
        .expect("websocket handshake over TLS");
    assert_eq!(resp.status(), 101);
    for n in [5usize, 16_385, 100_000] {
        let data: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
        let reply = round_trip(&mut ws, Message::binary(data.clone())).await;
        assert!(reply == Message::binary(data), "{n} bytes over TLS");
    }
    ws.close(None).await.unwrap();
    assert_eq!(count_lines(&c, HANDED), 0, "{}", c.stderr());
}
