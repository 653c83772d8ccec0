//! More hostile input over raw TCP (issue 14's list, continued from `hostile.rs`): request
//! smuggling, a worker that frames its answers badly, 100,000 pipelined requests in one write,
//! 10,000 cookies, `Expect: 100-continue`, and a client that half-closes. Each case runs in both
//! dispatch modes where it applies, against clusters shared by the whole file. RELIABILITY.md
//! lists every case with the status it gets.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use test_support::SharedCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

static PROXY: OnceLock<SharedCluster> = OnceLock::new();
static HANDOFF: OnceLock<SharedCluster> = OnceLock::new();

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Proxy,
    Handoff,
}

const MODES: [Mode; 2] = [Mode::Proxy, Mode::Handoff];

fn cluster(mode: Mode) -> SharedCluster {
    match mode {
        Mode::Proxy => SharedCluster::get(
            &PROXY,
            FIXTURE,
            &[
                ("WORKERS", "2"),
                ("MAX_BODY_SIZE", "1M"),
                ("MAX_HEADER_SIZE", "16384"),
                ("HEADER_TIMEOUT", "800"),
                ("UPSTREAM_TIMEOUT", "2000"),
            ],
        ),
        Mode::Handoff => SharedCluster::get(
            &HANDOFF,
            FIXTURE,
            &[
                ("WORKERS", "2"),
                ("DISPATCH", "handoff"),
                ("MAX_BODY_SIZE", "1M"),
                ("MAX_HEADER_SIZE", "16384"),
                ("HEADER_TIMEOUT", "800"),
                ("UPSTREAM_TIMEOUT", "2000"),
            ],
        ),
    }
}

