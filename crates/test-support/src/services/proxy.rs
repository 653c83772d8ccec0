//! nginx and HAProxy, run from the committed configurations in `deploy/`.
//!
//! A test does not write its own proxy configuration: it takes `deploy/nginx/nginx.conf` or
//! `deploy/haproxy/haproxy.cfg` and changes only what must differ on a test machine (the
//! addresses, one `server` line per instance, the pid, log and socket paths, and for a lesson
//! without `/health/ready` the check's path). Every replacement must find its target, so a change
//! to a committed file that the test would silently stop covering fails the test instead.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{TempDir, free_port};

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The `fail_timeout` of the committed `deploy/nginx/nginx.conf`: how long nginx leaves alone a
/// server it saw fail, even once it answers again (open-source nginx has no active checks).
pub fn nginx_fail_timeout() -> Duration {
    let conf = std::fs::read_to_string(deploy_dir().join("nginx/nginx.conf"))
        .expect("read deploy/nginx/nginx.conf");
    let secs: u64 = conf
        .split("fail_timeout=")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .expect("fail_timeout=<N>s in deploy/nginx/nginx.conf");
    Duration::from_secs(secs)
}

/// Replaces every line for which `matches` holds with `with(line)` (which may be several lines);
/// panics if no line matched.
fn replace_lines(
    text: &str,
    what: &str,
    matches: impl Fn(&str) -> bool,
    mut with: impl FnMut(&str) -> Option<String>,
) -> String {
    let mut found = false;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if matches(line.trim_start()) {
            found = true;
            if let Some(new) = with(line) {
                out.push_str(&new);
                out.push('\n');
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        found,
        "the committed configuration has no {what} line any more"
    );
    out
}

/// The indentation of `line`.
fn indent(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

/// `deploy/nginx/nginx.conf` for a test: listening on `listen`, one `server` line per port in
/// `backends` (with the committed line's parameters), its files in `dir`.
pub fn nginx_config(text: &str, listen: u16, backends: &[u16], dir: &Path) -> String {
    let d = dir.display();
    let text = replace_lines(
        text,
        "listen",
        |l| l.starts_with("listen "),
        |l| Some(format!("{}listen 127.0.0.1:{listen};", indent(l))),
    );
    let text = replace_lines(
        &text,
        "pid",
        |l| l.starts_with("pid "),
        |_| Some(format!("pid {d}/nginx.pid;")),
    );
    let text = replace_lines(
        &text,
        "error_log",
        |l| l.starts_with("error_log "),
        |_| Some(format!("error_log {d}/error.log warn;")),
    );
    let text = replace_lines(
        &text,
        "access_log",
        |l| l.starts_with("access_log "),
        |l| Some(format!("{}access_log {d}/access.log;", indent(l))),
    );
    // The first `server host:port params;` line is the model for all; the others are dropped.
    let mut first = true;
    replace_lines(
        &text,
        "upstream server",
        |l| l.starts_with("server 127.0.0.1:"),
        |l| {
            if !std::mem::take(&mut first) {
                return None;
            }
            let params = l
                .trim()
                .trim_end_matches(';')
                .splitn(3, ' ')
                .nth(2)
                .unwrap_or("");
            let lines: Vec<String> = backends
                .iter()
                .map(|p| format!("{}server 127.0.0.1:{p} {params};", indent(l)))
                .collect();
            Some(lines.join("\n"))
        },
    )
}

/// `deploy/haproxy/haproxy.cfg` for a test: binding `listen`, one `server` per port, the admin
/// socket in `dir`, and the active check on `ready_path`.
pub fn haproxy_config(
    text: &str,
    listen: u16,
    backends: &[u16],
    dir: &Path,
    ready_path: &str,
) -> String {
    let text = replace_lines(
        text,
        "bind",
        |l| l.starts_with("bind "),
        |l| Some(format!("{}bind 127.0.0.1:{listen}", indent(l))),
    );
    let text = replace_lines(
        &text,
        "stats socket",
        |l| l.starts_with("stats socket "),
        |l| {
            Some(format!(
                "{}stats socket {}/admin.sock mode 600 level admin",
                indent(l),
                dir.display()
            ))
        },
    );
    let text = replace_lines(
        &text,
        "http-check send",
        |l| l.starts_with("http-check send "),
        |l| Some(l.replace("/health/ready", ready_path)),
    );
    let mut first = true;
    replace_lines(
        &text,
        "backend server",
        |l| l.starts_with("server app"),
        |l| {
            if !std::mem::take(&mut first) {
                return None;
            }
            // `server NAME ADDR params…`
            let params: Vec<&str> = l.split_whitespace().skip(3).collect();
            let lines: Vec<String> = backends
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    format!(
                        "{}server app{} 127.0.0.1:{p} {}",
                        indent(l),
                        i + 1,
                        params.join(" ")
                    )
                })
                .collect();
            Some(lines.join("\n"))
        },
    )
}

