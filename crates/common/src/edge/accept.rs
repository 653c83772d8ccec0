//! Accepting client connections, the same way in both dispatch modes: one listening socket per
//! edge thread, and one shared cap on the connections served at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::shutdown::Shutdown;

/// One edge thread's listening socket, and when and how it stops: what either dispatch mode
/// serves.
pub(crate) struct Listening {
    pub listener: TcpListener,
    /// Fires when the master shuts down: accepting stops.
    pub shutdown: Shutdown,
    /// How long the connections still open may take to finish after that.
    pub drain: Duration,
}

/// Binds `addr` once per edge thread with `SO_REUSEPORT`, so the kernel spreads new connections
/// evenly over the threads. (With one shared listener, measured: all 64 connections of a load test
/// went to whichever thread happened to be accepting, and the other thread sat idle.)
///
/// `SO_REUSEPORT` would also let a second cluster started by the same user share the port
/// silently, so the port is first claimed by an ordinary bind, which fails with "address in use"
/// if anyone holds it, and which picks the port when `addr` asks for port 0.
pub(crate) fn bind(addr: SocketAddr, threads: usize) -> std::io::Result<Vec<TcpListener>> {
    let at = std::net::TcpListener::bind(addr)?.local_addr()?;
    let mut listeners = Vec::with_capacity(threads.max(1));
    for _ in 0..threads.max(1) {
        let socket = if at.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(at)?;
        listeners.push(socket.listen(1024)?);
    }
    Ok(listeners)
}

/// Accepts until `shutdown` fires and runs `serve_one` for each connection, never serving more
/// at once than `slots` (shared with the other edge threads) has permits. At the cap each thread
/// holds at most one accepted connection unserved and accepts no more, so further clients wait in
/// the kernel's backlog rather than as sockets we cannot serve. Then waits up to `drain` for the
/// connections still open; returns whether they all finished in time. Both dispatch modes accept
/// this way.
pub(crate) async fn accept_until<F, Fut>(
    at: Listening,
    slots: &Arc<Semaphore>,
    mut serve_one: F,
) -> bool
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Listening {
        listener,
        shutdown,
        drain,
    } = at;
    let connections = TaskTracker::new();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let (stream, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // The slot is taken after the accept, not before: a thread idling in accept while holding
        // a slot could leave a connection that the kernel queued on another thread's listener
        // waiting although the master is below its cap. So each thread accepts one connection
        // and, if the cap is reached, holds it unserved until a slot frees.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut stop => break,
        };
        // Not `async move { served.await; drop(permit) }`: an async block keeps the space of what
        // it captured even after moving it into an await, so it would hold the connection's
        // future twice, for every idle connection's whole life.
        let served = serve_one(stream, client).map(move |()| drop(permit));
        connections.spawn(served);
    }
    drop(listener);
    connections.close();
    tokio::select! {
        () = connections.wait() => true,
        () = tokio::time::sleep(drain) => {
            tracing::warn!(?drain, "client connections still open after the shutdown timeout");
            false
        }
    }
}
