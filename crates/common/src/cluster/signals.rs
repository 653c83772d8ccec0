//! Unix signals the master answers: TERM/INT shut down, USR2 rolls, HUP reloads, TTIN/TTOU scale.

use tokio::sync::mpsc;

use super::handle::ClusterHandle;
use crate::slot::SlotState;

/// Listens for the signals and acts on each until the runtime stops.
pub(super) async fn handle(handle: ClusterHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    let kinds = [
        ("TERM", SignalKind::terminate()),
        ("INT", SignalKind::interrupt()),
        ("USR2", SignalKind::user_defined2()),
        ("HUP", SignalKind::hangup()),
        ("TTIN", SignalKind::from_raw(nix::libc::SIGTTIN)),
        ("TTOU", SignalKind::from_raw(nix::libc::SIGTTOU)),
    ];
    let (tx, mut rx) = mpsc::channel::<&'static str>(16);
    for (name, kind) in kinds {
        match signal(kind) {
            Ok(mut stream) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        if tx.send(name).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::error!(signal = name, error = %e, "cannot listen for signal"),
        }
    }
    drop(tx);
    while let Some(name) = rx.recv().await {
        tracing::info!(signal = name, "signal received");
        let h = handle.clone();
        match name {
            "TERM" | "INT" => h.shutdown(),
            "USR2" => {
                tokio::spawn(async move {
                    let _ = h.rolling_restart().await;
                });
            }
            "HUP" => {
                let _ = h.reload().await;
            }
            _ => {
                let n = h
                    .workers()
                    .iter()
                    .filter(|w| w.state != SlotState::Stopped && w.state != SlotState::Draining)
                    .count();
                let n = if name == "TTIN" {
                    n + 1
                } else {
                    n.saturating_sub(1).max(1)
                };
                if let Err(e) = h.scale_to(n).await {
                    tracing::error!(error = %e, "scaling failed");
                }
            }
        }
    }
}
