//! The fd-passing channel of handoff dispatch (`DISPATCH=handoff`): the master sends an accepted
//! TCP connection's descriptor to a worker over a datagram socketpair, and the worker receives it.
//!
//! A datagram socket rather than a stream, because message boundaries keep exactly one descriptor
//! per message: the payload is one byte and the descriptor rides in `SCM_RIGHTS`.
//!
//! Depends on nothing else in the crate.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use tokio::net::UnixDatagram;

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
        let fds = [conn];
        self.0
            .async_io(tokio::io::Interest::WRITABLE, || {
                let cmsg = [ControlMessage::ScmRights(&fds)];
                sendmsg::<()>(
                    self.0.as_raw_fd(),
                    &[IoSlice::new(&[1])],
                    &cmsg,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map(|_| ())
                .map_err(io::Error::from)
            })
            .await
    }

    /// Receives the next descriptor; `Ok(None)` when the master's end closed.
    pub(crate) async fn recv(&self) -> io::Result<Option<OwnedFd>> {
        self.0
            .async_io(tokio::io::Interest::READABLE, || {
                let mut byte = [0u8; 1];
                let mut iov = [IoSliceMut::new(&mut byte)];
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
                received
                    .map(Some)
                    .ok_or_else(|| io::Error::other("handoff message carried no descriptor"))
            })
            .await
    }
}
