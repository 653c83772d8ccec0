//! The limit `scripts/bench` compares the cluster with: one axum process on TCP using every core,
//! serving the very routes the cluster's workers serve (`common::worker::ping` and
//! `common::worker::routes`). The WebSocket load client is `src/bin/ws-load.rs`.
//!
//! `bench-peers tcp 127.0.0.1:0` prints `listening on ADDR` once it accepts. (nginx, the other
//! Rust-side peer, fronts the cluster's own worker processes; see `scripts/bench`.)

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
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
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
