//! Helpers for integration tests that run real cluster binaries.
//!
//! [`ClusterProcess::start`] runs a lesson's binary on `127.0.0.1:0`, waits for its banner, and
//! learns the port from it. Dropping it SIGKILLs the master and every worker it started, so a
//! failing test leaves no process behind. If the test is panicking, the drop prints what the
//! cluster wrote to stderr, which is usually the explanation.
//!
//! [`Http`] is a small keep-alive client over hyper for the tests' requests. [`systemd`] plays
//! the service manager (notify socket, socket activation); [`tls`] makes a certificate and
//! speaks HTTPS with a client that trusts only it.

pub mod services;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub mod jar;
pub mod redis;
pub mod systemd;
pub mod tls;

/// How long a cluster may take to print its banner.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many stderr lines are kept for the failure report.
const STDERR_KEEP: usize = 200;

/// A running cluster binary, killed on drop.
pub struct ClusterProcess {
    child: Child,
    /// The edge's address.
    pub addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    /// Lines read while waiting for the banner, kept for later [`ClusterProcess::wait_line`] calls.
    backlog: VecDeque<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    status: Option<ExitStatus>,
}

impl ClusterProcess {
    /// Starts `bin` with `env` (plus `PORT=0`, `HOST=127.0.0.1` unless given) and waits for its
    /// banner line `… listening on http://ADDR`.
    pub fn start(bin: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(bin, env, |_| {})
    }

    /// [`ClusterProcess::start`], with `configure` applied to the command before it is spawned:
    /// arguments, a wrapper program, another `pre_exec` hook (for a test that passes a socket).
    pub fn start_with(
        bin: &str,
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let mut cmd = Command::new(bin);
        cmd.env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // If the test process dies without running our Drop, the kernel kills the master (and the
        // master's death kills its workers). Note it fires when the spawning *thread* exits, which is
        // why a shared cluster is started from a thread that lives as long as the test binary.
        // SAFETY: prctl is async-signal-safe and the hook allocates nothing.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL, 0, 0, 0) == -1
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        configure(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let sink = stderr.clone();
        let err_pipe = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                let mut buf = sink.lock().unwrap_or_else(|p| p.into_inner());
                if buf.len() == STDERR_KEEP {
                    buf.pop_front();
                }
                buf.push_back(line);
            }
        });
        let mut me = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
            backlog: VecDeque::new(),
            stderr,
            status: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let banner = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match me.lines.recv_timeout(left) {
                Ok(line) if line.contains("listening on http://") => break line,
                // A TLS edge (`TLS_CERT`) prints its https:// address; the address is the same.
                Ok(line) if line.contains("listening on https://") => break line,
                Ok(line) => me.backlog.push_back(line),
                Err(_) => panic!(
                    "{bin} printed no banner within {START_TIMEOUT:?}; stderr:\n{}",
                    me.stderr()
                ),
            }
        };
        let url = banner
            .split("listening on ")
            .nth(1)
            .map(|rest| {
                rest.trim_start_matches("https://")
                    .trim_start_matches("http://")
            })
            .and_then(|rest| rest.split_whitespace().next())
            .expect("banner has an address");
        me.addr = url.parse().expect("banner address parses");
        me
    }

    /// `http://ADDR` plus `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://ADDR`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the master.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("signal the master");
    }

    /// The next stdout line matching `pred` within `timeout`; lines before it are consumed.
    pub fn wait_line(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        while let Some(line) = self.backlog.pop_front() {
            if pred(&line) {
                return Some(line);
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Every stdout line read so far and not yet consumed, without waiting.
    pub fn lines_so_far(&mut self) -> Vec<String> {
        let mut out: Vec<String> = self.backlog.drain(..).collect();
        out.extend(self.lines.try_iter());
        out
    }

    /// Waits up to `timeout` for the master to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the cluster wrote to stderr so far (the last lines).
    pub fn stderr(&self) -> String {
        let buf = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        buf.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// The pids of the master's live child processes (its workers).
    pub fn children(&self) -> Vec<u32> {
        children_of(self.child.id())
    }
}

/// A cluster shared by every test in one file: started once, from a thread that lives as long as
/// the test binary, and killed with it (see [`ClusterProcess::start`]).
#[derive(Debug, Clone, Copy)]
pub struct SharedCluster {
    /// The edge's address.
    pub addr: SocketAddr,
    /// The master's pid.
    pub pid: u32,
}

impl SharedCluster {
    /// Starts the cluster on first use; later calls return the same one.
    pub fn get(
        cell: &'static std::sync::OnceLock<SharedCluster>,
        bin: &'static str,
        env: &'static [(&'static str, &'static str)],
    ) -> SharedCluster {
        *cell.get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let cluster = ClusterProcess::start(bin, env);
                let _ = tx.send(SharedCluster {
                    addr: cluster.addr,
                    pid: cluster.pid(),
                });
                // Keep the cluster (and this thread, which its death signal is tied to) alive.
                loop {
                    std::thread::park();
                }
            });
            rx.recv().expect("shared cluster started")
        })
    }

    /// `http://ADDR` plus `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The outcome of [`load`].
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Requests answered 2xx.
    pub ok: u64,
    /// The first few failures (status or transport error), and how many there were.
    pub failures: Vec<String>,
    /// All failures.
    pub failed: u64,
}

