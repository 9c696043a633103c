//! The `NETLINK_KOBJECT_UEVENT` socket, as an async stream of [`Notice`]s.

use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType};
use tokio::io::unix::AsyncFd;

use crate::error::UeventError;
use crate::parse::{MAX_UEVENT_LEN, Uevent};

/// The kernel's multicast group; group 2 is udev's re-broadcast, which we do not want.
const KERNEL_GROUP: u32 = 1;

/// Asked for so that a burst (creating 64 VFs sends hundreds of events) is not dropped; the
/// kernel caps it at `rmem_max` unless we may force it.
const RECV_BUFFER: usize = 4 << 20;

/// What the socket says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// One kernel uevent.
    Event(Uevent),
    /// The receive buffer overflowed (`ENOBUFS`) and events were dropped: whatever the
    /// caller derives from events must be re-read from sysfs.
    Lost,
}

/// A socket bound to the kernel's uevent group in the caller's network namespace. PCI
/// events reach every namespace owned by the initial user namespace; `net` events only the
/// namespace the interface lives in.
pub struct UeventSocket {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for UeventSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UeventSocket").finish_non_exhaustive()
    }
}

impl UeventSocket {
    /// Opens and binds the socket; must be called inside a tokio runtime.
    pub fn open() -> Result<Self, UeventError> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::KOBJECT_UEVENT),
        )
        .map_err(|e| UeventError::Socket { cause: e.into() })?;
        // Forcing needs CAP_NET_ADMIN; without it the kernel's default limit applies.
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, RECV_BUFFER).is_err() {
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, RECV_BUFFER);
        }
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, KERNEL_GROUP))
            .map_err(|e| UeventError::Bind { cause: e.into() })?;
        let fd = register(fd).map_err(|cause| UeventError::Socket { cause })?;
        Ok(Self {
            fd,
            buf: vec![0; MAX_UEVENT_LEN + 1],
        })
    }

    /// The next notice; malformed datagrams and any not sent by the kernel are skipped.
    pub async fn recv(&mut self) -> Result<Notice, UeventError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Notice, UeventError>> {
        loop {
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(cause)) => return Poll::Ready(Err(UeventError::Recv { cause })),
                Poll::Pending => return Poll::Pending,
            };
            let buf = &mut self.buf;
            let got = guard.try_io(|fd| {
                rustix::net::recvfrom(fd.get_ref(), &mut buf[..], RecvFlags::empty())
                    .map(|(_, len, from)| (len, from))
                    .map_err(std::io::Error::from)
            });
            let (len, from) = match got {
                Err(_would_block) => continue,
                Ok(Ok(got)) => got,
                Ok(Err(e)) if e.raw_os_error() == Some(Errno::NOBUFS.raw_os_error()) => {
                    return Poll::Ready(Ok(Notice::Lost));
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(Err(cause)) => return Poll::Ready(Err(UeventError::Recv { cause })),
            };
            // Only the kernel (port 0) speaks for devices; anything else could be forged.
            let from_kernel = from
                .and_then(|a| SocketAddrNetlink::try_from(a).ok())
                .is_some_and(|a| a.pid() == 0);
            if !from_kernel {
                continue;
            }
            let Some(datagram) = self.buf.get(..len) else {
                // Longer than the buffer: truncated, so not a kernel uevent.
                continue;
            };
            match Uevent::parse(datagram) {
                Ok(ev) => return Poll::Ready(Ok(Notice::Event(ev))),
                Err(e) => tracing::debug!("skipping a uevent: {e}"),
            }
        }
    }
}

// The crate's only `unsafe`, as in `sriov-netlink`'s socket: tokio 1.54 deprecated the safe
// `AsyncFd::new` as unsound and left only the unsafe `register`, whose contract we uphold.
#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `OwnedFd` owns its descriptor (closed on drop, never replaced), so it stays open
    // and `as_raw_fd` returns the same value for as long as the `AsyncFd` owns it.
    unsafe { AsyncFd::register(fd) }.map_err(Into::into)
}

impl Stream for UeventSocket {
    type Item = Notice;

    /// Ends when the socket fails; the caller reopens it and rescans.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notice>> {
        let this = self.get_mut();
        match this.poll_recv(cx) {
            Poll::Ready(Ok(n)) => Poll::Ready(Some(n)),
            Poll::Ready(Err(e)) => {
                tracing::warn!("uevent socket failed: {e}");
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
