//! A prototype of the edge's plain-request path on io_uring (feature `uring`, off by default; run
//! by `scripts/bench`'s measurements through `bench-peers`' `uring-edge` binary, never by a
//! cluster).
//!
//! Why it exists: under keep-alive load on `GET /ping` the master's system time is most of its
//! CPU per request, and it is spent on four socket calls per request (a read and a write on each
//! side) and the `epoll_wait`s between them. With io_uring the same four operations are queued
//! as submissions, and one `io_uring_enter` both hands over every operation queued since the last
//! one and waits for the next completions: the question this answers is whether entering the
//! kernel once per batch instead of once per operation buys the 15% of master CPU per request
//! the project asks of a new I/O path before it replaces the epoll one. Measured (2026-12-01, see
//! `BENCHMARKS.md`): 11% fewer µs per request than the same loop over epoll with two threads in
//! a closed loop, 2% with four; at an equal load none at 20,000 requests/s, 11% at 30,000. Not
//! the 15%, so no cluster runs it.
//!
//! What it does, and no more: each thread owns a ring and one `SO_REUSEPORT` listener; a client
//! connection is paired with a connection of its own to one worker (round robin over the worker
//! sockets, as nginx's `keepalive` pool amounts to under a steady load); a request is parsed by
//! the plain loop's parser (`http::server`), forwarded with the client's own head encoder
//! (`http::client`: hop-by-hop headers dropped, `X-Forwarded-For` and `X-Request-Id` added) and
//! answered when the worker's whole response came with its head (`http::client`'s parser), with
//! `X-Worker-Id` added. Anything else (a request with a body or an upgrade, a streamed response,
//! a worker failing) is answered with a closing 501 or 502: no retries, no balancing strategy, no
//! deadlines, no metrics. So its user time is below the master's by what those cost, and its
//! system time is the figure to compare.
//!
//! The same loop runs over either of two ways of doing I/O ([`Io`]): `Uring`, and `Epoll`, which
//! makes each call at once (non-blocking, as the master's tokio sockets do) and waits with
//! `epoll_wait` only for a call that would block. Everything else being the same code, the
//! difference between the two is the I/O mechanism's alone.
//!
//! Each connection has exactly one operation in flight, so the buffers that operation reads into
//! or writes from stay put until its completion, the only time the connection is touched.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::ptr;

use bytes::BytesMut;
use http::header::DATE;
use io_uring::{IoUring, opcode, types};

use crate::http::client::{Added, Start, encode_head, parse_head};
use crate::http::head::{READ_CHUNK, date};
use crate::http::headers::mint_request_id;
use crate::http::server::{Parsed, parse};

/// The longest request or response head accepted, as the edge's default `MAX_HEADER_SIZE`.
const MAX_HEAD: usize = 16 * 1024;

/// Submission queue entries per ring: far more than the operations one thread has in flight
/// (one per connection, and the accept).
const RING: u32 = 1024;

const NOT_PLAIN: &[u8] =
    b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const BAD_GATEWAY: &[u8] =
    b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// How the edge threads do their I/O.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Io {
    /// Operations queued on an io_uring, one `io_uring_enter` per batch.
    Uring,
    /// Each call made at once; `epoll_wait` (edge-triggered) for those that would block.
    Epoll,
}

/// Binds `addr` once per thread and serves on each from a thread of its own, forever.
pub fn serve(
    addr: SocketAddr,
    threads: usize,
    io: Io,
    workers: Vec<PathBuf>,
) -> io::Result<SocketAddr> {
    if workers.is_empty() {
        return Err(io::Error::other("no worker sockets to forward to"));
    }
    // `accept::bind`'s listeners are tokio's; they are only bound here, then handed over.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let listeners = {
        let _entered = rt.enter();
        super::accept::bind(addr, threads)?
            .into_iter()
            .map(|l| l.into_std())
            .collect::<io::Result<Vec<_>>>()?
    };
    let at = listeners[0].local_addr()?;
    for (n, listener) in listeners.into_iter().enumerate() {
        listener.set_nonblocking(false)?;
        let workers = workers.clone();
        std::thread::Builder::new()
            .name(format!("uring-{n}"))
            .spawn(move || {
                if let Err(e) = Thread::new(listener, workers, n, io).and_then(Thread::run) {
                    tracing::error!(error = %e, "uring edge thread stopped");
                }
            })?;
    }
    Ok(at)
}

