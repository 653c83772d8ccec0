//! The fd-passing channel of handoff dispatch (`DISPATCH=handoff`): the master sends an accepted
//! TCP connection's descriptor to a worker over a datagram socketpair, and the worker receives it.
//!
//! Proxy dispatch uses the same channel for WebSocket upgrades (see `edge::upgrade`): the master
//! has then read the connection's first bytes already (the upgrade's head, maybe a frame behind
//! it), and they ride in the same message as the descriptor, so the worker reads them first.
//!
//! A datagram socket rather than a stream, because message boundaries keep exactly one descriptor
//! per message, with its bytes. The payload is a tag byte: [`FRESH`] for a connection nothing was
//! read from, or [`UPGRADE`] followed by the handoff's id (8 bytes, little-endian: the worker
//! names it when the connection closes) and the bytes read; the descriptor rides in `SCM_RIGHTS`.
//!
//! Depends on nothing else in the crate.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use bytes::Bytes;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use tokio::net::UnixDatagram;

/// The tag of a connection passed before anything was read from it (`DISPATCH=handoff`).
const FRESH: u8 = 1;
/// The tag of an upgrade passed with the bytes the master read of it (proxy dispatch).
const UPGRADE: u8 = 2;
/// The tag and the id in front of an upgrade's bytes.
const UPGRADE_HEADER: usize = 1 + 8;

/// The most bytes an upgrade's message carries: a head of the default `MAX_HEADER_SIZE` and what
/// came with it. The datagram stays well inside a Unix socket's default send buffer (208 KiB);
/// a connection that read more than this is not handed over (the master splices it instead).
pub(crate) const MAX_READ: usize = 64 * 1024;

/// A connection received from the master.
#[derive(Debug)]
pub(crate) enum Handed {
    /// Accepted and passed on untouched (`DISPATCH=handoff`).
    Fresh(OwnedFd),
    /// A WebSocket upgrade, with the bytes the master had read of it, in order.
    Upgrade {
        /// The connection.
        fd: OwnedFd,
        /// Chosen by the master; the worker reports it when the connection closes.
        id: u64,
        /// The upgrade's head and whatever followed it.
        read: Bytes,
    },
}

/// The master's end of a worker's handoff channel.
#[derive(Debug)]
pub struct HandoffChannel(UnixDatagram);