/// Runs `connections` concurrent GET loops against `url` for `duration`; a failure is anything but 2xx.
pub async fn load(http: &Http, url: &str, connections: usize, duration: Duration) -> LoadReport {
    let deadline = tokio::time::Instant::now() + duration;
    load_while(http, url, connections, move || {
        tokio::time::Instant::now() < deadline
    })
    .await
    .0
}

/// Runs `connections` concurrent GET loops against `url` until `stop` is set (the caller bounds
/// it); a failure is anything but 2xx. Also reports the slowest request.
pub async fn load_until(
    http: &Http,
    url: &str,
    connections: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (LoadReport, Duration) {
    use std::sync::atomic::Ordering;
    load_while(http, url, connections, move || {
        !stop.load(Ordering::Relaxed)
    })
    .await
}

/// GET loops against a URL in the background until [`BackgroundLoad::finish`]: the load a chaos
/// test keeps up while it breaks the cluster.
pub struct BackgroundLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(LoadReport, Duration)>,
}

impl BackgroundLoad {
    /// Starts `connections` loops against `url`.
    pub fn start(url: String, connections: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { load_until(&Http::new(), &url, connections, stop).await }
        });
        Self { stop, task }
    }

    /// Stops the loops; what they saw and the slowest request.
    pub async fn finish(self) -> (LoadReport, Duration) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// `connections` GET loops that go on while `going()` says so: the report and the slowest request.
async fn load_while(
    http: &Http,
    url: &str,
    connections: usize,
    going: impl Fn() -> bool + Clone + Send + 'static,
) -> (LoadReport, Duration) {
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (http, url, going) = (http.clone(), url.to_string(), going.clone());
        tasks.push(tokio::spawn(async move {
            let mut report = LoadReport::default();
            let mut worst = Duration::ZERO;
            while going() {
                let started = Instant::now();
                let outcome = http.send("GET", &url, &[], "").await;
                worst = worst.max(started.elapsed());
                match outcome {
                    Ok(r) if (200..300).contains(&r.status) => report.ok += 1,
                    Ok(r) => {
                        report.failed += 1;
                        report.failures.push(format!("{}: {}", r.status, r.body));
                    }
                    Err(e) => {
                        report.failed += 1;
                        report.failures.push(e);
                    }
                }
            }
            (report, worst)
        }));
    }
    let mut total = LoadReport::default();
    let mut worst = Duration::ZERO;
    for t in tasks {
        if let Ok((r, w)) = t.await {
            total.ok += r.ok;
            total.failed += r.failed;
            total.failures.extend(r.failures.into_iter().take(5));
            worst = worst.max(w);
        }
    }
    (total, worst)
}

/// Runs `bin` with `PORT=0` and `env` until it exits by itself within 10 s (it is killed, and the
/// test fails, otherwise): its exit status and what it wrote to stderr. For settings that must be
/// refused at start.
pub fn run_to_exit(bin: &str, env: &[(&str, &str)]) -> (ExitStatus, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(bin)
        .env("PORT", "0")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the binary");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the binary did not exit with env {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut err);
    }
    (status, err)
}