/// What the one operation a connection has in flight is; the low bits of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Accept = 0,
    ClientRecv = 1,
    WorkerSend = 2,
    WorkerRecv = 3,
    ClientSend = 4,
}

impl Op {
    fn of(user_data: u64) -> Option<(usize, Op)> {
        let op = match user_data & 7 {
            0 => Op::Accept,
            1 => Op::ClientRecv,
            2 => Op::WorkerSend,
            3 => Op::WorkerRecv,
            4 => Op::ClientSend,
            _ => return None,
        };
        Some(((user_data >> 3) as usize, op))
    }

    fn data(self, slot: usize) -> u64 {
        ((slot as u64) << 3) | self as u64
    }
}

/// One client connection and the worker connection it is paired with.
struct Conn {
    client: TcpStream,
    worker: UnixStream,
    worker_id: usize,
    client_ip: Vec<u8>,
    /// Bytes from the client not yet parsed.
    read: BytesMut,
    /// Bytes from the worker not yet parsed.
    answer: BytesMut,
    /// The head (and body) on its way to the worker or the client.
    out: Vec<u8>,
    sent: usize,
    is_head: bool,
    /// The request's `X-Request-Id`, the client's or minted, echoed in the response as the
    /// master does.
    request_id: Vec<u8>,
    /// Close once `out` is sent: the client asked, or the answer was a refusal.
    close: bool,
}

/// One operation, as either backend makes it.
#[derive(Debug, Clone, Copy)]
struct Sub {
    kind: Kind,
    fd: RawFd,
    ptr: *mut u8,
    len: u32,
    data: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Accept,
    Recv,
    Send,
}

enum Backend {
    Uring(IoUring),
    Epoll(Epoll),
}

/// The epoll backend: each descriptor registered once, edge-triggered, for reading (and for
/// writing too once a send would block); the operation that would block waits there.
struct Epoll {
    fd: OwnedFd,
    /// The operation waiting on each descriptor, by descriptor number.
    waiting: Vec<Option<Sub>>,
    /// Descriptors already watched for writability.
    writable: Vec<bool>,
    /// Descriptors that may have bytes to read: set by an event, cleared by a read that came
    /// back short or would block. A read is only tried when set, as tokio's readiness does, so
    /// this backend makes no more calls than the master.
    readable: Vec<bool>,
    events: Vec<nix::libc::epoll_event>,
}

struct Thread {
    backend: Backend,
    listener: TcpListener,
    workers: Vec<PathBuf>,
    next_worker: usize,
    conns: Vec<Option<Box<Conn>>>,
    free: Vec<usize>,
    /// Completions copied out of the ring, so handling one may queue submissions.
    done: VecDeque<(u64, i32)>,
}

