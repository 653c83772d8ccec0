//! The limit `scripts/bench` compares the cluster with: one axum process on TCP using every core,
//! serving the very routes the cluster's workers serve (`common::worker::ping` and
//! `common::worker::routes`). The WebSocket load client is `src/bin/ws-load.rs`.
//!
//! `bench-peers tcp 127.0.0.1:0` prints `listening on ADDR` once it accepts. (nginx, the other
//! Rust-side peer, fronts the cluster's own worker processes; see `scripts/bench`.)

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::routing::get;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ["tcp", addr] = args.iter().map(String::as_str).collect::<Vec<_>>()[..] else {
        eprintln!("usage: bench-peers tcp ADDR");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let ctx = common::WorkerContext {
        id: 1,
        pid: std::process::id(),
        generation: 0,
        version: None,
        pool: None,
    };
    let app = Router::new()
        .route("/ping", get(common::worker::ping))
        .fallback_service(common::worker::routes::router(&ctx));
    let addr: SocketAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("error: ADDR {addr:?} is not an IP address and port: {e}");
            return ExitCode::from(2);
        }
    };
    let served = rt.block_on(async {
        let listener = listen(addr)?;
        println!("listening on {}", listener.local_addr()?);
        axum::serve(listener, app).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Binds with a deeper accept queue than `TcpListener::bind`'s 1,024: when the slow-backend
/// workload opens 1,000 connections at once, this one listener (the edge has one per thread) lost
/// 121 to 969 connects per 6 s round to a full queue (`ListenOverflows`), each waiting out a 1 s
/// SYN retry, which made the reference the slow one. The kernel caps the value at `somaxconn`.
fn listen(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
