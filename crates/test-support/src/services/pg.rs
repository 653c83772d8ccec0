//! PostgreSQL servers for tests: a primary, streaming replicas made from it, promotion.
//!
//! The binaries are found in `PG_BIN` if set, else in the newest `/usr/lib/postgresql/*/bin`
//! (Debian's layout; `initdb` and `postgres` are not on `PATH` there), else on `PATH`.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (containers, CI), every
//! PostgreSQL command runs as the unprivileged user `PG_TEST_USER` (default `nobody`) through
//! util-linux's `setpriv`, and the data directories are handed to that user. `setpriv
//! --pdeathsig KILL` makes the kernel kill the server if the test process dies without running
//! its destructors (a plain `prctl` before exec would not survive the change of user).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{TempDir, free_port};

/// How long a server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory with `initdb`, `postgres`, `pg_basebackup`, `pg_ctl`, `pg_isready`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_default()
}

/// The user PostgreSQL runs as when we are root: `(name, uid, gid)`; `None` when we are not root.
fn run_as() -> Option<(String, u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let name = std::env::var("PG_TEST_USER").unwrap_or_else(|_| "nobody".to_string());
    let user = nix::unistd::User::from_name(&name)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no user {name:?}: set PG_TEST_USER to an unprivileged user"));
    Some((name, user.uid.as_raw(), user.gid.as_raw()))
}

/// `program args…`, as the PostgreSQL user when we are root.
fn command(program: &str) -> Command {
    let path = bin_dir().join(program);
    match run_as() {
        None => Command::new(path),
        Some((_, uid, gid)) => {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--pdeathsig=KILL")
                .arg(path);
            cmd
        }
    }
}

/// Runs a PostgreSQL tool to completion; panics with its output if it fails.
fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start ({e}); is PostgreSQL installed?"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory the PostgreSQL user owns (mode 0700, as `initdb` and `postgres` demand).
fn owned_dir(path: &Path) {
    std::fs::create_dir_all(path).expect("create a PostgreSQL directory");
    if let Some((_, uid, gid)) = run_as() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to the PostgreSQL user");
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
}

/// One PostgreSQL server (a primary or a standby), killed on drop. Connect as user `postgres`
/// with no password (trust, loopback only) to database `postgres`.
pub struct PgServer {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    data: PathBuf,
    child: Option<Child>,
    // Last: removed after the server is gone.
    _dir: TempDir,
}

impl PgServer {
    /// `initdb` a new cluster and start it as a primary.
    pub fn primary() -> Self {
        let dir = TempDir::new("pg");
        owned_dir(dir.path());
        let data = dir.path().join("data");
        let mut init = command("initdb");
        init.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(init, "initdb");
        Self::boot(dir, data)
    }

    /// A streaming replica of `self`: `pg_basebackup -R` (which writes `standby.signal` and the
    /// `primary_conninfo` that points back here), then started on its own port.
    pub fn replica(&self) -> Self {
        let dir = TempDir::new("pg");
        owned_dir(dir.path());
        let data = dir.path().join("data");
        let mut backup = command("pg_basebackup");
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"]);
        run(backup, "pg_basebackup");
        Self::boot(dir, data)
    }

    /// Writes this server's own settings (the last value in the file wins, so a replica's copy of
    /// the primary's settings is overridden) and starts `postgres`.
    fn boot(dir: TempDir, data: PathBuf) -> Self {
        let port = free_port();
        let conf = format!(
            "\n# written by test-support\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nwal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n\
             wal_receiver_status_interval = 1s\nlog_min_messages = warning\n",
            dir.path().display()
        );
        let path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).expect("read postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&path, text).expect("write postgresql.conf");
        let mut server = Self {
            port,
            data,
            child: None,
            _dir: dir,
        };
        server.start();
        server
    }

    /// Starts `postgres` on this data directory and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = command("postgres");
        cmd.arg("-D")
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("start postgres"));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = Command::new(bin_dir().join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("postgres on port {} exited at start: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "postgres on port {} not ready",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A fast shutdown (SIGINT: sessions are disconnected, the server exits cleanly), waited for.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
            let _ = child.wait();
        }
    }

    /// Turns a standby into a primary (`pg_ctl promote -w` waits until it accepts writes).
    pub fn promote(&self) {
        let mut cmd = command("pg_ctl");
        cmd.arg("promote").arg("-w").arg("-D").arg(&self.data);
        run(cmd, "pg_ctl promote");
    }

    /// `postgresql://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown: the postmaster takes its backends down with it.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
