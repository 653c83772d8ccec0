//! Helpers shared by this crate's integration tests: cookie jars, the many-jars run, a private
//! redis-server, and running the binary when it is expected to exit.

#![allow(dead_code)] // Each test file uses a different subset.

use std::collections::BTreeMap;
use std::process::ExitStatus;

use futures_util::StreamExt;
use test_support::Http;

pub const BIN: &str = env!("CARGO_BIN_EXE_sticky-sessions");

pub use test_support::jar::{Jar, set_session};

/// What one jar saw over its requests to `/session`.
#[derive(Debug, Clone)]
pub struct JarRun {
    pub workers: Vec<u64>,
    pub cookies: Vec<Option<String>>,
    pub counts: Vec<u64>,
    pub error: Option<String>,
}

impl JarRun {
    /// One worker, one session id on every response, and counts 1, 2, 3, …
    pub fn kept_its_session(&self) -> bool {
        let n = self.counts.len() as u64;
        self.error.is_none()
            && self.workers.windows(2).all(|w| w[0] == w[1])
            && self
                .cookies
                .iter()
                .all(|c| c.is_some() && *c == self.cookies[0])
            && self.counts == (1..=n).collect::<Vec<_>>()
    }
}

/// `jars` cookie jars, each from its own client IP, each making `requests` sequential requests to
/// `/session`; at most `in_flight` jars at a time.
pub async fn run_jars(base: &str, jars: usize, requests: usize, in_flight: usize) -> Vec<JarRun> {
    let http = Http::new();
    futures_util::stream::iter(0..jars)
        .map(|i| {
            let mut jar = Jar::from_ip(
                &http,
                format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
            );
            let url = format!("{base}/session");
            async move {
                let mut run = JarRun {
                    workers: vec![],
                    cookies: vec![],
                    counts: vec![],
                    error: None,
                };
                for _ in 0..requests {
                    match jar.send("GET", &url, &[], "").await {
                        Ok(r) if r.status == 200 => {
                            let j = r.json();
                            run.workers.push(j["workerId"].as_u64().unwrap_or(0));
                            run.counts
                                .push(j["session"]["requestCount"].as_u64().unwrap_or(0));
                            run.cookies.push(set_session(&r));
                        }
                        Ok(r) => run.error = Some(format!("status {}: {}", r.status, r.body)),
                        Err(e) => run.error = Some(e),
                    }
                    if run.error.is_some() {
                        break;
                    }
                }
                run
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await
}

/// Asserts every jar kept its session and returns how many jars each worker served.
pub fn assert_no_session_lost(runs: &[JarRun]) -> BTreeMap<u64, usize> {
    let lost: Vec<&JarRun> = runs.iter().filter(|r| !r.kept_its_session()).collect();
    assert!(
        lost.is_empty(),
        "{} of {} jars lost their session; first few: {:#?}",
        lost.len(),
        runs.len(),
        &lost[..lost.len().min(3)]
    );
    let mut per_worker = BTreeMap::new();
    for r in runs {
        *per_worker.entry(r.workers[0]).or_insert(0) += 1;
    }
    per_worker
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes (test-support's `eventually_async`).
#[allow(
    unused_imports,
    reason = "each test binary uses a different part of this module"
)]
pub use test_support::eventually_async as poll;

#[allow(unused_imports, reason = "only the Redis tests start one")]
pub use test_support::redis::RedisServer;

/// Runs the binary expecting it to exit by itself within 10 s (it is killed otherwise).
pub fn run_to_exit(env: &[(&str, &str)]) -> (ExitStatus, String) {
    test_support::run_to_exit(BIN, env)
}

/// A WebSocket to `addr`'s `/ws` carrying the session cookie `cookie`, and the handshake's answer.
pub async fn websocket_with_session(
    addr: std::net::SocketAddr,
    cookie: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "cookie",
        format!("sessionId={cookie}").parse().expect("header"),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket")
}
