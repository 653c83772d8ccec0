//! Redis servers and Sentinels for tests: a primary, replicas of it, and Sentinels watching it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, die_with_parent, free_port};

/// One inline command to `port`, and the first line of the reply (`+PONG`, `:1`, `$5` …).
/// Enough for readiness checks and `INFO`-free admin; tests use a real client for data.
pub fn command(port: u16, cmd: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line.trim_end().to_string())
}

/// `redis-cli -p PORT args…`: the whole reply as text (`INFO`, `SENTINEL …`); empty if it
/// could not connect.
pub fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The `field:value` of an `INFO` reply, parsed.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_string)
}

/// A `redis-server` or `redis-sentinel` process, SIGKILLed on drop.
pub struct RedisProcess {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisProcess {
    /// A primary with no persistence.
    pub fn primary() -> Self {
        Self::server(&[])
    }

    /// A replica of the server on `primary`.
    pub fn replica_of(primary: u16) -> Self {
        Self::server(&["--replicaof", "127.0.0.1", &primary.to_string()])
    }

    fn server(extra: &[&str]) -> Self {
        let dir = TempDir::new("redis");
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra);
        Self::spawn(cmd, port, dir, "redis-server")
    }

    /// A Sentinel watching the primary on `primary` as `name`, with a quorum of `quorum`,
    /// declaring it down after `down_after_ms` without an answer.
    pub fn sentinel(primary: u16, name: &str, quorum: u32, down_after_ms: u64) -> Self {
        let dir = TempDir::new("sentinel");
        let port = free_port();
        // Sentinel rewrites its file as it learns the topology, so each has its own copy.
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {name} 127.0.0.1 {primary} {quorum}\n\
                 sentinel down-after-milliseconds {name} {down_after_ms}\n\
                 sentinel failover-timeout {name} 2000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let mut cmd = Command::new("redis-sentinel");
        cmd.arg(&conf);
        Self::spawn(cmd, port, dir, "redis-sentinel")
    }

    fn spawn(mut cmd: Command, port: u16, dir: TempDir, name: &str) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(dir.path().join("log")).expect("create a log file"),
            ))
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}; is it installed?"));
        let mut process = Self {
            port,
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while command(port, "PING").as_deref() != Some("+PONG") {
            if let Some(Ok(Some(status))) = process.child.as_mut().map(|c| c.try_wait()) {
                panic!("{name} exited at start ({status}):\n{}", process.log());
            }
            assert!(Instant::now() < deadline, "{name} on {port} not answering");
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// SIGKILL now, and wait for it: a crash, not a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
