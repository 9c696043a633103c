//! Accepting on a unix socket and handing tonic relayed connections.
//!
//! The layers of one connection, outermost first: the raw unix socket (where
//! file descriptors ride), the caller's upgrade (fd passing today, TLS
//! inside it later), the `:authority` relay, and tonic on a pipe.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{Instrument, Span, debug, warn};

use crate::relay::relay;

/// Bytes buffered each way between a relay and tonic.
const PIPE: usize = 64 * 1024;
/// Accepted connections tonic has not picked up yet.
const BACKLOG: usize = 16;
/// How long an upgrade (a TLS handshake, say) may take before the
/// connection is dropped: a peer that connects and says nothing must not
/// hold a task and a socket forever.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the upgrade of a connection learnt about it (the descriptors it
/// received, the peer's identity), for every request on it: handlers read
/// `request.extensions().get::<ConnInfo>()`.
#[derive(Clone, Debug, Default)]
pub struct ConnInfo(http::Extensions);

impl ConnInfo {
    /// Wraps what an upgrade collected.
    pub fn new(extensions: http::Extensions) -> Self {
        Self(extensions)
    }

    /// The value of type `T` the upgrade stored, if any.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.get::<T>()
    }

    /// Everything the upgrade stored.
    pub fn extensions(&self) -> &http::Extensions {
        &self.0
    }
}

/// One accepted connection as tonic sees it: the relay's end of a pipe,
/// and what its upgrade learnt ([`Connected::connect_info`]).
#[derive(Debug)]
pub struct Connection {
    io: DuplexStream,
    info: ConnInfo,
}

impl Connected for Connection {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The connections accepted on a socket, each already behind the relay:
/// give it to `Server::serve_with_incoming(_shutdown)`.
#[derive(Debug)]
pub struct Incoming(ReceiverStream<io::Result<Connection>>);

impl Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

/// Accepts on `listener` in a task of its own, relaying every connection
/// through [`relay`](crate::relay()). Must be called inside a tokio runtime.
///
/// Accepting stops when `stop` resolves or the [`Incoming`] is dropped
/// (tonic drops it when its shutdown signal fires). Relayed connections
/// are cut when `stop` resolves; otherwise each lives as long as its
/// client and server do, so a server shutting down gracefully can still
/// answer the calls in flight: pass [`std::future::pending`] for that.
///
/// The tasks log in the span current at the call, which is how a caller
/// says which socket a message is about.
pub fn incoming<F>(listener: UnixListener, stop: F) -> Incoming
where
    F: Future<Output = ()> + Send + 'static,
{
    incoming_with(listener, stop, |stream| async move {
        Ok((stream, http::Extensions::new()))
    })
}

/// [`incoming`], with every accepted stream first passed through `upgrade`
/// (fd passing, TLS) in the connection's own task, bounded by
/// [`DEFAULT_HANDSHAKE_TIMEOUT`]. What the upgrade returns is relayed; its
/// extensions reach every request on the connection as [`ConnInfo`]. A
/// connection whose upgrade fails or times out is dropped (logged at debug:
/// the peer's fault, not ours).
pub fn incoming_with<F, U, Fut, IO>(listener: UnixListener, stop: F, upgrade: U) -> Incoming
where
    F: Future<Output = ()> + Send + 'static,
    U: Fn(UnixStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<(IO, http::Extensions)>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    incoming_with_timeout(listener, stop, DEFAULT_HANDSHAKE_TIMEOUT, upgrade)
}

/// [`incoming_with`], with the upgrade bounded by `handshake` instead.
pub fn incoming_with_timeout<F, U, Fut, IO>(
    listener: UnixListener,
    stop: F,
    handshake: Duration,
    upgrade: U,
) -> Incoming
where
    F: Future<Output = ()> + Send + 'static,
    U: Fn(UnixStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<(IO, http::Extensions)>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (conn_tx, conn_rx) = mpsc::channel(BACKLOG);
    // Per-connection tasks cannot all await the caller's future: it is
    // turned into a flag they watch.
    let (cut_tx, cut_rx) = watch::channel(false);
    let span = Span::current();
    tokio::spawn(
        async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    // Stop first: tonic drops the Incoming on the same
                    // signal, and a close seen before it must not spare
                    // the connections the caller asked to cut.
                    biased;
                    () = &mut stop => {
                        let _ = cut_tx.send(true);
                        break;
                    }
                    () = conn_tx.closed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let upgrading = upgrade(stream);
                            let tx = conn_tx.clone();
                            let cut = cut_rx.clone();
                            tokio::spawn(
                                serve_one(upgrading, handshake, tx, cut).in_current_span(),
                            );
                        }
                        Err(e) => {
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }
        .instrument(span),
    );
    Incoming(ReceiverStream::new(conn_rx))
}

/// One connection: its upgrade (bounded), then the relay to tonic.
async fn serve_one<Fut, IO>(
    upgrading: Fut,
    handshake: Duration,
    tx: mpsc::Sender<io::Result<Connection>>,
    mut cut: watch::Receiver<bool>,
) where
    Fut: Future<Output = io::Result<(IO, http::Extensions)>>,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let upgraded = tokio::select! {
        r = tokio::time::timeout(handshake, upgrading) => r,
        () = cut_off(&mut cut) => return,
    };
    let (stream, extensions) = match upgraded {
        Ok(Ok(up)) => up,
        Ok(Err(e)) => {
            debug!(error = %e, "connection upgrade failed; dropped");
            return;
        }
        Err(_) => {
            debug!(timeout = ?handshake, "connection upgrade took too long; dropped");
            return;
        }
    };
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let conn = Connection {
        io: theirs,
        info: ConnInfo::new(extensions),
    };
    if tx.send(Ok(conn)).await.is_err() {
        return;
    }
    drop(tx);
    tokio::select! {
        r = relay(stream, ours) => match r {
            Ok(0) => {}
            Ok(n) => debug!(rewritten = n, "connection used a socket-path :authority"),
            Err(e) => debug!(error = %e, "connection ended"),
        },
        () = cut_off(&mut cut) => {}
    }
}

/// Resolves once the caller's stop fired; never if the accept loop ended
/// for another reason (its sender dropped without a cut).
async fn cut_off(cut: &mut watch::Receiver<bool>) {
    if cut.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}