/// A proxy process, stopped on drop.
pub struct Proxy {
    /// Where clients connect.
    pub port: u16,
    kind: &'static str,
    child: Child,
    dir: TempDir,
}

impl Proxy {
    /// nginx from `deploy/nginx/nginx.conf` in front of `backends`.
    pub fn nginx(backends: &[u16]) -> Self {
        let dir = TempDir::new("nginx");
        let port = free_port();
        let text = std::fs::read_to_string(deploy_dir().join("nginx/nginx.conf"))
            .expect("read deploy/nginx/nginx.conf");
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_config(&text, port, backends, dir.path())).unwrap();
        let mut cmd = Command::new("nginx");
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"]);
        Self::spawn(cmd, port, dir, "nginx")
    }

    /// HAProxy from `deploy/haproxy/haproxy.cfg` in front of `backends`, checking `ready_path`.
    pub fn haproxy(backends: &[u16], ready_path: &str) -> Self {
        let dir = TempDir::new("haproxy");
        let port = free_port();
        let text = std::fs::read_to_string(deploy_dir().join("haproxy/haproxy.cfg"))
            .expect("read deploy/haproxy/haproxy.cfg");
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(
            &conf,
            haproxy_config(&text, port, backends, dir.path(), ready_path),
        )
        .unwrap();
        let mut cmd = Command::new("haproxy");
        // -db: stay in the foreground, one process.
        cmd.arg("-db").arg("-f").arg(&conf);
        Self::spawn(cmd, port, dir, "haproxy")
    }

    fn spawn(mut cmd: Command, port: u16, dir: TempDir, name: &'static str) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.log")).unwrap(),
            ));
        crate::services::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}; is it installed?"));
        let mut proxy = Self {
            port,
            kind: name,
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("{name} exited at start ({status}):\n{}", proxy.log());
            }
            assert!(
                Instant::now() < deadline,
                "{name} not listening:\n{}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// `"nginx"` or `"haproxy"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the proxy wrote to stderr and its error log.
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }

    /// A command on HAProxy's admin socket (`set server production_cluster/app1 state drain`).
    pub fn haproxy_admin(&self, command: &str) -> String {
        use std::io::Read;
        let mut sock = std::os::unix::net::UnixStream::connect(self.dir.path().join("admin.sock"))
            .expect("connect to the HAProxy admin socket");
        writeln!(sock, "{command}").unwrap();
        let mut out = String::new();
        let _ = sock.read_to_string(&mut out);
        out
    }
    /// HAProxy's state for `backend/server` from `show stat` on the admin socket: `UP`,
    /// `DOWN`, `UP 1/2` (going down), `DOWN 1/2` (coming up), `DRAIN`, `MAINT`.
    pub fn haproxy_status(&self, server: &str) -> String {
        let (backend, name) = server.split_once('/').expect("backend/server");
        let stat = self.haproxy_admin("show stat");
        let mut lines = stat.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = header
            .iter()
            .position(|h| *h == "status")
            .unwrap_or_else(|| panic!("no status column in `show stat`:\n{stat}"));
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&backend) && f.get(1) == Some(&name))
            .and_then(|f| f.get(column).map(|s| s.to_string()))
            .unwrap_or_else(|| panic!("{server} not in `show stat`:\n{stat}"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SIGTERM: a fast stop, nginx's master takes its workers down with it.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
