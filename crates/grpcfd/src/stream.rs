//! [`FdStream`]: a unix stream whose reads collect descriptors and whose
//! writes carry queued ones.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;

use crate::table::{FdSender, FdTable, Kept, key_of};

/// Descriptors one `recvmsg` makes room for, and one write carries at most:
/// grpcfd's `maxFDCount`. A peer sending more in one message gets
/// `MSG_CTRUNC` (the kernel closes the excess) and is cut off.
const PER_MESSAGE: usize = 64;

/// The most distinct files a connection may have us hold at once (see
/// [`FdStream::with_limit`]). The NSM manager sends a namespace per client
/// over one long-lived connection, and the table holds each until the
/// connection ends; a peer beyond this is taken for hostile.
pub const DEFAULT_LIMIT: usize = 256;

/// A unix stream that receives and sends file descriptors alongside its
/// bytes. Dropping it closes every descriptor it received and every one
/// still queued to send.
#[derive(Debug)]
pub struct FdStream {
    io: UnixStream,
    table: FdTable,
    sender: FdSender,
    limit: usize,
}

/// Connects to the unix socket at `path`: the stream for the HTTP/2 client,
/// and the sender whose descriptors go with the calls made on it.
pub async fn connect(path: impl AsRef<Path>) -> io::Result<(FdStream, FdSender)> {
    let stream = FdStream::new(UnixStream::connect(path).await?);
    let sender = stream.sender();
    Ok((stream, sender))
}

impl FdStream {
    /// Wraps an accepted or connected unix stream.
    pub fn new(io: UnixStream) -> Self {
        Self {
            io,
            table: FdTable::default(),
            sender: FdSender::default(),
            limit: DEFAULT_LIMIT,
        }
    }

    /// Cuts the connection when the peer makes us hold more than `limit`
    /// distinct files (default [`DEFAULT_LIMIT`]).
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The descriptors received on this connection.
    pub fn table(&self) -> FdTable {
        self.table.clone()
    }

    /// Queues descriptors for the next write on this connection.
    pub fn sender(&self) -> FdSender {
        self.sender.clone()
    }

    /// The stream underneath (peer credentials, addresses).
    pub fn get_ref(&self) -> &UnixStream {
        &self.io
    }

    /// One `recvmsg` into `buf`, keeping the descriptors that came with it.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = rustix::net::recvmsg(
            &self.io,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        let mut arrived: Vec<OwnedFd> = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = m {
                arrived.extend(fds);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            return Err(self.cut(format!(
                "the peer sent more than {PER_MESSAGE} file descriptors in one message"
            )));
        }
        for fd in arrived {
            // An fd we cannot stat cannot be named by anyone: drop it.
            let Ok(key) = key_of(&fd) else { continue };
            if self.table.offer(key, fd, self.limit) == Kept::Refused {
                return Err(self.cut(format!(
                    "the peer sent more than {} distinct files on one connection",
                    self.limit
                )));
            }
        }
        Ok(msg.bytes)
    }

    fn cut(&self, reason: String) -> io::Error {
        tracing::warn!(%reason, "cutting a connection that passes file descriptors");
        self.table.close();
        io::Error::new(io::ErrorKind::InvalidData, reason)
    }

    /// One `sendmsg` of `buf` carrying `fds`.
    fn send_with(&self, buf: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(PER_MESSAGE))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
            return Err(io::Error::other("file descriptors do not fit one message"));
        }
        Ok(rustix::net::sendmsg(
            &self.io,
            &[IoSlice::new(buf)],
            &mut control,
            SendFlags::NOSIGNAL,
        )?)
    }
}

impl Drop for FdStream {
    fn drop(&mut self) {
        self.table.close();
        self.sender.close();
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.io.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match this.io.try_io(Interest::READABLE, || this.recv(unfilled)) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() || this.sender.queued() == 0 {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        loop {
            ready!(this.io.poll_write_ready(cx))?;
            let fds = this.sender.take(PER_MESSAGE);
            let sent = this
                .io
                .try_io(Interest::WRITABLE, || this.send_with(buf, &fds));
            match sent {
                // The kernel holds its own references now; ours close here.
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) => {
                    this.sender.put_back(fds);
                    if e.kind() != io::ErrorKind::WouldBlock {
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
