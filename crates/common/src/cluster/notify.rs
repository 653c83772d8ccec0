//! The messages to the service manager (`NOTIFY_SOCKET`), through the `sd-notify` crate: the
//! handle says `RELOADING=1` and `READY=1` around a rolling restart, and the systemd module says
//! the rest. Without `NOTIFY_SOCKET` each is a no-op.

use sd_notify::NotifyState;

/// Sends `states`; a failure is logged, never fatal (systemd may have gone away).
pub(super) fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// `RELOADING=1` before a rolling restart (with the clock reading `Type=notify-reload` asks for).
pub(super) fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("rolling restart"),
    ];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// `READY=1` after a rolling restart.
pub(super) fn reloaded() {
    notify(&[
        NotifyState::Ready,
        NotifyState::Status("rolling restart done"),
    ]);
}
