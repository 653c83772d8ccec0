//! Starting a worker process: re-execute our own binary with a control channel.
//!
//! We never `fork()` into a copy of the running master: a process that has started a tokio runtime
//! holds threads and locks that a forked child would inherit half-held. Instead the master runs
//! `current_exe()` again (as Node's `cluster.fork()` does) with `CLUSTER_WORKER=true` in its
//! environment. The child end of a Unix socketpair is its control channel: created close-on-exec,
//! it is made inheritable only inside this one child's pre-exec hook, so workers started at the same
//! moment never receive each other's channels.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream as StdUnixStream};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::wire::env;

/// A started worker process and the master's end of its control channel.
pub(crate) struct Spawned {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub channel: tokio::net::UnixStream,
    /// The master's end of the handoff channel, when one was asked for.
    pub handoff: Option<std::os::fd::OwnedFd>,
}

/// Starts `exe` as worker `slot`.
pub(crate) fn spawn(
    exe: &Path,
    slot: usize,
    generation: u64,
    socket: &Path,
    heartbeat: Duration,
    handoff: bool,
    extra_env: &[(String, String)],
) -> io::Result<Spawned> {
    let (ours, theirs) = StdUnixStream::pair()?;
    let child_fd = theirs.as_raw_fd();
    let handoff_pair = handoff.then(UnixDatagram::pair).transpose()?;
    // -1: no handoff channel; the hook skips it.
    let handoff_fd = handoff_pair
        .as_ref()
        .map_or(-1, |(_, theirs)| theirs.as_raw_fd());
    let master_pid = std::process::id();
    let mut cmd = tokio::process::Command::new(exe);
    cmd.env(env::WORKER, "true")
        .env(env::WORKER_ID, slot.to_string())
        .env(env::GENERATION, generation.to_string())
        .env(env::IPC_FD, child_fd.to_string())
        .env(env::SOCKET, socket)
        .env(env::MASTER_PID, master_pid.to_string())
        .env(env::HEARTBEAT_MS, heartbeat.as_millis().to_string())
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for var in env::MASTER_ONLY {
        cmd.env_remove(var);
    }
    if handoff_fd >= 0 {
        cmd.env(env::HANDOFF_FD, handoff_fd.to_string());
    }
    // SAFETY: the hook runs in the child between fork and exec, where only async-signal-safe calls
    // are allowed; fcntl, prctl and getppid are, and it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            if libc::fcntl(child_fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            if handoff_fd >= 0 && libc::fcntl(handoff_fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            // Die with the master, even if it is SIGKILLed and cannot clean up.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The master may have died before prctl took effect; then nobody would kill us.
            if libc::getppid() as u32 != master_pid {
                return Err(io::Error::other("master exited during spawn"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("worker exited before its pid was read"))?;
    ours.set_nonblocking(true)?;
    let channel = tokio::net::UnixStream::from_std(ours)?;
    let handoff = match handoff_pair {
        Some((ours, theirs)) => {
            drop(theirs);
            ours.set_nonblocking(true)?;
            Some(std::os::fd::OwnedFd::from(ours))
        }
        None => None,
    };
    Ok(Spawned {
        child,
        pid,
        channel,
        handoff,
    })
}
