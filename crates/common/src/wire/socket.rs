//! [`WorkerSocket`]: one end of a master↔worker Unix stream connection, watched for readability
//! only until a write would block.
//!
//! Why: tokio registers a socket for both directions. On a Unix stream socket every read by the
//! peer frees buffer space and calls the kernel's write-space hook, which, for a socket some epoll
//! watches for writability, queues an event and wakes that epoll's thread if it sleeps. So each
//! request the worker read woke the master's edge thread for nothing, and each response the master
//! read woke the worker, both before the real answer came; on a machine whose context switches are
//! dear that is a good share of the proxy's cost (see `BENCHMARKS.md`). The small heads and
//! bodies of a request or response nearly always fit in the socket buffer, so a write is simply
//! made; only if one would block does the socket get a second registration, for writability,
//! which it keeps.

use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected Unix stream socket between the master and a worker.
#[derive(Debug)]
pub(crate) struct WorkerSocket {
    /// Registered for readability only.
    read: AsyncFd<UnixStream>,
    /// A duplicate descriptor of the same socket, registered for writability; made the first
    /// time a write would block.
    write: Option<AsyncFd<UnixStream>>,
}

impl WorkerSocket {
    /// Connects to the worker listening on `path`.
    pub(crate) async fn connect(path: &Path) -> io::Result<Self> {
        let stream = tokio::net::UnixStream::connect(path).await?;
        Self::from_tokio(stream)
    }

    /// Takes over a socket tokio registered (an accepted connection, say) and registers it anew.
    pub(crate) fn from_tokio(stream: tokio::net::UnixStream) -> io::Result<Self> {
        let stream = stream.into_std()?;
        stream.set_nonblocking(true)?;
        Ok(Self {
            read: register(stream, Interest::READABLE)?,
            write: None,
        })
    }

    /// Moves the socket to the runtime of the calling thread: deregistered from the one it was
    /// registered with and registered anew here. Each edge thread runs a runtime of its own, and
    /// a socket is only ever driven by the one it is registered with.
    pub(crate) fn rehome(self) -> io::Result<Self> {
        let Self { read, write } = self;
        // The duplicate is closed; it is made again here the first time a write would block.
        drop(write);
        Ok(Self {
            read: register(read.into_inner(), Interest::READABLE)?,
            write: None,
        })
    }

    /// Runs `op` (a non-blocking write) now, or, once it would block, whenever the socket is
    /// writable again.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        op: impl Fn(&UnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let write = match &mut self.write {
            Some(write) => write,
            None => match op(self.read.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let dup = self.read.get_ref().try_clone()?;
                    self.write.insert(register(dup, Interest::WRITABLE)?)
                }
                done => return Poll::Ready(done),
            },
        };
        loop {
            let mut guard = ready!(write.poll_write_ready(cx))?;
            match guard.try_io(|fd| op(fd.get_ref())) {
                Ok(done) => return Poll::Ready(done),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Registers `stream` with the runtime's reactor for `interest` alone.
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: the `UnixStream` owns its descriptor, which stays open and the same until the
    // `AsyncFd` that owns the stream drops it.
    Ok(unsafe { AsyncFd::register_with_interest(stream, interest) }?)
}

impl AsyncRead for WorkerSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.read.poll_read_ready(cx))?;
            // Read into the buffer's uninitialised room as tokio's own sockets do: zeroing it first
            // would cost a memset of the whole room on every read.
            // SAFETY: `recv` writes at most `len` bytes into that room (writing uninitialised
            // bytes is fine; none is read) and says how many it wrote; nothing is de-initialised.
            let unfilled = unsafe { buf.unfilled_mut() };
            let len = unfilled.len();
            // SAFETY: as above: a valid pointer to `len` writable bytes, and an open descriptor.
            let n = unsafe {
                nix::libc::recv(
                    guard.get_inner().as_raw_fd(),
                    unfilled.as_mut_ptr().cast(),
                    len,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => guard.clear_ready(),
                    io::ErrorKind::Interrupted => {}
                    _ => return Poll::Ready(Err(e)),
                }
                continue;
            }
            let n = n as usize;
            // Reading less than there was room for shows the socket is drained (epoll is edge
            // triggered): no need for another read to hear that it would block. tokio does the
            // same for its own sockets.
            if n > 0 && n < len {
                guard.clear_ready();
            }
            // SAFETY: `recv` initialised these `n` bytes.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            return Poll::Ready(Ok(()));
        }
    }
}

impl AsyncWrite for WorkerSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |mut s: &UnixStream| s.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |mut s: &UnixStream| s.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.read.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (WorkerSocket, WorkerSocket) {
        let (a, b) = tokio::net::UnixStream::pair().expect("socketpair");
        (
            WorkerSocket::from_tokio(a).expect("register a"),
            WorkerSocket::from_tokio(b).expect("register b"),
        )
    }

    #[tokio::test]
    async fn bytes_written_on_one_end_are_read_on_the_other() {
        let (mut a, mut b) = pair();
        a.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        a.shutdown().await.unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert!(
            rest.is_empty(),
            "after the peer's shutdown the reader sees the end"
        );
    }

    #[tokio::test]
    async fn a_write_larger_than_the_socket_buffer_waits_for_the_reader_and_arrives_whole() {
        let (mut a, mut b) = pair();
        // Far more than a Unix socket buffers: the writer must block, register for writability and
        // resume as the reader drains.
        let sent: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let expected = sent.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            assert!(
                a.write.is_some(),
                "a blocked write registered for writability"
            );
            a.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes arrive in order, unchanged");
    }

    #[tokio::test]
    async fn a_short_read_leaves_the_next_read_waiting_for_new_bytes() {
        let (mut a, mut b) = pair();
        a.write_all(b"one").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(b.read(&mut buf).await.unwrap(), 3);
        // The drained socket must not report stale readiness: the next read waits for "two".
        let reader = tokio::spawn(async move {
            let n = b.read(&mut buf).await.unwrap();
            buf[..n].to_vec()
        });
        tokio::task::yield_now().await;
        a.write_all(b"two").await.unwrap();
        assert_eq!(reader.await.unwrap(), b"two");
    }
}
