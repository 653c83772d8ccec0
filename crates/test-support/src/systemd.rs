//! The test as systemd: a notify socket to read `READY=1`, `WATCHDOG=1` and `STOPPING=1` from,
//! and socket activation (a listener passed as fd 3 with `LISTEN_FDS`/`LISTEN_PID`).

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::ClusterProcess;

/// A datagram socket in a fresh directory, as systemd's notify socket; removed on drop.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    dir: PathBuf,
}

impl NotifySocket {
    /// Binds one under the temporary directory; `name` keeps concurrent tests apart.
    pub fn bind(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("notify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the socket directory");
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        // Short reads, so `until` checks its deadline often.
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        Self { socket, path, dir }
    }

    /// The socket's path, for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &str {
        self.path.to_str().expect("a UTF-8 path")
    }

    /// Reads messages until one has a line `line`, or `timeout`: whether it came. Every message
    /// read is appended to `seen`, in order, for the failure message.
    pub fn until(&self, line: &str, timeout: Duration, seen: &mut Vec<String>) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = msg.lines().any(|l| l == line);
                seen.push(msg);
                if found {
                    return true;
                }
            }
        }
        false
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `bin` socket-activated: `listener` becomes its fd 3, with `LISTEN_FDS=1` and
/// `LISTEN_PID` set to the started process's own pid, as systemd does.
pub fn start_socket_activated(
    bin: &str,
    env: &[(&str, &str)],
    listener: &TcpListener,
) -> ClusterProcess {
    let fd = listener.as_raw_fd();
    let mut env = env.to_vec();
    env.push(("LISTEN_FDS", "1"));
    // LISTEN_PID must be the pid of the process that reads it: the shell's `$$` is, because it
    // execs the binary in its own process.
    ClusterProcess::start_with("sh", &env, |cmd| {
        cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\"", bin]);
        // SAFETY: dup2 and fcntl are async-signal-safe and the hook allocates nothing. dup2
        // leaves the new fd without FD_CLOEXEC, so fd 3 survives the exec; when the listener
        // already is fd 3, dup2 does nothing, so the flag is cleared by hand.
        unsafe {
            cmd.pre_exec(move || {
                use nix::libc;
                let done = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if done == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
}
