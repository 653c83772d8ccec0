//! Real servers a test starts for itself: PostgreSQL, Redis, Sentinel, nginx, HAProxy, and a
//! [`fleet`] of a lesson's instances for a proxy to stand in front of.
//!
//! Each is the distribution's own binary, run as a child of the test on a loopback port, with its
//! files in a temporary directory removed on drop; dropping the handle kills the process. Ports
//! come from [`free_port`] (bind port 0, read it, close): these servers cannot be told to pick
//! their own and report it, so there is a small window in which another process could take the
//! port; a clash shows up as a server that fails to start, never as a wrong result.

pub mod fleet;
pub mod pg;
pub mod proxy;
pub mod redis;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A fresh directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// `<tmp>/rcp-<label>-<pid>-<n>`, created empty.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("rcp-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Asks the kernel to SIGKILL the child if the test process dies without running destructors.
pub(crate) fn die_with_parent(cmd: &mut std::process::Command) {
    // SAFETY: prctl is async-signal-safe and the hook allocates nothing.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}