impl Thread {
    fn new(listener: TcpListener, workers: Vec<PathBuf>, n: usize, io: Io) -> io::Result<Self> {
        let backend = match io {
            // One thread submits and reaps, and only when it enters the ring: the kernel may
            // then run completion work at that entry instead of interrupting the thread for it.
            Io::Uring => Backend::Uring(
                IoUring::builder()
                    .setup_single_issuer()
                    .setup_defer_taskrun()
                    .build(RING)
                    .or_else(|_| IoUring::new(RING))?,
            ),
            Io::Epoll => {
                // SAFETY: a plain system call; its result is checked before use.
                let fd = unsafe { nix::libc::epoll_create1(nix::libc::EPOLL_CLOEXEC) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                Backend::Epoll(Epoll {
                    // SAFETY: a new descriptor, owned by nothing else.
                    fd: unsafe { OwnedFd::from_raw_fd(fd) },
                    waiting: Vec::new(),
                    writable: Vec::new(),
                    readable: Vec::new(),
                    events: Vec::with_capacity(256),
                })
            }
        };
        let mut thread = Self {
            backend,
            listener,
            workers,
            next_worker: n,
            conns: Vec::new(),
            free: Vec::new(),
            done: VecDeque::new(),
        };
        let fd = thread.listener.as_raw_fd();
        if let Backend::Epoll(e) = &mut thread.backend {
            thread.listener.set_nonblocking(true)?;
            e.watch(fd)?;
        }
        Ok(thread)
    }

    fn run(mut self) -> io::Result<()> {
        self.push_accept()?;
        loop {
            // What completed already (the epoll backend completes a call at once when it can)
            // is handled before the thread waits for more.
            while let Some((data, result)) = self.done.pop_front() {
                let Some((slot, op)) = Op::of(data) else {
                    continue;
                };
                if op == Op::Accept {
                    self.accepted(result)?;
                } else {
                    self.advance(slot, op, result)?;
                }
            }
            match &mut self.backend {
                Backend::Uring(ring) => {
                    match ring.submit_and_wait(1) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                    self.done
                        .extend(ring.completion().map(|c| (c.user_data(), c.result())));
                }
                Backend::Epoll(e) => e.wait(&mut self.done)?,
            }
        }
    }

    fn push(&mut self, sub: Sub) -> io::Result<()> {
        match &mut self.backend {
            Backend::Uring(ring) => {
                let fd = types::Fd(sub.fd);
                let entry = match sub.kind {
                    Kind::Accept => opcode::Accept::new(fd, ptr::null_mut(), ptr::null_mut())
                        .flags(nix::libc::SOCK_CLOEXEC)
                        .build(),
                    Kind::Recv => opcode::Recv::new(fd, sub.ptr, sub.len).build(),
                    Kind::Send => opcode::Send::new(fd, sub.ptr, sub.len)
                        .flags(nix::libc::MSG_NOSIGNAL)
                        .build(),
                };
                let entry = entry.user_data(sub.data);
                loop {
                    // SAFETY: every buffer an entry points into belongs to a boxed `Conn` (the
                    // accept needs none) that is neither moved, resized nor dropped until the
                    // entry's completion is reaped: one operation per connection at a time.
                    if unsafe { ring.submission().push(&entry) }.is_ok() {
                        return Ok(());
                    }
                    ring.submit()?;
                }
            }
            Backend::Epoll(e) => e.start(sub, &mut self.done),
        }
    }

    /// A descriptor the epoll backend must watch; nothing for io_uring.
    fn watch(&mut self, fd: RawFd) -> io::Result<()> {
        match &mut self.backend {
            Backend::Uring(_) => Ok(()),
            Backend::Epoll(e) => e.watch(fd),
        }
    }

    fn push_accept(&mut self) -> io::Result<()> {
        self.push(Sub {
            kind: Kind::Accept,
            fd: self.listener.as_raw_fd(),
            ptr: ptr::null_mut(),
            len: 0,
            data: Op::Accept.data(0),
        })
    }

    fn accepted(&mut self, result: i32) -> io::Result<()> {
        self.push_accept()?;
        if result < 0 {
            tracing::warn!(error = %io::Error::from_raw_os_error(-result), "accept failed");
            return Ok(());
        }
        // SAFETY: a successful accept's result is a new descriptor, owned by nothing else.
        let client = unsafe { TcpStream::from_raw_fd(result) };
        let worker_id = self.next_worker % self.workers.len();
        self.next_worker += 1;
        let (worker, client_ip) = match (
            UnixStream::connect(&self.workers[worker_id]),
            client.peer_addr(),
        ) {
            (Ok(w), Ok(peer)) => (w, peer.ip().to_string().into_bytes()),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "no worker connection for a client");
                return Ok(());
            }
        };
        client.set_nodelay(true)?;
        if let Backend::Epoll(_) = self.backend {
            client.set_nonblocking(true)?;
            worker.set_nonblocking(true)?;
        }
        self.watch(client.as_raw_fd())?;
        self.watch(worker.as_raw_fd())?;
        let conn = Box::new(Conn {
            client,
            worker,
            worker_id: worker_id + 1,
            client_ip,
            read: BytesMut::with_capacity(READ_CHUNK),
            answer: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(512),
            sent: 0,
            is_head: false,
            request_id: Vec::with_capacity(32),
            close: false,
        });
        let slot = match self.free.pop() {
            Some(slot) => {
                self.conns[slot] = Some(conn);
                slot
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        self.recv_client(slot)
    }

    fn conn(&mut self, slot: usize) -> Option<&mut Conn> {
        self.conns.get_mut(slot)?.as_deref_mut()
    }

    fn close(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot)
            && let Some(c) = c.take()
        {
            if let Backend::Epoll(e) = &mut self.backend {
                // Closing a descriptor drops its epoll registration; what waited on it is void.
                e.forget(c.client.as_raw_fd());
                e.forget(c.worker.as_raw_fd());
            }
            self.free.push(slot);
        }
    }

