//! An upgraded connection (a WebSocket) once the client and the worker both switched protocols:
//! the client's socket and the worker's, spliced byte for byte until both directions ended.
//!
//! Only for the upgrades the master keeps: over TLS, with a front, with `WS_HANDOFF=off`, or when
//! handing the connection to its worker failed. A plain TCP upgrade is otherwise handed over
//! (`edge::upgrade`), and the master carries none of its bytes.
//!
//! From the 101 on, the master has no say in what the bytes mean, so the cheapest splice is the
//! right one:
//! - **The raw sockets.** hyper hands back the very stream it served each side on
//!   ([`Upgraded::downcast`]), with the bytes it had read past the head; the splice runs on the
//!   client's `TcpStream` (or its TLS stream) and the worker's `UnixStream`, with no boxed
//!   `Upgraded`, rewind buffer or `TokioIo` adapter in between. Bytes already read past either
//!   head (the worker's first frame behind its 101, say) go to the other side first.
//! - **No buffer while idle.** Each read goes through one buffer per edge thread and is written
//!   to the other side at once; only what the other side does not take then waits on the heap, and that
//!   side's reading stops until it was taken (backpressure), after which the buffer is freed. An
//!   idle WebSocket holds its task and its two sockets, and no buffer (`tokio::io::copy_bidirectional`
//!   holds two of 8 KiB each for the socket's whole life).
//!
//! Each direction ends on its own: the end of one side's stream is passed on as a shutdown of the
//! other's write side (a half-close, as TCP has it), and the splice is over when both ended or
//! either failed; then both sockets close. So a worker that dies mid-stream closes its client's
//! socket.
//!
//! Depends on `http::server` (the client's stream as the plain loop handed it to hyper).

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::server::TlsStream;

use crate::http::server::Rewind;

/// The most one read takes off a socket: large enough that a 1 MiB message crosses in 16 reads,
/// not 128 as with 8 KiB.
const CHUNK: usize = 64 * 1024;

thread_local! {
    /// The edge thread's one read buffer, shared by every splice it runs: what a read brings in is
    /// written to the other side before the thread does anything else, so no socket holds it. (On
    /// the stack instead, 64 KiB would be probed page by page on every poll.)
    static SCRATCH: RefCell<Box<[MaybeUninit<u8>]>> = RefCell::new(Box::new_uninit_slice(CHUNK));
}

/// Splices the client's upgraded connection to the worker's until both directions ended.
pub(crate) async fn splice_upgraded(client: Upgraded, worker: Upgraded) -> io::Result<()> {
    // Copied out at once: the bytes are a slice of hyper's read buffer, which they would keep
    // allocated for the socket's whole life.
    let (worker, from_worker) = match worker.downcast::<TokioIo<UnixStream>>() {
        Ok(parts) => (Side::Raw(parts.io.into_inner()), parts.read_buf.to_vec()),
        Err(worker) => {
            tracing::debug!("an upgraded worker stream of another type: spliced through hyper's");
            (Side::Hyper(TokioIo::new(worker)), Vec::new())
        }
    };
    let client = match client.downcast::<TokioIo<Rewind<TcpStream>>>() {
        Ok(parts) => {
            let (unread, io) = parts.io.into_inner().into_parts();
            let to_worker = early_bytes(parts.read_buf, unread);
            return splice(Side::Raw(io), worker, to_worker, from_worker).await;
        }
        Err(client) => client,
    };
    match client.downcast::<TokioIo<Rewind<TlsStream<TcpStream>>>>() {
        Ok(parts) => {
            let (unread, io) = parts.io.into_inner().into_parts();
            let to_worker = early_bytes(parts.read_buf, unread);
            splice(Side::Raw(io), worker, to_worker, from_worker).await
        }
        Err(client) => {
            tracing::debug!("an upgraded client stream of another type: spliced through hyper's");
            let client = Side::<TcpStream>::Hyper(TokioIo::new(client));
            splice(client, worker, Vec::new(), from_worker).await
        }
    }
}

/// What the client sent past its handshake's head, in order: what hyper had read of it, then
/// what the plain loop had read and hyper had not (see [`Rewind`]). Copied, for the reason above.
fn early_bytes(read_by_hyper: Bytes, unread: [Bytes; 2]) -> Vec<u8> {
    let [head, rest] = unread;
    [read_by_hyper, head, rest].concat()
}

