//! Helpers shared by this crate's integration tests: cookie jars, the many-jars run, a private
//! redis-server, and running the binary when it is expected to exit.

#![allow(dead_code)] // Each test file uses a different subset.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use test_support::{Http, Reply};

pub const BIN: &str = env!("CARGO_BIN_EXE_sticky-sessions");

/// The `sessionId` a response sets, if any.
pub fn set_session(reply: &Reply) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("sessionId="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

/// A client with one cookie, as curl's `-c`/`-b` keep it, and an optional client IP sent as
/// `X-Forwarded-For` (the test clusters trust 127.0.0.1 as a proxy, so each jar can be its own client).
#[derive(Clone)]
pub struct Jar {
    pub http: Http,
    pub cookie: Option<String>,
    pub ip: Option<String>,
}

impl Jar {
    pub fn new(http: &Http) -> Self {
        Self {
            http: http.clone(),
            cookie: None,
            ip: None,
        }
    }

    pub fn from_ip(http: &Http, ip: String) -> Self {
        Self {
            http: http.clone(),
            cookie: None,
            ip: Some(ip),
        }
    }

    /// Sends a request with the jar's cookie and keeps whatever cookie comes back.
    pub async fn send(
        &mut self,
        method: &str,
        url: &str,
        extra: &[(&str, &str)],
        body: &str,
    ) -> Result<Reply, String> {
        let cookie = self.cookie.as_ref().map(|c| format!("sessionId={c}"));
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(c) = &cookie {
            headers.push(("cookie", c));
        }
        if let Some(ip) = &self.ip {
            headers.push(("x-forwarded-for", ip));
        }
        let reply = self.http.send(method, url, &headers, body).await?;
        if let Some(id) = set_session(&reply) {
            self.cookie = Some(id);
        }
        Ok(reply)
    }

    pub async fn get(&mut self, url: &str) -> Reply {
        self.send("GET", url, &[], "")
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }
}

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

/// A redis-server of our own on a free port, with no persistence; SIGKILLed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// Starts one and waits until it answers PING. Panics with the fix if redis-server is missing.
    pub fn start() -> Self {
        for _attempt in 0..3 {
            // Ask the kernel for a free port, then hand it to redis-server; if another process takes
            // it in between, redis-server fails to bind and we try again with a new one.
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut cmd = Command::new("redis-server");
            cmd.args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe; if the test process dies, so does redis-server.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL, 0, 0, 0);
                    Ok(())
                });
            }
            let child = cmd.spawn().unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install it with: apt-get install -y redis-server")
            });
            let mut server = Self { child, port };
            if test_support::eventually(Duration::from_secs(5), || server.ping() || server.exited())
                && server.ping()
            {
                return server;
            }
        }
        panic!("redis-server did not start on a free port in 3 attempts");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary expecting it to exit by itself within 10 s (it is killed otherwise).
pub fn run_to_exit(env: &[(&str, &str)]) -> (ExitStatus, String) {
    test_support::run_to_exit(BIN, env)
}
