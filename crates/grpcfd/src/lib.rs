//! File descriptors riding with gRPC bytes on a unix socket, as NSM's Go
//! components do with `github.com/edwarnicke/grpcfd`.
//!
//! Over unix sockets the NSM manager sends a client's network namespace as
//! an `SCM_RIGHTS` file descriptor and names it in the Request by
//! `inode://<st_dev>/<st_ino>`; a forwarder registering itself sends its
//! listen socket the same way. This crate is the connection layer for that:
//!
//! - [`FdStream`] wraps a [`tokio::net::UnixStream`]. Reads use `recvmsg`
//!   and keep every descriptor that arrives in the connection's [`FdTable`],
//!   keyed by `(st_dev, st_ino)`; writes carry the descriptors queued on its
//!   [`FdSender`] with the next bytes written.
//! - [`FdTable`] answers "did this connection send me that inode?" with a
//!   duplicate the caller owns. Every descriptor in it is closed when the
//!   stream is dropped, whoever still holds the table.
//! - [`FdSender`] queues descriptors (or files by path, opened `O_PATH`, so a
//!   socket can be sent) and tells the `inode://` URL that names each.
//!
//! It knows nothing about HTTP/2 or gRPC: a server hands the stream to its
//! HTTP/2 layer and the table to its handlers; a client ([`connect`]) wraps
//! the stream for tonic and keeps the sender for its calls.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let (stream, sender) = sriov_grpcfd::connect("/run/nsm/nsm.io.sock").await?;
//! let (dev, ino) = sender.send_file(std::path::Path::new("/proc/self/ns/net"))?;
//! let url = sriov_grpcfd::inode_url(dev, ino);
//! // Name `url` in the next call written on `stream`: the fd rides with it.
//! # drop((stream, url)); Ok(())
//! # }
//! ```

// Peers are untrusted: a panic here is a denial of service of a node agent.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod stream;
mod table;

pub use stream::{DEFAULT_LIMIT, FdStream, connect};
pub use table::{FdSender, FdTable, SendError, inode_url, parse_inode_url};