impl HandoffChannel {
    /// Wraps one end of a non-blocking datagram socketpair.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        let socket = std::os::unix::net::UnixDatagram::from(fd);
        // An inherited descriptor keeps the blocking mode it was created with.
        socket.set_nonblocking(true)?;
        UnixDatagram::from_std(socket).map(Self)
    }

    /// Sends `conn`'s descriptor. The caller closes its copy afterwards; the worker's copy keeps
    /// the connection open.
    pub(crate) async fn send(&self, conn: RawFd) -> io::Result<()> {
        self.0
            .async_io(tokio::io::Interest::WRITABLE, || {
                send_one(&self.0, conn, &[&[FRESH]])
            })
            .await
    }

    /// Sends an upgrade's descriptor with `read`, the bytes already read from it, at once or not
    /// at all: `WouldBlock` when the worker's queue is full (it is not taking connections), and
    /// the caller keeps the connection. `read` must be at most [`MAX_READ`] bytes.
    pub(crate) fn try_send_upgrade(&self, conn: RawFd, id: u64, read: &[&[u8]]) -> io::Result<()> {
        let mut header = [0u8; UPGRADE_HEADER];
        header[0] = UPGRADE;
        header[1..].copy_from_slice(&id.to_le_bytes());
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + read.len());
        parts.push(&header);
        parts.extend_from_slice(read);
        // Straight to the non-blocking socket, not through the reactor's readiness, which a
        // socket nobody has waited on yet does not have: the kernel's EAGAIN is the answer.
        send_one(&self.0, conn, &parts)
    }

    /// Receives the next connection into `buf` (room for the largest message, kept by the caller
    /// across calls); `Ok(None)` when the master's end closed.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Handed>> {
        self.0
            .async_io(tokio::io::Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(buf)];
                let mut space = nix::cmsg_space!([RawFd; 1]);
                let msg = recvmsg::<()>(
                    self.0.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                )
                .map_err(io::Error::from)?;
                if msg.bytes == 0 {
                    return Ok(None);
                }
                let (len, truncated) = (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC));
                let mut received = None;
                for cmsg in msg.cmsgs().map_err(io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(fds) = cmsg {
                        for fd in fds {
                            // SAFETY: the kernel just installed this descriptor in our table for us.
                            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                            if received.is_none() {
                                received = Some(owned);
                            }
                        }
                    }
                }
                let fd = received
                    .ok_or_else(|| io::Error::other("handoff message carried no descriptor"))?;
                if truncated {
                    return Err(io::Error::other("a handoff message larger than its buffer"));
                }
                Ok(Some((fd, len)))
            })
            .await
            .and_then(|got| {
                let Some((fd, len)) = got else {
                    return Ok(None);
                };
                match buf[..len] {
                    [FRESH] => Ok(Some(Handed::Fresh(fd))),
                    [UPGRADE, ..] if len >= UPGRADE_HEADER => {
                        let mut id = [0u8; 8];
                        id.copy_from_slice(&buf[1..UPGRADE_HEADER]);
                        Ok(Some(Handed::Upgrade {
                            fd,
                            id: u64::from_le_bytes(id),
                            read: Bytes::copy_from_slice(&buf[UPGRADE_HEADER..len]),
                        }))
                    }
                    _ => Err(io::Error::other("a handoff message of an unknown kind")),
                }
            })
    }
}

/// The room [`HandoffChannel::recv`] needs for the largest message.
pub(crate) const MAX_MESSAGE: usize = UPGRADE_HEADER + MAX_READ;

/// One `sendmsg` of `parts` with `conn` in `SCM_RIGHTS`.
fn send_one(socket: &UnixDatagram, conn: RawFd, parts: &[&[u8]]) -> io::Result<()> {
    let fds = [conn];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(|_| ())
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn pair() -> (HandoffChannel, HandoffChannel) {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        (
            HandoffChannel::new(a.into()).unwrap(),
            HandoffChannel::new(b.into()).unwrap(),
        )
    }

    #[tokio::test]
    async fn an_upgrade_arrives_with_its_id_and_bytes_and_a_fresh_one_with_none() {
        let (master, worker) = pair();
        let (conn, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = conn.as_fd().as_raw_fd();
        let read = vec![7u8; MAX_READ];
        // The fresh one first: a socket holding a quarter of its send buffer polls as not
        // writable, which `send` would wait out (in a cluster, one mode sends only one kind).
        master.send(fd).await.unwrap();
        master
            .try_send_upgrade(fd, 42, &[b"GET /ws", &read[7..]])
            .unwrap();
        let mut buf = vec![0u8; MAX_MESSAGE];
        assert!(matches!(
            worker.recv(&mut buf).await.unwrap(),
            Some(Handed::Fresh(_))
        ));
        match worker.recv(&mut buf).await.unwrap() {
            Some(Handed::Upgrade { id, read: got, .. }) => {
                assert_eq!(id, 42);
                assert_eq!(got.len(), MAX_READ);
                assert_eq!(&got[..7], b"GET /ws");
            }
            other => panic!("expected an upgrade, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_instead_of_waiting() {
        let (master, _worker) = pair();
        let (conn, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = conn.as_fd().as_raw_fd();
        // Nobody receives: the queue fills (max_dgram_qlen, or the buffer) and a send then fails.
        let mut refused = None;
        for i in 0..10_000 {
            if let Err(e) = master.try_send_upgrade(fd, i, &[&[0u8; 4096]]) {
                refused = Some(e.kind());
                break;
            }
        }
        assert_eq!(refused, Some(io::ErrorKind::WouldBlock));
    }
}
