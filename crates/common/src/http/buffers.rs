//! The plain loop's read and write buffers, held only while a connection has bytes in them: an
//! idle keep-alive connection holds none.
//!
//! Why: measured with 15,000 idle keep-alive connections (one `GET /ping` each, then nothing),
//! the master held 11.5 KB of RSS per connection against nginx's 0.7 KB. Each connection kept an
//! 8 KiB read buffer (of which the first read touches a page or two), a write buffer at whatever
//! size it grew to (up to a head plus a 16 KiB inline body), and a 4.4 KB future, 2.6 KB of it
//! room for the answer of a request in flight. nginx frees its buffers while a connection waits,
//! and so does this:
//!
//! - an empty read buffer reads through a buffer on the stack ([`poll_read`]), and keeps only the
//!   bytes that arrived (a head is usually a few hundred bytes): a connection with nothing to read
//!   allocates nothing, however often it is polled;
//! - between requests both buffers are given back ([`release`]), unless bytes of the next request
//!   are already in, which stay;
//! - the write buffer is taken when a response is written ([`write_buffer`]), from the thread's
//!   cache of them (`recycle`), and goes back there between requests;
//! - and `server` keeps the answer's future on the heap for the request's life only, in a block
//!   of the thread's cache (`recycle`).
//!
//! Measured side by side (same run, 15,000 connections): 11.5 → 3.9 KB per connection; what is
//! left is the connection's task and future (about 2.5 KB), its deadline and its socket's
//! registration with the runtime.
//!
//! What it costs per request: the copy of what a read brought in (one head) and one small
//! allocation for the read buffer (which the allocator's thread cache answers); the write buffer
//! and the answer's block come from the thread's caches, with no trip through the allocator.
//!
//! Depends on `head` and `recycle`.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

use super::head::{READ_CHUNK, reserve};
use super::recycle;

/// The write buffer's first size: a response head and a small body fit, and glibc serves it from
/// its per-thread cache (blocks up to 1032 bytes), which 1 KiB plus the block's header is not: at
/// 1024, measured with callgrind, each response paid a trip through the arena's bins.
const WRITE_START: usize = 512;

/// Reads what `io` has ready into `read`. An empty `read` (a connection between requests, or
/// before its first) reads through the stack and keeps only what arrived; otherwise the bytes go
/// straight behind those already there, the buffer growing as [`reserve`] says.
pub(crate) fn poll_read<I: AsyncRead + Unpin>(
    io: &mut I,
    cx: &mut Context<'_>,
    read: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if read.is_empty() {
        let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(io).poll_read(cx, &mut buf))?;
        let got = buf.filled();
        read.extend_from_slice(got);
        return Poll::Ready(Ok(got.len()));
    }
    reserve(read);
    tokio_util::io::poll_read_buf(Pin::new(io), cx, read)
}

/// A connection at rest between requests gives its buffers back; bytes already read of a next
/// (pipelined) request stay where they are. The write buffer goes to the thread's cache, for the
/// next response any connection of the thread writes (see `recycle`).
pub(crate) fn release(read: &mut BytesMut, write: &mut Vec<u8>) {
    if read.is_empty() {
        *read = BytesMut::new();
    }
    recycle::give_write_buffer(std::mem::take(write));
}

/// `write`, emptied and with room for a response head.
pub(crate) fn write_buffer(write: &mut Vec<u8>) -> &mut Vec<u8> {
    if write.capacity() == 0 {
        *write = recycle::write_buffer(WRITE_START);
    }
    write.clear();
    write.reserve(WRITE_START);
    write
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn read_once<I: AsyncRead + Unpin>(io: &mut I, read: &mut BytesMut) -> usize {
        std::future::poll_fn(|cx| poll_read(io, cx, read))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_empty_buffer_keeps_only_what_arrived() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut read = BytesMut::new();
        assert_eq!(read_once(&mut server, &mut read).await, 16);
        assert_eq!(&read[..], b"GET / HTTP/1.1\r\n");
        assert!(read.capacity() < READ_CHUNK, "{}", read.capacity());
        // A partial head grows the buffer in place and keeps every byte in order.
        client.write_all(b"Host: x\r\n\r\n").await.unwrap();
        assert_eq!(read_once(&mut server, &mut read).await, 11);
        assert_eq!(&read[..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    #[tokio::test]
    async fn a_read_larger_than_the_stack_buffer_comes_in_pieces_in_order() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let sent: Vec<u8> = (0..3 * READ_CHUNK + 5).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).await.unwrap();
        drop(client);
        let mut read = BytesMut::new();
        while read_once(&mut server, &mut read).await > 0 {}
        assert_eq!(&read[..], &sent[..]);
    }

    #[test]
    fn release_keeps_pipelined_bytes_and_frees_the_rest() {
        let (mut read, mut write) = (BytesMut::from(&b"GET /next"[..]), vec![0u8; 4096]);
        release(&mut read, &mut write);
        assert_eq!(&read[..], b"GET /next");
        assert_eq!(write.capacity(), 0);
        let mut read = BytesMut::with_capacity(READ_CHUNK);
        release(&mut read, &mut write);
        assert_eq!(read.capacity(), 0);
        assert!(write_buffer(&mut write).capacity() >= WRITE_START);
    }
}
