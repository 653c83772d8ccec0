//! Running under systemd: `Type=notify` readiness and status, `WatchdogSec` pings, and socket
//! activation (`LISTEN_FDS`).
//!
//! Nothing to switch on: all of it follows the variables the service manager sets, and none of
//! it costs anything when they are unset (no task is started, no socket opened).
//!
//! - `NOTIFY_SOCKET`: the master says `READY=1` once its listener is bound and at least one
//!   worker is Ready (not merely started: a unit ordered `After=` this one should find it
//!   serving), a `STATUS=` line whenever the number of Ready workers changes, `RELOADING=1` and
//!   `READY=1` around a rolling restart, and `STOPPING=1` when a shutdown begins.
//! - `WATCHDOG_USEC` (with `WATCHDOG_PID`, when set, naming us): `WATCHDOG=1` every half of it,
//!   as `sd_watchdog_enabled(3)` advises, but only while the supervisor's loop is turning: each
//!   ping needs a fresh slot list, which the supervisor publishes after every step (at least every
//!   50 ms). A wedged supervisor, or a control runtime too blocked to run this task, stops the
//!   pings, and systemd restarts the service.
//! - `LISTEN_FDS=1` with `LISTEN_PID` equal to our pid: fd 3 is the listening socket, and `HOST`
//!   and `PORT` are ignored. Every edge thread accepts on a duplicate of it. The kernel then wakes
//!   the threads in turn rather than spreading connections evenly as separate `SO_REUSEPORT`
//!   sockets would, which is the price of letting systemd own the port. The fd is made
//!   close-on-exec, and workers start without these variables (`wire::env::MASTER_ONLY`), so no
//!   worker ever holds it or speaks for the master.
//!
//! The messages go through the `sd-notify` crate.

use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::net::TcpListener;

use super::handle::ClusterHandle;
use super::notify::notify;
use crate::config::{self, ConfigError, ProcessEnv, Source};
use crate::shutdown::Shutdown;
use crate::slot::SlotState;

/// What the service manager asked of us, read once at start.
#[derive(Debug)]
pub(super) struct Systemd {
    /// `NOTIFY_SOCKET` is set.
    notify: bool,
    /// Half of `WATCHDOG_USEC`, when the watchdog is on and meant for us.
    ping_every: Option<Duration>,
    /// The socket passed as fd 3.
    listener: Option<std::net::TcpListener>,
}

impl Systemd {
    /// Reads the variables; a bad value prints the reason and exits with status 2.
    pub(super) fn from_env_or_exit() -> Self {
        Self::from_env().unwrap_or_else(|e| config::exit_bad_config(&e))
    }

    fn from_env() -> Result<Self, ConfigError> {
        let src = ProcessEnv;
        let notify = src.get("NOTIFY_SOCKET").is_some();
        let ours = |name| {
            config::var(&src, name, "a process id", |s| s.parse::<u32>().ok())
                .map(|pid| pid.is_none_or(|pid| pid == std::process::id()))
        };
        let usec = config::var(
            &src,
            "WATCHDOG_USEC",
            // The pings prove the supervisor stepped since the last one; it steps at least every
            // 50 ms, so a shorter half-period would withhold pings from a healthy master.
            "a whole number of microseconds, at least 200000",
            |s| s.parse::<u64>().ok().filter(|n| *n >= 200_000),
        )?;
        let ping_every = match usec {
            Some(usec) if notify && ours("WATCHDOG_PID")? => Some(Duration::from_micros(usec / 2)),
            _ => None,
        };
        let listener = match src.get("LISTEN_PID") {
            Some(_) if ours("LISTEN_PID")? => Some(inherited_listener(&src)?),
            _ => None,
        };
        Ok(Self {
            notify,
            ping_every,
            listener,
        })
    }