/// Sends raw bytes and reads until the server closes or 5 s pass: the reply, and whether the
/// server closed the connection (rather than the wait running out).
async fn raw_to(addr: std::net::SocketAddr, request: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A server that refuses early may close before all is written: what it answered still counts.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), read_all(&mut s, &mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

async fn raw(mode: Mode, request: &[u8]) -> (String, bool) {
    raw_to(cluster(mode).addr, request).await
}

/// Reads until EOF or an error (a reset after a refusal is an end too).
async fn read_all(s: &mut TcpStream, out: &mut Vec<u8>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until `out` holds `needle` (true), or EOF, an error or `wait` (false).
async fn read_until(s: &mut TcpStream, out: &mut Vec<u8>, needle: &[u8], wait: Duration) -> bool {
    let found = |out: &Vec<u8>| out.windows(needle.len()).any(|w| w == needle);
    let read = async {
        let mut buf = [0u8; 16 * 1024];
        while !found(out) {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    tokio::time::timeout(wait, read).await.unwrap_or(false)
}

/// The status codes of every response in `reply`, in order.
fn statuses(reply: &str) -> Vec<u16> {
    reply
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| reply.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// The master still serves a normal request after the case.
async fn still_serving_at(addr: std::net::SocketAddr, what: &str) {
    let (reply, _) = raw_to(
        addr,
        b"GET /whoami HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains("\"worker\""),
        "{what}: the next normal request: {reply}"
    );
}

async fn still_serving(mode: Mode) {
    still_serving_at(cluster(mode).addr, &format!("{mode:?}")).await;
}

/// A JSON body from a master route, over a fresh connection.
async fn get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (reply, _) = raw_to(addr, req.as_bytes()).await;
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {reply}"))
}

/// The tags of every `/smuggled` request any worker of the cluster served.
async fn smuggled(addr: std::net::SocketAddr) -> Vec<String> {
    let health = get_json(addr, "/health").await;
    let mut tags = Vec::new();
    for slot in health["workers"]["slots"].as_array().expect("slots") {
        let id = &slot["id"];
        let reply = get_json(addr, &format!("/fixture/ask?slot={id}")).await;
        for tag in reply["smuggled"].as_array().expect("smuggled tags") {
            tags.push(tag.as_str().unwrap_or_default().to_string());
        }
    }
    tags
}

// ---------------------------------------------------------------------------------------------
// 1. Request smuggling
// ---------------------------------------------------------------------------------------------

/// The Transfer-Encoding lines of each attack: the plain one (CL.TE and TE.CL) and the
/// obfuscations one server in a chain may read as chunked and another not.
const TE_LINES: [(&str, &str); 7] = [
    ("plain", "Transfer-Encoding: chunked"),
    ("space-before-colon", "Transfer-Encoding : chunked"),
    ("xchunked", "Transfer-Encoding: xchunked"),
    ("tab", "Transfer-Encoding:\tchunked"),
    (
        "chunked-then-identity",
        "Transfer-encoding: chunked\r\nTransfer-Encoding: identity",
    ),
    ("obs-fold-value", "Transfer-Encoding:\r\n chunked"),
    ("obs-fold-after", "X-Pad: a\r\n Transfer-Encoding: chunked"),
];

/// A request hidden in the body, that a server framing the body one way sees as the next
/// request on the connection.
fn hidden(tag: &str) -> String {
    format!("GET /smuggled?tag={tag} HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// The attacks for one Transfer-Encoding line: CL.TE (Content-Length covers the hidden request,
/// the chunked body ends before it) and TE.CL (Content-Length ends before the hidden request,
/// the chunked body carries it).
fn attacks(name: &str, te: &str) -> Vec<(String, Vec<u8>)> {
    let cl_te_tag = format!("{name}-cl-te");
    let body = format!("0\r\n\r\n{}", hidden(&cl_te_tag));
    let cl_te = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n{te}\r\n\r\n{body}",
        body.len()
    );
    let te_cl_tag = format!("{name}-te-cl");
    let inner = hidden(&te_cl_tag);
    let size = format!("{:x}\r\n", inner.len());
    let te_cl = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\n{te}\r\nContent-Length: {}\r\n\r\n{size}{inner}\r\n0\r\n\r\n",
        size.len()
    );
    vec![
        (cl_te_tag, cl_te.into_bytes()),
        (te_cl_tag, te_cl.into_bytes()),
    ]
}

#[tokio::test]
async fn smuggled_requests_never_reach_a_worker() {
    for mode in MODES {
        let mut tags = Vec::new();
        for (name, te) in TE_LINES {
            for (tag, attack) in attacks(name, te) {
                let (reply, closed) = raw(mode, &attack).await;
                let got = statuses(&reply);
                eprintln!("{mode:?} {tag}: {got:?} closed={closed}");
                // One answer, then the connection closed: nothing behind such a head is read.
                // With both Content-Length and chunked, RFC 9112 §6.3 lets a server refuse or
                // read the body as chunked, and either way close after answering.
                assert_eq!(got.len(), 1, "{mode:?} {tag}: {got:?}\n{reply}");
                assert!(
                    (400..=501).contains(&got[0]) || got[0] == 200,
                    "{mode:?} {tag}: {got:?}\n{reply}"
                );
                assert!(closed, "{mode:?} {tag}: the connection stays open: {reply}");
                tags.push(tag);
            }
        }
        // Obs-fold in a request without a body (RFC 9112 §5.2).
        let (reply, closed) = raw(
            mode,
            format!(
                "GET /whoami HTTP/1.1\r\nHost: t\r\nX-Fold: a\r\n b\r\n\r\n{}",
                hidden("obs-fold-get")
            )
            .as_bytes(),
        )
        .await;
        eprintln!("{mode:?} obs-fold-get: {:?} closed={closed}", statuses(&reply));
        assert_eq!(statuses(&reply), [400], "{mode:?}: {reply}");
        assert!(closed, "{mode:?}: {reply}");
        tags.push("obs-fold-get".into());

        let seen = smuggled(cluster(mode).addr).await;
        assert!(
            tags.iter().all(|t| !seen.contains(t)),
            "{mode:?}: a worker served a request the client never sent: {seen:?}"
        );
        still_serving(mode).await;
    }
}

#[tokio::test]
async fn the_smuggling_detector_sees_a_request_the_client_did_send() {
    // The control for the test above: a /smuggled request sent as itself reaches a worker, and
    // the cluster's workers report it.
    for mode in MODES {
        let tag = format!("control-{mode:?}");
        let (reply, _) = raw(
            mode,
            format!("GET /smuggled?tag={tag} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(smuggled(cluster(mode).addr).await.contains(&tag));
    }
}