/// Copies `a` to `b` and `b` to `a` until both directions ended, starting with `to_b` and `to_a`,
/// bytes already read from the other side. Returns the first error of either direction.
pub(crate) async fn splice<A, B>(mut a: A, mut b: B, to_b: Vec<u8>, to_a: Vec<u8>) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a_to_b = Direction::with(to_b);
    let mut b_to_a = Direction::with(to_a);
    std::future::poll_fn(|cx| {
        let (there, back) = SCRATCH.with_borrow_mut(|scratch| {
            let there = a_to_b.poll(&mut a, &mut b, cx, scratch)?;
            let back = b_to_a.poll(&mut b, &mut a, cx, scratch)?;
            Ok::<_, io::Error>((there, back))
        })?;
        if there.is_ready() && back.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// One direction of the splice.
struct Direction {
    /// Read from the source, not yet taken by the destination: empty (no allocation) unless the
    /// destination pushed back.
    held: Vec<u8>,
    /// How much of `held` the destination has taken.
    sent: usize,
    /// Written since the destination was last flushed (a TLS stream holds what it was given).
    unflushed: bool,
    /// The source ended.
    eof: bool,
    /// The destination's write side is shut: this direction is over.
    done: bool,
}

impl Direction {
    fn with(held: Vec<u8>) -> Self {
        Self {
            held,
            sent: 0,
            unflushed: false,
            eof: false,
            done: false,
        }
    }

    fn poll<S, D>(
        &mut self,
        src: &mut S,
        dst: &mut D,
        cx: &mut Context<'_>,
        scratch: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<()>>
    where
        S: AsyncRead + Unpin,
        D: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            // What the destination pushed back on goes first, and nothing is read until it went.
            while self.sent < self.held.len() {
                let n = ready!(Pin::new(&mut *dst).poll_write(cx, &self.held[self.sent..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.sent += n;
                self.unflushed = true;
            }
            if !self.held.is_empty() {
                self.held = Vec::new();
                self.sent = 0;
            }
            if self.eof {
                ready!(Pin::new(&mut *dst).poll_flush(cx))?;
                ready!(Pin::new(&mut *dst).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::uninit(scratch);
            if Pin::new(&mut *src).poll_read(cx, &mut buf)?.is_pending() {
                if self.unflushed {
                    ready!(Pin::new(&mut *dst).poll_flush(cx))?;
                    self.unflushed = false;
                }
                return Poll::Pending;
            }
            let got = buf.filled();
            if got.is_empty() {
                self.eof = true;
                continue;
            }
            let mut off = 0;
            while off < got.len() {
                match Pin::new(&mut *dst).poll_write(cx, &got[off..])? {
                    Poll::Ready(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(n) => {
                        off += n;
                        self.unflushed = true;
                    }
                    Poll::Pending => {
                        // The destination is full: the rest waits here, and so does the source.
                        self.held = got[off..].to_vec();
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

/// One side of the splice: the raw stream, or hyper's `Upgraded` when it is not one the edge
/// serves on (never, today: kept so an unexpected type degrades to a slower splice, not a failure).
enum Side<R> {
    Raw(R),
    Hyper(TokioIo<Upgraded>),
}

impl<R: AsyncRead + Unpin> AsyncRead for Side<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Side::Raw(io) => Pin::new(io).poll_read(cx, buf),
            Side::Hyper(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl<R: AsyncWrite + Unpin> AsyncWrite for Side<R> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Side::Raw(io) => Pin::new(io).poll_write(cx, buf),
            Side::Hyper(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Side::Raw(io) => Pin::new(io).poll_flush(cx),
            Side::Hyper(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Side::Raw(io) => Pin::new(io).poll_shutdown(cx),
            Side::Hyper(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Two connected pairs: (client, a) and (b, worker); `splice(a, b)` joins them.
    fn pairs(capacity: usize) -> [tokio::io::DuplexStream; 4] {
        let (client, a) = tokio::io::duplex(capacity);
        let (b, worker) = tokio::io::duplex(capacity);
        [client, a, b, worker]
    }

    #[tokio::test]
    async fn bytes_read_past_either_head_go_first_and_in_order() {
        let [mut client, a, b, mut worker] = pairs(1024);
        let task = tokio::spawn(splice(a, b, b"early ".to_vec(), b"first ".to_vec()));
        client.write_all(b"then").await.unwrap();
        worker.write_all(b"then").await.unwrap();
        let mut got = [0u8; 10];
        worker.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"early then");
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"first then");
        drop((client, worker));
        let _ = task.await.unwrap();
    }

    #[tokio::test]
    async fn a_large_transfer_through_small_pipes_arrives_whole() {
        // 4 MiB through 1 KiB pipes: the destination pushes back on nearly every chunk.
        let [mut client, a, b, mut worker] = pairs(1024);
        let task = tokio::spawn(splice(a, b, Vec::new(), Vec::new()));
        let sent: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                client.write_all(&sent).await.unwrap();
                client.shutdown().await.unwrap();
                client
            })
        };
        let mut got = Vec::new();
        worker.read_to_end(&mut got).await.unwrap();
        assert!(got == sent, "{} bytes arrived of {}", got.len(), sent.len());
        // The end of the client's stream reached the worker as an end; the other way still works.
        worker.write_all(b"bye").await.unwrap();
        drop(worker);
        let mut client = writer.await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"bye");
        task.await.unwrap().unwrap();
    }
}
