//! Driving netlink sockets created in some namespace from the current tokio runtime, or
//! request connections from a thread of their own ([`drive_requests_on_own_thread`]).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use rtnetlink::sys::{AsyncSocket, Socket, SocketAddr};
use tokio::io::unix::AsyncFd;

use crate::count::Counter;
use crate::error::{Error, Result};
use crate::netns::Netns;

/// A netlink socket registered with tokio's reactor.
///
/// netlink-sys ships `TokioSocket`, but it can only adopt an existing socket through
/// `FromRawFd` and panics on errors, so we wrap the `Socket` ourselves. Every request it sends
/// is counted (see [`crate::count`]).
pub(crate) struct NsSocket {
    fd: AsyncFd<Socket>,
    counter: Arc<Counter>,
}

impl NsSocket {
    // The crate's only `unsafe`: tokio 1.54 deprecated the safe `AsyncFd::new` as unsound and
    // left only the unsafe `register`, whose contract we uphold (see SAFETY below).
    #[allow(unsafe_code)]
    pub(crate) fn adopt(socket: Socket, counter: Arc<Counter>) -> io::Result<Self> {
        socket.set_non_blocking(true)?;
        // SAFETY: `Socket` owns its file descriptor (it closes it on drop and has no way to
        // replace it), so the fd stays open and `as_raw_fd` returns the same value for as long
        // as the `AsyncFd` owns the socket.
        let registered = unsafe { AsyncFd::register(socket) };
        registered
            .map(|fd| NsSocket { fd, counter })
            .map_err(|e| e.into())
    }

    fn sent(&self, buf: &[u8], result: &io::Result<usize>) {
        if result.is_ok() {
            self.counter.count(buf);
        }
    }
}

impl AsyncSocket for NsSocket {
    fn socket_ref(&self) -> &Socket {
        self.fd.get_ref()
    }

    fn socket_mut(&mut self) -> &mut Socket {
        self.fd.get_mut()
    }

    fn new(protocol: isize) -> io::Result<Self> {
        Self::adopt(Socket::new(protocol)?, Arc::default())
    }

    fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            if let Ok(result) = guard.try_io(|s| s.get_ref().send(buf, 0)) {
                self.sent(buf, &result);
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
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            if let Ok(result) = guard.try_io(|s| s.get_ref().send_to(buf, addr, 0)) {
                self.sent(buf, &result);
                return Poll::Ready(result);
            }
        }
    }

    fn poll_recv<B>(&self, cx: &mut Context<'_>, buf: &mut B) -> Poll<io::Result<()>>
    where
        B: bytes::BufMut,
    {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
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
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            if let Ok(result) = guard.try_io(|s| s.get_ref().recv_from(buf, 0)) {
                return Poll::Ready(result.map(|(_, addr)| addr));
            }
        }
    }

    fn poll_recv_from_full(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Vec<u8>, SocketAddr)>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
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

/// Whether request connections run on the netlink thread ([`drive_requests_on_own_thread`]).
static OWN_THREAD: AtomicBool = AtomicBool::new(false);

/// From now on, every request connection this process opens is driven on a thread of its own
/// instead of the caller's tokio runtime.
///
/// The kernel does a namespace move's work (an RCU grace period or two, 16-20 ms on a small
/// VM) inside the `sendmsg` that asks for it. Driven from a tokio worker, the connection's task
/// holds that worker for the whole move: on a two-core node a move stalls the gRPC answers and
/// chain steps queued behind it, and a Close cannot start its move home before its answer is
/// out. On the netlink thread a move holds only that thread; changes serialise on the kernel's
/// rtnl lock anyway, so one thread costs them nothing. The forwarder daemon turns it on. It is
/// not the default: a caller that waits for each message in turn gains nothing from it and pays
/// two thread wake-ups per message.
pub fn drive_requests_on_own_thread() {
    OWN_THREAD.store(true, Ordering::Release);
}

