//! Accepting on a unix socket and handing tonic relayed connections.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::DuplexStream;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, Span, debug, warn};

use crate::relay::relay;

/// Bytes buffered each way between a relay and tonic.
const PIPE: usize = 64 * 1024;
/// Accepted connections tonic has not picked up yet.
const BACKLOG: usize = 16;

/// The connections accepted on a socket, each already behind the relay:
/// give it to `Server::serve_with_incoming(_shutdown)`.
#[derive(Debug)]
pub struct Incoming(ReceiverStream<io::Result<DuplexStream>>);

impl Stream for Incoming {
    type Item = io::Result<DuplexStream>;

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
                            let (ours, theirs) = tokio::io::duplex(PIPE);
                            let mut cut = cut_rx.clone();
                            tokio::spawn(
                                async move {
                                    tokio::select! {
                                        r = relay(stream, ours) => match r {
                                            Ok(0) => {}
                                            Ok(n) => debug!(rewritten = n, "connection used a socket-path :authority"),
                                            Err(e) => debug!(error = %e, "connection ended"),
                                        },
                                        () = cut_off(&mut cut) => {}
                                    }
                                }
                                .in_current_span(),
                            );
                            if conn_tx.send(Ok(theirs)).await.is_err() {
                                break;
                            }
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

/// Resolves once the caller's stop fired; never if the accept loop ended
/// for another reason (its sender dropped without a cut).
async fn cut_off(cut: &mut watch::Receiver<bool>) {
    if cut.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}
