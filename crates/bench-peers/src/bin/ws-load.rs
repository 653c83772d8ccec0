//! A closed-loop WebSocket load client for `scripts/bench` (no standard tool for it is packaged
//! here): `SOCKETS` sockets, spread round-robin over the given endpoints, each sending a text
//! message of `SIZE` bytes and waiting for its echo before sending the next, for `SECONDS`.
//!
//! ```text
//! ws-load SECONDS SOCKETS SIZE ENDPOINT...
//! ENDPOINT: ws://127.0.0.1:PORT/ws (TCP) or unix:/path/to/worker.sock (a worker's own socket)
//! ```
//!
//! TCP is how every client reaches a server, the master or (in handoff dispatch, where the master
//! passes the accepted socket on) a worker; `unix:` talks to a worker over the socket only its
//! master has, a reference for what the transport itself costs.
//!
//! Prints one line of JSON: messages echoed, seconds, messages/s, p50 and p99 round trip in µs,
//! and errors (sockets that failed to connect or broke).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;

struct Args {
    seconds: f64,
    sockets: usize,
    size: usize,
    endpoints: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [seconds, sockets, size, endpoints @ ..] = &args[..] else {
        return Err("usage: ws-load SECONDS SOCKETS SIZE ENDPOINT...".into());
    };
    let num = |name: &str, v: &str| {
        v.parse::<f64>()
            .map_err(|_| format!("{name}={v:?} is not a number"))
    };
    let args = Args {
        seconds: num("SECONDS", seconds)?,
        sockets: num("SOCKETS", sockets)? as usize,
        size: num("SIZE", size)? as usize,
        endpoints: endpoints.to_vec(),
    };
    if args.endpoints.is_empty() || args.sockets == 0 || !(0.0..=600.0).contains(&args.seconds) {
        return Err("need at least one endpoint and one socket, and at most 600 s".into());
    }
    Ok(args)
}

/// One socket's run: its round trips in µs, or why it failed.
async fn run_socket(endpoint: String, size: usize, until: Instant) -> Result<Vec<u32>, String> {
    if let Some(path) = endpoint.strip_prefix("unix:") {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        echo_loop(stream, "ws://localhost/ws", size, until).await
    } else {
        let authority = endpoint
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| format!("{endpoint}: not ws://HOST:PORT/PATH"))?;
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("{authority}: {e}"))?;
        let _ = stream.set_nodelay(true);
        echo_loop(stream, &endpoint, size, until).await
    }
}

async fn echo_loop<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    url: &str,
    size: usize,
    until: Instant,
) -> Result<Vec<u32>, String> {
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let text: String = "x".repeat(size);
    let mut rtts = Vec::new();
    while Instant::now() < until {
        let t0 = Instant::now();
        ws.send(Message::text(text.clone()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.len() >= size => {}
            other => return Err(format!("expected an echo, got {other:?}")),
        }
        rtts.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    let _ = ws.close(None).await;
    Ok(rtts)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let (mut rtts, errors, elapsed) = rt.block_on(async {
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs_f64(args.seconds);
        let tasks: Vec<_> = (0..args.sockets)
            .map(|i| {
                let endpoint = args.endpoints[i % args.endpoints.len()].clone();
                tokio::spawn(run_socket(endpoint, args.size, until))
            })
            .collect();
        let (mut all, mut errors) = (Vec::new(), 0u64);
        for task in tasks {
            match task.await {
                Ok(Ok(r)) => all.extend(r),
                Ok(Err(e)) => {
                    errors += 1;
                    eprintln!("ws-load: {e}");
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("ws-load: a socket's task failed: {e}");
                }
            }
        }
        (all, errors, t0.elapsed().as_secs_f64())
    });
    rtts.sort_unstable();
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"messages\": {}, \"seconds\": {elapsed:.3}, \"rate\": {:.1}, \"p50_us\": {}, \"p99_us\": {}, \"errors\": {errors}}}",
        rtts.len(),
        rtts.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
    );
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