/// Each `(variable, bad value)` makes `bin` exit with status 2 and a message naming the variable.
/// `base` is set first, for every run.
pub fn assert_bad_settings_exit_2(bin: &str, base: &[(&str, &str)], cases: &[(&str, &str)]) {
    for &(var, value) in cases {
        let mut env = base.to_vec();
        env.push((var, value));
        let (status, stderr) = run_to_exit(bin, &env);
        assert_eq!(status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(var),
            "{var}={value}: stderr does not name it: {stderr}"
        );
    }
}

/// Sends `n` GETs to `url`, `concurrency` at a time, and returns the ones that did not answer 200
/// (the status, or the transport error): empty means every request succeeded.
pub async fn send_many(
    http: &Http,
    url: &str,
    n: usize,
    concurrency: usize,
) -> Vec<Result<u16, String>> {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..n)
        .map(|_| async move { http.send("GET", url, &[], "").await.map(|r| r.status) })
        .buffer_unordered(concurrency)
        .filter(|r| std::future::ready(!matches!(r, Ok(200))))
        .collect()
        .await
}

/// Reads one response with a `Content-Length` body from a raw connection, byte by byte up to the
/// end of the head so nothing after the response is consumed, and returns head and body as text.
pub async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.unwrap();
        assert_eq!(
            n,
            1,
            "connection closed mid-head: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// The live (not zombie) children of `pid`, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(list) = std::fs::read_to_string(path) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out.retain(|p| is_alive(*p));
    out.sort_unstable();
    out
}

/// True if `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The async twin of [`eventually`]: awaits `cond()` every 20 ms until it is true or `timeout` passes.
pub async fn eventually_async<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let workers = self.children();
            let _ = self.child.kill();
            for pid in workers {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- cluster stderr (last lines) ----\n{}", self.stderr());
        }
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// The longest any one request of a test may take, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A keep-alive HTTP/1.1 client.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// A client with its own connection pool.
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request; `Err` carries the transport error as text.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Reply, String> {
        let mut req = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        // A server that never answers fails the test instead of hanging the suite.
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "{method} {url}: no answer within {REQUEST_TIMEOUT:?}"
                ))
            })
    }

    /// `GET /health` on `base` (e.g. `http://127.0.0.1:1234`), parsed.
    pub async fn health(&self, base: &str) -> serde_json::Value {
        self.get(&format!("{base}/health")).await.json()
    }

    /// The pids of the Ready workers, by slot, from `/health`.
    pub async fn ready_pids(&self, base: &str) -> Vec<(u64, u64)> {
        let h = self.health(base).await;
        h["workers"]["slots"]
            .as_array()
            .map(|slots| {
                slots
                    .iter()
                    .filter(|s| s["state"] == "ready")
                    .filter_map(|s| Some((s["id"].as_u64()?, s["pid"].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Each slot's `(id, state, pid)` from `/health`.
    pub async fn slot_states(&self, base: &str) -> Vec<(u64, String, Option<u64>)> {
        let h = self.health(base).await;
        h["workers"]["slots"]
            .as_array()
            .map(|slots| {
                slots
                    .iter()
                    .filter_map(|s| {
                        Some((
                            s["id"].as_u64()?,
                            s["state"].as_str()?.to_string(),
                            s["pid"].as_u64(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `GET url`, panicking on a transport error.
    pub async fn get(&self, url: &str) -> Reply {
        self.send("GET", url, &[], "")
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }
}

/// A tool the tests need, or a failure saying how to get it: tests never skip silently.
pub fn require_tool(name: &str, package: &str) -> std::path::PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: run scripts/test, which installs it \
             (Debian package `{package}`), or `apt-get install {package}`"
        )
    })
}

/// Asserts that `promtool check metrics` finds nothing to say about `text`: names, units,
/// HELP/TYPE lines and histogram shapes are all as Prometheus wants them.
pub fn assert_promtool_clean(text: &str) {
    use std::io::Write;
    let promtool = require_tool("promtool", "prometheus");
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start promtool");
    {
        let mut stdin = child.stdin.take().expect("promtool stdin");
        stdin.write_all(text.as_bytes()).expect("feed promtool");
    }
    let out = child.wait_with_output().expect("promtool finishes");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics said:\n{said}\non:\n{text}"
    );
}
