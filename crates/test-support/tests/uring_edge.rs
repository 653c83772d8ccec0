//! The io_uring prototype of the edge (`common::edge::uring`, feature `uring`), over both of its
//! backends, in front of a real fixture cluster's workers reached on their Unix sockets.
//!
//! Run with `cargo test -p test-support --features uring --test uring_edge`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::edge::uring::{Io, serve};
use test_support::ClusterProcess;

/// The worker sockets of one fixture cluster for the file, in a directory of its own.
static WORKERS: OnceLock<Vec<PathBuf>> = OnceLock::new();

fn worker_sockets() -> &'static [PathBuf] {
    WORKERS.get_or_init(|| {
        // Started from a thread that holds it as long as the test binary lives: the
        // cluster's PR_SET_PDEATHSIG kills it when that thread ends with the binary.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let dir = std::env::temp_dir().join(format!("rcp-uring-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a directory for the worker sockets");
            let tmp = dir.to_str().expect("a UTF-8 path").to_string();
            let cluster = ClusterProcess::start(
                env!("CARGO_BIN_EXE_fixture"),
                &[("WORKERS", "2"), ("TMPDIR", &tmp), ("XDG_RUNTIME_DIR", "")],
            );
            let sockets = sockets_in(&dir, cluster.pid());
            assert_eq!(
                sockets.len(),
                2,
                "two worker sockets in {dir:?}: {sockets:?}"
            );
            tx.send(sockets).ok();
            let _cluster = cluster;
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("the cluster started")
    })
}

/// `DIR/rcp-PID-*/w*.sock`, sorted.
fn sockets_in(dir: &Path, pid: u32) -> Vec<PathBuf> {
    let prefix = format!("rcp-{pid}-");
    let mut found = Vec::new();
    for run in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !run.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        for sock in std::fs::read_dir(run.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = sock.file_name().to_string_lossy().into_owned();
            if name.starts_with('w') && name.ends_with(".sock") {
                found.push(sock.path());
            }
        }
    }
    found.sort();
    found
}

fn edge(io: Io, threads: usize) -> SocketAddr {
    let addr = "127.0.0.1:0".parse().expect("an address");
    serve(addr, threads, io, worker_sockets().to_vec()).expect("the prototype serves")
}

fn connect(at: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(at).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s
}

/// One response: (head, body), read by its `content-length`.
fn response(s: &mut TcpStream, pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().expect("a length"));
            if pending.len() >= end + 4 + len {
                let body = pending[end + 4..end + 4 + len].to_vec();
                pending.drain(..end + 4 + len);
                return (head, body);
            }
        }
        let n = s.read(&mut chunk).expect("the edge answers within 5 s");
        assert!(n > 0, "the edge closed after {pending:?}");
        pending.extend_from_slice(&chunk[..n]);
    }
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

#[test]
fn both_backends_forward_a_plain_get_to_a_worker_and_back() {
    for io in [Io::Uring, Io::Epoll] {
        let at = edge(io, 2);
        let mut s = connect(at);
        let mut pending = Vec::new();
        for _ in 0..3 {
            s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let (head, body) = response(&mut s, &mut pending);
            assert!(head.starts_with("http/1.1 200"), "{io:?}: {head}");
            assert_eq!(body, b"pong\n", "{io:?}: {head}");
            let worker = header(&head, "x-worker-id");
            assert!(matches!(worker, Some("1" | "2")), "{io:?}: {head}");
            assert!(header(&head, "x-request-id").is_some(), "{io:?}: {head}");
        }
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    for io in [Io::Uring, Io::Epoll] {
        let at = edge(io, 1);
        let mut s = connect(at);
        s.write_all(
            b"GET /download?bytes=3 HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /ping HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /download?bytes=7 HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
        let mut pending = Vec::new();
        let lengths: Vec<usize> = (0..3)
            .map(|_| response(&mut s, &mut pending).1.len())
            .collect();
        assert_eq!(lengths, [3, 5, 7], "{io:?}: bodies in the order asked");
    }
}

#[test]
fn connections_are_paired_with_the_workers_in_turn() {
    for io in [Io::Uring, Io::Epoll] {
        let at = edge(io, 1);
        let mut seen = Vec::new();
        for _ in 0..2 {
            let mut s = connect(at);
            s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let (head, _) = response(&mut s, &mut Vec::new());
            seen.push(header(&head, "x-worker-id").map(str::to_string));
        }
        seen.sort();
        assert_eq!(
            seen,
            [Some("1".to_string()), Some("2".to_string())],
            "{io:?}: one thread's two connections go to both workers"
        );
    }
}

#[test]
fn what_the_prototype_does_not_serve_is_refused_and_the_connection_closed() {
    let cases: [(&[u8], &str); 2] = [
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
            "http/1.1 501",
        ),
        // A fragment in the target: refused by the plain parser itself (RFC 9112 §3.2).
        (b"GET /ping#top HTTP/1.1\r\nHost: x\r\n\r\n", "http/1.1 400"),
    ];
    for io in [Io::Uring, Io::Epoll] {
        let at = edge(io, 1);
        for (request, status) in cases {
            let mut s = connect(at);
            s.write_all(request).unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).expect("the edge closes");
            let text = String::from_utf8_lossy(&all).to_lowercase();
            assert!(
                text.starts_with(status),
                "{io:?}: {:?} → {text}",
                String::from_utf8_lossy(request)
            );
        }
    }
}
