//! The baselines `scripts/bench` compares the cluster with, serving the very route the cluster's
//! workers serve (`common::worker::ping`):
//!
//! - `bench-peers tcp 127.0.0.1:0`: one axum process on TCP, using every core: the limit a
//!   cluster on this machine can approach;
//! - `bench-peers uds /path/to.sock`: one axum process on a Unix socket, as an upstream for nginx.
//!
//! Each prints `listening on ADDR` once it accepts.

use std::process::ExitCode;

use axum::Router;
use axum::routing::get;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let app = Router::new().route("/ping", get(common::worker::ping));
    let served = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["tcp", addr] => rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            println!("listening on {}", listener.local_addr()?);
            axum::serve(listener, app).await
        }),
        ["uds", path] => rt.block_on(async {
            let _ = std::fs::remove_file(path);
            let listener = tokio::net::UnixListener::bind(path)?;
            println!("listening on {path}");
            axum::serve(listener, app).await
        }),
        _ => {
            eprintln!("usage: bench-peers tcp ADDR | bench-peers uds PATH");
            return ExitCode::from(2);
        }
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
