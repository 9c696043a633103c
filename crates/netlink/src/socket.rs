//! Driving a netlink socket that was created in some namespace from the current tokio runtime.

use std::io;
use std::task::{Context, Poll, ready};

use rtnetlink::sys::{AsyncSocket, Socket, SocketAddr};
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};
use crate::netns::Netns;

/// A netlink socket registered with tokio's reactor.
///
/// netlink-sys ships `TokioSocket`, but it can only adopt an existing socket through
/// `FromRawFd` and panics on errors, so we wrap the `Socket` ourselves.
pub(crate) struct NsSocket(AsyncFd<Socket>);

impl NsSocket {
    // The crate's only `unsafe`: tokio 1.54 deprecated the safe `AsyncFd::new` as unsound and
    // left only the unsafe `register`, whose contract we uphold (see SAFETY below).
    #[allow(unsafe_code)]
    pub(crate) fn adopt(socket: Socket) -> io::Result<Self> {
        socket.set_non_blocking(true)?;
        // SAFETY: `Socket` owns its file descriptor (it closes it on drop and has no way to
        // replace it), so the fd stays open and `as_raw_fd` returns the same value for as long
        // as the `AsyncFd` owns the socket.
        let registered = unsafe { AsyncFd::register(socket) };
        registered.map(NsSocket).map_err(|e| e.into())
    }
}

impl AsyncSocket for NsSocket {
    fn socket_ref(&self) -> &Socket {
        self.0.get_ref()
    }

    fn socket_mut(&mut self) -> &mut Socket {
        self.0.get_mut()
    }

    fn new(protocol: isize) -> io::Result<Self> {
        Self::adopt(Socket::new(protocol)?)
    }

    fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            if let Ok(result) = guard.try_io(|s| s.get_ref().send(buf, 0)) {
                return Poll::Ready(result);
            }
        }
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        addr: &SocketAddr,
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            if let Ok(result) = guard.try_io(|s| s.get_ref().send_to(buf, addr, 0)) {
                return Poll::Ready(result);
            }
        }
    }

    fn poll_recv<B>(&self, cx: &mut Context<'_>, buf: &mut B) -> Poll<io::Result<()>>
    where
        B: bytes::BufMut,
    {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            if let Ok(result) = guard.try_io(|s| s.get_ref().recv(buf, 0)) {
                return Poll::Ready(result.map(|_| ()));
            }
        }
    }

    fn poll_recv_from<B>(&self, cx: &mut Context<'_>, buf: &mut B) -> Poll<io::Result<SocketAddr>>
    where
        B: bytes::BufMut,
    {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            if let Ok(result) = guard.try_io(|s| s.get_ref().recv_from(buf, 0)) {
                return Poll::Ready(result.map(|(_, addr)| addr));
            }
        }
    }

    fn poll_recv_from_full(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Vec<u8>, SocketAddr)>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            if let Ok(result) = guard.try_io(|s| s.get_ref().recv_from_full()) {
                return Poll::Ready(result);
            }
        }
    }
}

fn socket_err(netns: &Netns) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::Socket {
        netns: netns.to_string(),
        source,
    }
}

fn ensure_runtime(netns: &Netns) -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().map_err(|_| Error::Socket {
        netns: netns.to_string(),
        source: io::Error::other("no tokio runtime (with IO enabled) on this thread"),
    })
}

/// An rtnetlink request handle whose socket lives in `netns`. The connection task is spawned
/// on the current runtime and ends when the last clone of the handle is dropped.
pub(crate) fn request_handle(netns: &Netns) -> Result<rtnetlink::Handle> {
    let runtime = ensure_runtime(netns)?;
    let socket = netns.route_socket()?;
    let _enter = runtime.enter();
    let socket = NsSocket::adopt(socket).map_err(socket_err(netns))?;
    // The unsolicited-message receiver is dropped at once: a request connection has no
    // subscriptions, and netlink-proto only shuts the connection down once both it and every
    // handle are gone.
    let (connection, handle, _unsolicited) = rtnetlink::from_socket(socket);
    runtime.spawn(connection);
    Ok(handle)
}

/// Receive buffer for subscription sockets (the kernel caps it at `net.core.rmem_max`).
const MULTICAST_RCVBUF: usize = 1 << 20;

/// The kernel's multicast message type as netlink-proto hands it to us.
pub(crate) type Notifications = futures::channel::mpsc::UnboundedReceiver<(
    rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
    SocketAddr,
)>;

/// A socket in `netns` subscribed to the given multicast groups (a bit mask of
/// `1 << (RTNLGRP_* - 1)`), its connection spawned on the current runtime.
pub(crate) fn multicast(netns: &Netns, groups: u32) -> Result<(rtnetlink::Handle, Notifications)> {
    let runtime = ensure_runtime(netns)?;
    let mut socket = netns.route_socket()?;
    socket
        .bind(&SocketAddr::new(0, groups))
        .map_err(socket_err(netns))?;
    // A node with many VFs flapping at once can outrun the default buffer; overflow still
    // surfaces as `LinkEvent::Lost`, this only makes it rarer.
    socket
        .set_rx_buf_sz(MULTICAST_RCVBUF)
        .map_err(socket_err(netns))?;
    let _enter = runtime.enter();
    let socket = NsSocket::adopt(socket).map_err(socket_err(netns))?;
    let (connection, handle, notifications) = rtnetlink::from_socket(socket);
    runtime.spawn(connection);
    Ok((handle, notifications))
}