    fn recv_client(&mut self, slot: usize) -> io::Result<()> {
        let Some(c) = self.conn(slot) else {
            return Ok(());
        };
        c.read.reserve(READ_CHUNK);
        let room = c.read.spare_capacity_mut();
        let sub = Sub {
            kind: Kind::Recv,
            fd: c.client.as_raw_fd(),
            ptr: room.as_mut_ptr().cast(),
            len: room.len() as u32,
            data: Op::ClientRecv.data(slot),
        };
        self.push(sub)
    }

    fn recv_worker(&mut self, slot: usize) -> io::Result<()> {
        let Some(c) = self.conn(slot) else {
            return Ok(());
        };
        c.answer.reserve(READ_CHUNK);
        let room = c.answer.spare_capacity_mut();
        let sub = Sub {
            kind: Kind::Recv,
            fd: c.worker.as_raw_fd(),
            ptr: room.as_mut_ptr().cast(),
            len: room.len() as u32,
            data: Op::WorkerRecv.data(slot),
        };
        self.push(sub)
    }

    /// Sends the rest of `out` to the worker (`to_worker`) or the client.
    fn send(&mut self, slot: usize, to_worker: bool) -> io::Result<()> {
        let Some(c) = self.conn(slot) else {
            return Ok(());
        };
        let (fd, op) = if to_worker {
            (c.worker.as_raw_fd(), Op::WorkerSend)
        } else {
            (c.client.as_raw_fd(), Op::ClientSend)
        };
        let rest = &mut c.out[c.sent..];
        let sub = Sub {
            kind: Kind::Send,
            fd,
            ptr: rest.as_mut_ptr(),
            len: rest.len() as u32,
            data: op.data(slot),
        };
        self.push(sub)
    }

    fn advance(&mut self, slot: usize, op: Op, result: i32) -> io::Result<()> {
        let Some(c) = self.conn(slot) else {
            return Ok(());
        };
        match op {
            Op::ClientRecv if result <= 0 => self.close(slot),
            Op::ClientRecv => {
                // SAFETY: the kernel wrote `result` bytes into the room `recv_client` offered.
                unsafe { c.read.set_len(c.read.len() + result as usize) };
                return self.request(slot);
            }
            Op::WorkerSend | Op::ClientSend if result <= 0 => self.close(slot),
            Op::WorkerSend | Op::ClientSend => {
                c.sent += result as usize;
                if c.sent < c.out.len() {
                    return self.send(slot, op == Op::WorkerSend);
                }
                c.sent = 0;
                if op == Op::WorkerSend {
                    return self.recv_worker(slot);
                }
                if c.close {
                    self.close(slot);
                } else if c.read.is_empty() {
                    return self.recv_client(slot);
                } else {
                    // A pipelined request arrived with the last one.
                    return self.request(slot);
                }
            }
            Op::WorkerRecv if result <= 0 => return self.refuse(slot, BAD_GATEWAY),
            Op::WorkerRecv => {
                // SAFETY: the kernel wrote `result` bytes into the room `recv_worker` offered.
                unsafe { c.answer.set_len(c.answer.len() + result as usize) };
                return self.response(slot);
            }
            Op::Accept => {}
        }
        Ok(())
    }

