//! Forged session ids over raw TCP, in both dispatch modes: ids naming slots that do not exist,
//! a bad secret, a 5,000-character id. Each gets a 200 with a fresh session, never a 5xx.

use std::sync::OnceLock;
use std::time::Duration;

use test_support::SharedCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_sticky-sessions");

static PROXY: OnceLock<SharedCluster> = OnceLock::new();
static HANDOFF: OnceLock<SharedCluster> = OnceLock::new();

fn clusters() -> [(&'static str, SharedCluster); 2] {
    [
        (
            "proxy",
            SharedCluster::get(&PROXY, BIN, &[("WORKERS", "2")]),
        ),
        (
            "handoff",
            SharedCluster::get(&HANDOFF, BIN, &[("WORKERS", "2"), ("DISPATCH", "handoff")]),
        ),
    ]
}

/// Sends raw bytes and reads until the server closes or 5 s pass.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn forged_session_ids_get_a_fresh_session_never_a_5xx() {
    let hex = "0123456789abcdef0123456789abcdef";
    let forged = [
        format!("999.{hex}"),
        format!("0.{hex}"),
        "1.bad".to_string(),
        "1.zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz".to_string(),
        format!("18446744073709551616.{hex}"),
        format!("-1.{hex}"),
        "7".repeat(5_000),
        format!("1.{}", "a".repeat(5_000)),
    ];
    for (mode, c) in clusters() {
        for id in &forged {
            let req = format!(
                "GET /session HTTP/1.1\r\nHost: t\r\nCookie: sessionId={id}\r\nConnection: close\r\n\r\n"
            );
            let reply = raw(c.addr, req.as_bytes()).await;
            let short = &id[..id.len().min(40)];
            assert!(
                reply.starts_with("HTTP/1.1 200"),
                "{mode} {short}: {reply:.400}"
            );
            let minted = reply
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("set-cookie: sessionid=")
                        .map(str::to_string)
                })
                .unwrap_or_else(|| panic!("{mode} {short}: no fresh session: {reply:.400}"));
            assert!(
                !minted.starts_with(&id.to_ascii_lowercase()),
                "{mode} {short}: the forged id was adopted"
            );
            assert!(
                reply.contains("\"requestCount\":1"),
                "{mode} {short}: a fresh session: {reply:.600}"
            );
        }
        let ok = raw(
            c.addr,
            b"GET /session HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{mode}: {ok:.300}");
    }
}