/// Whether [`drive_requests_on_own_thread`] was called: a caller may then start a move without
/// it holding the task that started it.
pub fn requests_on_own_thread() -> bool {
    OWN_THREAD.load(Ordering::Acquire)
}

/// The runtime of [`drive_requests_on_own_thread`]: one thread, for the process's life.
fn io_runtime(netns: &Netns) -> Result<tokio::runtime::Handle> {
    static IO: std::sync::OnceLock<std::result::Result<tokio::runtime::Handle, String>> =
        std::sync::OnceLock::new();
    let started = IO.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("netlink-io".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .map_err(|e| e.to_string())?;
        Ok(handle)
    });
    started.clone().map_err(|e| Error::Socket {
        netns: netns.to_string(),
        source: io::Error::other(format!("starting the netlink I/O thread: {e}")),
    })
}

/// An rtnetlink request handle whose socket lives in `netns`, counting into `counter`. The
/// connection task runs on the current runtime, or the netlink thread
/// ([`drive_requests_on_own_thread`]), and ends when the last clone of the handle is dropped.
pub(crate) fn request_handle(netns: &Netns, counter: &Arc<Counter>) -> Result<rtnetlink::Handle> {
    spawn_request(netns, counter).map(|(handle, _)| handle)
}

fn spawn_request(
    netns: &Netns,
    counter: &Arc<Counter>,
) -> Result<(rtnetlink::Handle, Arc<AtomicBool>)> {
    let runtime = if requests_on_own_thread() {
        io_runtime(netns)?
    } else {
        ensure_runtime(netns)?
    };
    let socket = netns.route_socket()?;
    let _enter = runtime.enter();
    let socket = NsSocket::adopt(socket, counter.clone()).map_err(socket_err(netns))?;
    // The unsolicited-message receiver is dropped at once: a request connection has no
    // subscriptions, and netlink-proto only shuts the connection down once both it and every
    // handle are gone.
    let (connection, handle, _unsolicited) = rtnetlink::from_socket(socket);
    let alive = Arc::new(AtomicBool::new(true));
    let running = Running(alive.clone());
    runtime.spawn(async move {
        let _running = running;
        connection.await;
    });
    Ok((handle, alive))
}

/// Clears its flag when the connection task ends or is dropped with its runtime, so a shared
/// handle is never reused after its connection is gone.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The request connection a [`Netns`] keeps for its own life, so everything done in it while
/// the handle lives (a Request's plan, move and configuration; a held namespace's Close) shares
/// one socket: creating one means entering the namespace on a fresh thread, which costs more
/// than the requests themselves.
#[derive(Default)]
pub(crate) struct SharedRequest(std::sync::Mutex<Option<(rtnetlink::Handle, Arc<AtomicBool>)>>);

impl std::fmt::Debug for SharedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedRequest")
    }
}

/// `netns`'s shared request handle, created (counting into `counter`) if it has none or its
/// connection ended (its runtime was shut down).
pub(crate) fn shared_request(netns: &Netns, counter: &Arc<Counter>) -> Result<rtnetlink::Handle> {
    let slot = &netns.shared.0;
    let live = |s: &Option<(rtnetlink::Handle, Arc<AtomicBool>)>| {
        s.as_ref()
            .filter(|(_, alive)| alive.load(Ordering::Acquire))
            .map(|(h, _)| h.clone())
    };
    if let Some(handle) = live(&slot.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(handle);
    }
    // Not created under the lock: it blocks on a thread entering the namespace.
    let (handle, alive) = spawn_request(netns, counter)?;
    let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(raced) = live(&guard) {
        return Ok(raced);
    }
    *guard = Some((handle.clone(), alive));
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
    let socket = NsSocket::adopt(socket, Arc::default()).map_err(socket_err(netns))?;
    let (connection, handle, notifications) = rtnetlink::from_socket(socket);
    runtime.spawn(connection);
    Ok((handle, notifications))
}
