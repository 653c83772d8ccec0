//! The baselines `scripts/bench` compares the cluster with, serving the very route the cluster's
//! workers serve (`common::worker::ping`):
//!
//! - `bench-peers tcp 127.0.0.1:0`: one axum process on TCP, using every core: the limit a
//!   cluster on this machine can approach;
//! - `bench-peers uds /path/to.sock`: an upstream for nginx on a Unix socket, served as the cluster's
//!   workers serve the master: one runtime thread, hyper's HTTP/1.1 server with keep-alive. Two of
//!   them behind nginx are the same upstream as the cluster's two workers.
//!
//! Each prints `listening on ADDR` once it accepts.

use std::process::ExitCode;

use axum::Router;
use axum::http::Request;
use axum::routing::get;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tower::ServiceExt;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = if args.first().map(String::as_str) == Some("uds") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let rt = match rt {
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
            let mut http = hyper::server::conn::http1::Builder::new();
            http.keep_alive(true);
            loop {
                let (stream, _) = listener.accept().await?;
                let app = app.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
                let conn = http.serve_connection(TokioIo::new(stream), service);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
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
