//! What both hostile-input test files share: the two clusters (one per dispatch mode, each shared
//! by the whole test binary), raw-TCP sends and reads, and the "still serving" check.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use test_support::SharedCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

static PROXY: OnceLock<SharedCluster> = OnceLock::new();
static HANDOFF: OnceLock<SharedCluster> = OnceLock::new();

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Proxy,
    Handoff,
}

pub const MODES: [Mode; 2] = [Mode::Proxy, Mode::Handoff];

pub fn cluster(mode: Mode) -> SharedCluster {
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
pub async fn raw_to(addr: std::net::SocketAddr, request: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A server that refuses early may close before all is written: what it answered still counts.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), read_all(&mut s, &mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

pub async fn raw(mode: Mode, request: &[u8]) -> (String, bool) {
    raw_to(cluster(mode).addr, request).await
}

/// Reads until EOF or an error (a reset after a refusal is an end too).
pub async fn read_all(s: &mut TcpStream, out: &mut Vec<u8>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until `out` holds `needle` (true), or EOF, an error or `wait` (false).
pub async fn read_until(
    s: &mut TcpStream,
    out: &mut Vec<u8>,
    needle: &[u8],
    wait: Duration,
) -> bool {
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
pub fn statuses(reply: &str) -> Vec<u16> {
    reply
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| reply.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// The master still serves a normal request after the case.
pub async fn still_serving_at(addr: std::net::SocketAddr, what: &str) {
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

pub async fn still_serving(mode: Mode) {
    still_serving_at(cluster(mode).addr, &format!("{mode:?}")).await;
}
