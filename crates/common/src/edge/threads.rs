//! The edge's threads: one current-thread runtime and accept loop per listening socket.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::accept::Listening;
use super::state::Edge;
use super::{handoff, pool, serve, trim};
use crate::config::Dispatch;
use crate::shutdown::Shutdown;

/// Starts one edge thread per listener (see [`bind`]), each running its own current-thread
/// runtime and accept loop (`dispatch` says which). Resolves, once `shutdown` fired and every
/// thread finished draining, to whether all of them drained within `drain`.
///
/// Why threads of their own rather than one work-stealing runtime: a proxied request involves two
/// connections, the client's and the worker's, each driven by its own task. On a work-stealing
/// runtime those tasks land on different threads and every request pays for cross-thread wake-ups
/// (measured: ~30% of the master's CPU in the scheduler). Here a thread owns its clients and its
/// share of upstream connections, so a request never leaves its thread; the kernel spreads new
/// connections over the threads that are waiting in accept.
pub(crate) fn spawn(
    listeners: Vec<TcpListener>,
    edge: Arc<Edge>,
    shutdown: Shutdown,
    drain: Duration,
    dispatch: Dispatch,
) -> std::io::Result<impl Future<Output = bool>> {
    let span = tracing::Span::current();
    trim::spawn(&edge.connection_slots);
    let mut finished = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        let listener = listener.into_std()?;
        let (edge, shutdown, span) = (edge.clone(), shutdown.clone(), span.clone());
        let (done, finish) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("edge-{index}"))
            .spawn(move || {
                let _span = span.entered();
                pool::set_shard(index);
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start an edge runtime");
                        let _ = done.send(false);
                        return;
                    }
                };
                let drained = rt.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot register the listener");
                            return false;
                        }
                    };
                    let at = Listening {
                        listener,
                        shutdown,
                        drain,
                    };
                    match dispatch {
                        Dispatch::Proxy => serve::serve(at, edge).await,
                        Dispatch::Handoff => handoff::serve(at, edge).await,
                    }
                });
                let _ = done.send(drained);
            })?;
        finished.push(finish);
    }
    Ok(async move {
        let mut all = true;
        for finish in finished {
            all &= finish.await.unwrap_or(false);
        }
        all
    })
}