    /// The inherited socket as one listener per edge thread, if systemd passed one.
    pub(super) fn listeners(
        &mut self,
        threads: usize,
    ) -> std::io::Result<Option<Vec<TcpListener>>> {
        let Some(first) = self.listener.take() else {
            return Ok(None);
        };
        first.set_nonblocking(true)?;
        let mut all = Vec::with_capacity(threads.max(1));
        for _ in 1..threads.max(1) {
            all.push(TcpListener::from_std(first.try_clone()?)?);
        }
        all.push(TcpListener::from_std(first)?);
        Ok(Some(all))
    }

    /// Starts the notifier and the watchdog, if systemd wants them; `stopped` fires at shutdown.
    pub(super) fn spawn(&self, handle: &ClusterHandle, addr: SocketAddr, stopped: Shutdown) {
        if !self.notify {
            return;
        }
        tokio::spawn(announce(handle.clone(), addr, stopped));
        if let Some(every) = self.ping_every {
            tokio::spawn(watchdog(handle.clone(), every));
        }
    }
}

/// Takes fd 3 as the listening socket, once `LISTEN_PID` said it is ours.
fn inherited_listener(src: &impl Source) -> Result<std::net::TcpListener, ConfigError> {
    let bad = |value: &str, expected: &str| ConfigError {
        var: "LISTEN_FDS".into(),
        value: value.into(),
        expected: expected.into(),
    };
    let count = src.get("LISTEN_FDS").unwrap_or_default();
    if count.trim() != "1" {
        return Err(bad(&count, "1 (one listening TCP socket, passed as fd 3)"));
    }
    // Sets FD_CLOEXEC on fd 3, so no worker inherits it.
    let fd = sd_notify::listen_fds()
        .ok()
        .and_then(|mut fds| fds.next())
        .ok_or_else(|| bad(&count, "a listening socket passed as fd 3"))?;
    let listening = nix::sys::socket::getsockopt(
        // SAFETY: fd 3 is open (the fcntl above succeeded); borrowed only for this call.
        &unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::sys::socket::sockopt::AcceptConn,
    );
    if listening != Ok(true) {
        return Err(bad(&count, "fd 3 to be a listening socket"));
    }
    // SAFETY: systemd passed fd 3 to this process to own; nothing else here uses it.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    if listener.local_addr().is_err() {
        return Err(bad(&count, "fd 3 to be a TCP socket"));
    }
    Ok(listener)
}

/// `READY=1` once a worker is Ready, a `STATUS=` line per change, `STOPPING=1` at shutdown.
async fn announce(handle: ClusterHandle, addr: SocketAddr, stopped: Shutdown) {
    let mut workers = handle.shared().workers.subscribe();
    let mut said_ready = false;
    let mut last = String::new();
    let stop = stopped.wait();
    tokio::pin!(stop);
    loop {
        let status = {
            let slots = workers.borrow_and_update();
            let ready = slots.iter().filter(|w| w.state == SlotState::Ready).count();
            if ready > 0 && !said_ready {
                said_ready = true;
                let status = format!(
                    "serving on {addr}: {ready} of {} workers ready",
                    slots.len()
                );
                notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
                tracing::info!("told systemd: ready");
                last = status;
            }
            format!(
                "{} on {addr}: {ready} of {} workers ready",
                if said_ready { "serving" } else { "starting" },
                slots.len()
            )
        };
        if status != last {
            notify(&[NotifyState::Status(&status)]);
            last = status;
        }
        tokio::select! {
            changed = workers.changed() => if changed.is_err() { return },
            () = &mut stop => break,
        }
    }
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("shutting down: draining in-flight requests"),
    ]);
}

/// `WATCHDOG=1` every `every`, while the supervisor keeps publishing.
async fn watchdog(handle: ClusterHandle, every: Duration) {
    let mut workers = handle.shared().workers.subscribe();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match workers.has_changed() {
            Ok(true) => {
                workers.mark_unchanged();
                notify(&[NotifyState::Watchdog]);
            }
            Ok(false) => {
                tracing::warn!(
                    ?every,
                    "the supervisor made no progress; withholding the watchdog ping"
                )
            }
            // The supervisor is gone: the master is exiting.
            Err(_) => return,
        }
    }
}