    /// Parses what the client sent: forwards a plain request, asks for more of a partial one.
    fn request(&mut self, slot: usize) -> io::Result<()> {
        let Some(c) = self.conn(slot) else {
            return Ok(());
        };
        // No body is plain here (a bound of 0): the prototype forwards bodiless requests only,
        // and refuses the rest as not plain.
        match parse(&mut c.read, MAX_HEAD, 0) {
            Parsed::Partial => self.recv_client(slot),
            Parsed::Plain(parts, close, _) => {
                c.close = close;
                c.is_head = parts.method == http::Method::HEAD;
                let theirs = parts.headers.get(&crate::http::headers::X_REQUEST_ID);
                let minted = theirs.is_none().then(mint_request_id);
                c.request_id.clear();
                if let Some(id) = theirs.or(minted.as_ref()) {
                    c.request_id.extend_from_slice(id.as_bytes());
                }
                c.out.clear();
                let added = Added {
                    client_ip: &c.client_ip,
                    request_id: minted.as_ref().map(|v| v.as_bytes()),
                };
                encode_head(&mut c.out, &parts, added, false);
                self.send(slot, true)
            }
            Parsed::Refused(refusal) => {
                c.out.clear();
                refusal.encode(&mut c.out);
                c.close = true;
                self.send(slot, false)
            }
            Parsed::Other(_) => self.refuse(slot, NOT_PLAIN),
        }
    }

