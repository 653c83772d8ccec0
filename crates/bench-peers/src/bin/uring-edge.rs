//! The io_uring prototype of the edge (`common::edge::uring`), in front of workers that are
//! already running: `uring-edge ADDR THREADS uring|epoll SOCKET...` prints
//! `listening on http://ADDR` once it accepts. `epoll` runs the same loop over epoll, the
//! baseline that isolates what io_uring changes. Built with `cargo build --release -p bench-peers --features uring`; see
//! `BENCHMARKS.md` for what it measured against the master's epoll path.

use std::path::PathBuf;
use std::process::ExitCode;

use common::edge::uring::Io;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let io = match args.get(2).map(String::as_str) {
        Some("uring") => Some(Io::Uring),
        Some("epoll") => Some(Io::Epoll),
        _ => None,
    };
    let (Some(addr), Some(threads), Some(io), workers) = (
        args.first().and_then(|a| a.parse().ok()),
        args.get(1).and_then(|t| t.parse::<usize>().ok()),
        io,
        args.iter().skip(3).map(PathBuf::from).collect::<Vec<_>>(),
    ) else {
        eprintln!("usage: uring-edge ADDR THREADS uring|epoll SOCKET...");
        return ExitCode::from(2);
    };
    match common::edge::uring::serve(addr, threads, io, workers) {
        Ok(at) => println!("listening on http://{at}"),
        Err(e) => {
            eprintln!("error: cannot serve: {e}");
            return ExitCode::from(1);
        }
    }
    loop {
        std::thread::park();
    }
}