    /// Parses what the worker sent: answers the client once the whole response is in.
    fn response(&mut self, slot: usize) -> io::Result<()> {
        let Some(c) = self.conn(slot) else {
            return Ok(());
        };
        let mut reusable = true;
        let head = match parse_head::<()>(&mut c.answer, &mut reusable, c.is_head, MAX_HEAD) {
            Ok(None) => return self.recv_worker(slot),
            Ok(Some(head)) => head,
            Err(_) => return self.refuse(slot, BAD_GATEWAY),
        };
        let Start::Complete(body) = head.body else {
            return self.refuse(slot, BAD_GATEWAY);
        };
        if !reusable || !c.answer.is_empty() {
            // The worker's side of the pair cannot carry another request: so neither can this.
            c.close = true;
        }
        let parts = head.parts;
        let out = &mut c.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(parts.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        // parse_head took the framing headers off; the length is written below (RFC 9112 §6.2).
        for (name, value) in &parts.headers {
            if *name == http::header::CONTENT_LENGTH {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !parts.headers.contains_key(DATE) {
            date(out);
        }
        if !c.request_id.is_empty()
            && !parts
                .headers
                .contains_key(&crate::http::headers::X_REQUEST_ID)
        {
            out.extend_from_slice(b"x-request-id: ");
            out.extend_from_slice(&c.request_id);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-worker-id: ");
        out.extend_from_slice(itoa::Buffer::new().format(c.worker_id).as_bytes());
        out.extend_from_slice(b"\r\n");
        let bodiless = c.is_head
            || parts.status == http::StatusCode::NO_CONTENT
            || parts.status == http::StatusCode::NOT_MODIFIED;
        if !bodiless {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if c.close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        self.send(slot, false)
    }

    /// Answers with `canned` and closes after it.
    fn refuse(&mut self, slot: usize, canned: &[u8]) -> io::Result<()> {
        let Some(c) = self.conn(slot) else {
            return Ok(());
        };
        c.out.clear();
        c.out.extend_from_slice(canned);
        c.sent = 0;
        c.close = true;
        self.send(slot, false)
    }
}

impl Epoll {
    fn watch(&mut self, fd: RawFd) -> io::Result<()> {
        self.slot(fd);
        self.readable[fd as usize] = true;
        self.ctl(nix::libc::EPOLL_CTL_ADD, fd, nix::libc::EPOLLIN)
    }

    /// Makes room for `fd` in the per-descriptor tables.
    fn slot(&mut self, fd: RawFd) -> usize {
        let at = fd as usize;
        if self.waiting.len() <= at {
            self.waiting.resize(at + 1, None);
            self.writable.resize(at + 1, false);
            self.readable.resize(at + 1, false);
        }
        at
    }

    fn ctl(&mut self, op: i32, fd: RawFd, interest: i32) -> io::Result<()> {
        let mut event = nix::libc::epoll_event {
            events: (interest | nix::libc::EPOLLET) as u32,
            u64: fd as u64,
        };
        // SAFETY: both descriptors are open, and `event` lives through the call.
        if unsafe { nix::libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn forget(&mut self, fd: RawFd) {
        if let Some(w) = self.waiting.get_mut(fd as usize) {
            *w = None;
        }
        if let Some(w) = self.writable.get_mut(fd as usize) {
            *w = false;
        }
        if let Some(r) = self.readable.get_mut(fd as usize) {
            *r = false;
        }
    }

    /// Makes the call now: its result is a completion, unless it would block, when it waits for
    /// its descriptor to be ready.
    fn start(&mut self, sub: Sub, done: &mut VecDeque<(u64, i32)>) -> io::Result<()> {
        let at = self.slot(sub.fd);
        let reads = sub.kind != Kind::Send;
        if !reads || self.readable[at] {
            let result = call(&sub);
            // A read of less than there was room for drained the socket (epoll is edge
            // triggered); an accept, only once one would block.
            match sub.kind {
                Kind::Recv => self.readable[at] = result > 0 && result as u32 >= sub.len,
                Kind::Accept => self.readable[at] = result >= 0,
                Kind::Send => {}
            }
            if result != -nix::libc::EAGAIN {
                done.push_back((sub.data, result));
                return Ok(());
            }
        }
        if sub.kind == Kind::Send && !self.writable[at] {
            self.ctl(
                nix::libc::EPOLL_CTL_MOD,
                sub.fd,
                nix::libc::EPOLLIN | nix::libc::EPOLLOUT,
            )?;
            self.writable[at] = true;
        }
        self.waiting[at] = Some(sub);
        Ok(())
    }

    fn wait(&mut self, done: &mut VecDeque<(u64, i32)>) -> io::Result<()> {
        self.events.clear();
        let room = self.events.capacity() as i32;
        // SAFETY: the kernel writes at most `room` events into the vector's spare capacity.
        let n = unsafe {
            nix::libc::epoll_wait(self.fd.as_raw_fd(), self.events.as_mut_ptr(), room, -1)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: the kernel filled the first `n` entries.
        unsafe { self.events.set_len(n as usize) };
        for i in 0..self.events.len() {
            let fd = self.events[i].u64 as usize;
            if let Some(r) = self.readable.get_mut(fd) {
                *r |= self.events[i].events
                    & (nix::libc::EPOLLIN | nix::libc::EPOLLERR | nix::libc::EPOLLHUP) as u32
                    != 0;
            }
            if let Some(sub) = self.waiting.get_mut(fd).and_then(Option::take) {
                self.start(sub, done)?;
            }
        }
        Ok(())
    }
}

/// The call `sub` names, made non-blocking: its result as io_uring would give it (a count, or
/// a negated errno).
fn call(sub: &Sub) -> i32 {
    use nix::libc;
    // SAFETY: `ptr` and `len` describe a buffer of the connection making the call (see `push`),
    // and `fd` is open.
    let n = unsafe {
        match sub.kind {
            Kind::Accept => {
                libc::accept4(sub.fd, ptr::null_mut(), ptr::null_mut(), libc::SOCK_CLOEXEC) as isize
            }
            Kind::Recv => libc::recv(sub.fd, sub.ptr.cast(), sub.len as usize, 0),
            Kind::Send => libc::send(
                sub.fd,
                sub.ptr.cast_const().cast(),
                sub.len as usize,
                libc::MSG_NOSIGNAL,
            ),
        }
    };
    if n < 0 {
        -io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    } else {
        n as i32
    }
}
