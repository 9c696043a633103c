//! Dialing and serving NSM's gRPC over unix sockets (and TCP for
//! completeness).

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use sriov_authority::Incoming;
use sriov_grpcfd::{FdSender, FdStream, FdTable};
use tokio::net::UnixListener;
use tonic::transport::{Channel, Endpoint};

use crate::credentials::ServerIdentity;
use crate::security::{BoxIo, Security};
use crate::{Error, NsmUrl};

/// `NSM_DIAL_TIMEOUT`'s default in cmd-forwarder-sriov: how long
/// establishing a connection to the next hop may take.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_millis(50);

/// The endpoint and connector for `url`. The `:authority` of a unix dial is
/// `localhost`, which every gRPC server accepts (a socket path is not a
/// valid authority and `h2` servers reset such streams).
fn endpoint(url: &NsmUrl, timeout: Duration) -> Result<Endpoint, Error> {
    let uri = match url {
        NsmUrl::Unix(_) => "http://localhost".to_string(),
        NsmUrl::Tcp { host, port } => format!("http://{host}:{port}"),
    };
    Endpoint::from_shared(uri)
        .map(|e| e.connect_timeout(timeout))
        .map_err(|source| Error::Dial {
            url: url.to_string(),
            timeout,
            cause: source,
        })
}

/// The connections of a channel dialled with [`dial_lazy_with_fds`], for
/// sending file descriptors with its calls (grpcfd, as NSM's `sendfd`
/// elements do). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ChannelFds {
    inner: Arc<Mutex<ChannelFdsState>>,
}

#[derive(Debug, Default)]
struct ChannelFdsState {
    current: Option<FdSender>,
    on_connect: Vec<PathBuf>,
}

impl ChannelFds {
    fn state(&self) -> std::sync::MutexGuard<'_, ChannelFdsState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sender of the channel's live connection, if it has one: what is
    /// queued on it goes with the next call made on the channel.
    pub fn current(&self) -> Option<FdSender> {
        self.state().current.clone().filter(|s| !s.is_closed())
    }

    /// Sends `path` (opened `O_PATH`) first thing on every connection the
    /// channel makes from now on, so every call on any of them can name it:
    /// a lazy channel connects during a call, too late to queue it then.
    pub fn send_on_connect(&self, path: PathBuf) {
        let mut state = self.state();
        if !state.on_connect.contains(&path) {
            state.on_connect.push(path);
        }
    }

    /// A new connection: remember its sender and queue the standing files.
    fn connected(&self, sender: FdSender) {
        let mut state = self.state();
        for path in &state.on_connect {
            // A file that cannot be opened is named by no call that could
            // succeed: the call fails at the peer, naming it.
            if let Err(e) = sender.send_file(path) {
                tracing::warn!(error = %e, "file not sent on the new connection");
            }
        }
        state.current = Some(sender);
    }
}

/// Dials unix sockets through [`sriov_grpcfd`], so calls can carry fds,
/// and through TLS when `security` says so.
fn unix_connector(
    path: &Path,
    fds: ChannelFds,
    security: Security,
    server: ServerIdentity,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<BoxIo>,
    Error = io::Error,
    Future = impl Future<Output = io::Result<TokioIo<BoxIo>>> + Send,
> + Send
+ Clone
+ 'static {
    let path = path.to_owned();
    tower::service_fn(move |_: http::Uri| {
        let (path, fds, security, server) =
            (path.clone(), fds.clone(), security.clone(), server.clone());
        async move {
            let (stream, sender) = sriov_grpcfd::connect(path).await?;
            fds.connected(sender);
            Ok(TokioIo::new(security.connect(stream, &server).await?))
        }
    })
}

/// The server identity of a lazy channel to `path`: learned, before the
/// channel's first connection, by a handshake of its own (see
/// [`ServerIdentity::learn`]), bounded by the dial timeout.
fn probing(path: &Path, security: &Security, timeout: Duration) -> ServerIdentity {
    if !security.is_mtls() {
        return ServerIdentity::default();
    }
    let (path, security) = (path.to_owned(), security.clone());
    ServerIdentity::with_probe(Arc::new(move |server: ServerIdentity| {
        let (path, security) = (path.clone(), security.clone());
        Box::pin(async move {
            let handshake = async {
                let stream = FdStream::new(tokio::net::UnixStream::connect(&path).await?);
                security.connect(stream, &server).await.map(drop)
            };
            tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "probe handshake"))?
        })
    }))
}

/// A dialed channel and what its calls may need: the connection's fd
/// sender and the server's identity (mTLS).
#[derive(Debug, Clone)]
pub struct Dialed {
    /// The channel.
    pub channel: Channel,
    /// Sending fds with its calls.
    pub fds: ChannelFds,
    /// Who the server is, once a TLS handshake told.
    pub server: ServerIdentity,
}

fn mtls_over_tcp(url: &NsmUrl, security: &Security) -> Result<(), Error> {
    if security.is_mtls() && matches!(url, NsmUrl::Tcp { .. }) {
        return Err(Error::NotUnix {
            url: url.to_string(),
        });
    }
    Ok(())
}

/// Connects to `url` now, failing with [`Error::Dial`] (code
/// `UNAVAILABLE`) when nothing accepts within `timeout`. The channel
/// reconnects by itself after the peer restarts.
pub async fn dial(url: &NsmUrl, timeout: Duration) -> Result<Channel, Error> {
    dial_with_fds(url, timeout)
        .await
        .map(|(channel, _)| channel)
}

/// [`dial`], and the channel's connections for sending fds with its calls
/// (for a unix socket, [`ChannelFds::current`] is the live connection's
/// sender once this returns).
pub async fn dial_with_fds(
    url: &NsmUrl,
    timeout: Duration,
) -> Result<(Channel, ChannelFds), Error> {
    dial_secure(url, timeout, &Security::Plaintext)
        .await
        .map(|d| (d.channel, d.fds))
}

/// [`dial_with_fds`] with `security` (mTLS only over unix sockets).
pub async fn dial_secure(
    url: &NsmUrl,
    timeout: Duration,
    security: &Security,
) -> Result<Dialed, Error> {
    mtls_over_tcp(url, security)?;
    let endpoint = endpoint(url, timeout)?;
    let (fds, server) = (ChannelFds::default(), ServerIdentity::default());
    let result = match url {
        NsmUrl::Unix(path) => {
            endpoint
                .connect_with_connector(unix_connector(
                    path,
                    fds.clone(),
                    security.clone(),
                    server.clone(),
                ))
                .await
        }
        NsmUrl::Tcp { .. } => endpoint.connect().await,
    };
    result
        .map(|channel| Dialed {
            channel,
            fds,
            server,
        })
        .map_err(|source| Error::Dial {
            url: url.to_string(),
            timeout,
            cause: source,
        })
}

/// A channel to `url` that connects on first use and again after every
/// lost connection, each attempt bounded by `timeout`. A call made while
/// the peer is unreachable fails with `UNAVAILABLE`.
///
/// Must be called inside a tokio runtime (the channel spawns its worker).
pub fn dial_lazy(url: &NsmUrl, timeout: Duration) -> Result<Channel, Error> {
    dial_lazy_with_fds(url, timeout).map(|(channel, _)| channel)
}

/// [`dial_lazy`], and the channel's connections for sending fds with its
/// calls (a TCP channel never has one).
pub fn dial_lazy_with_fds(url: &NsmUrl, timeout: Duration) -> Result<(Channel, ChannelFds), Error> {
    dial_lazy_secure(url, timeout, &Security::Plaintext).map(|d| (d.channel, d.fds))
}

/// [`dial_lazy_with_fds`] with `security` (mTLS only over unix sockets).
pub fn dial_lazy_secure(
    url: &NsmUrl,
    timeout: Duration,
    security: &Security,
) -> Result<Dialed, Error> {
    mtls_over_tcp(url, security)?;
    let endpoint = endpoint(url, timeout)?;
    let fds = ChannelFds::default();
    let channel = match url {
        NsmUrl::Unix(path) => {
            let server = probing(path, security, timeout);
            let connector = unix_connector(path, fds.clone(), security.clone(), server.clone());
            return Ok(Dialed {
                channel: endpoint.connect_with_connector_lazy(connector),
                fds,
                server,
            });
        }
        NsmUrl::Tcp { .. } => endpoint.connect_lazy(),
    };
    let server = ServerIdentity::default();
    Ok(Dialed {
        channel,
        fds,
        server,
    })
}

/// Binds the unix socket of `url` for a tonic server
/// (`Server::builder()...serve_with_incoming(stream)`): creates the parent
/// directory, removes a stale socket left by an earlier run, and makes the
/// socket 0600: only root (the NSM manager runs as root) may connect.
///
/// Every connection receives file descriptors ([`sriov_grpcfd::FdStream`]):
/// handlers find the ones their caller's connection sent as the
/// [`FdTable`] in `request.extensions().get::<sriov_authority::ConnInfo>()`.
///
/// Every connection is relayed through [`sriov_authority`], so clients
/// whose `:authority` `h2` refuses (grpcio's URL-encoded socket path,
/// Java's and older grpc-go's bare path) reach every service served on it,
/// health included. The relays live as long as their connections: a
/// server shutting down gracefully still answers the calls in flight.
/// The Go SDK makes it 0777; on a node shared by tenants that lets any
/// local process drive a privileged forwarder. [`listen_unix_for_group`]
/// opens it to one group instead.
///
/// A regular file or directory in the way is not removed: that is someone
/// else's data, not our stale socket.
///
/// Must be called inside a tokio runtime.
pub fn listen_unix(url: &NsmUrl) -> Result<Incoming, Error> {
    listen_unix_for_group(url, None)
}

/// [`listen_unix`], with the socket 0660 and owned by `group` when given
/// (`NSM_SOCKET_GROUP`).
pub fn listen_unix_for_group(url: &NsmUrl, group: Option<u32>) -> Result<Incoming, Error> {
    listen_unix_secure(url, group, &Security::Plaintext)
}

/// [`listen_unix_for_group`], each connection accepted with `security`:
/// with mTLS, handlers also find the peer's [`PeerIdentity`] in the
/// connection's `sriov_authority::ConnInfo`.
///
/// [`PeerIdentity`]: sriov_chain::caller::PeerIdentity
pub fn listen_unix_secure(
    url: &NsmUrl,
    group: Option<u32>,
    security: &Security,
) -> Result<Incoming, Error> {
    let path = url.unix_path().ok_or_else(|| Error::NotUnix {
        url: url.to_string(),
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            path: dir.to_owned(),
            cause: source,
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| Error::RemoveStale {
                path: path.to_owned(),
                cause: source,
            })?;
        }
        Ok(_) => {
            return Err(Error::RemoveStale {
                path: path.to_owned(),
                cause: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                ),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::RemoveStale {
                path: path.to_owned(),
                cause: source,
            });
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| Error::Bind {
        path: path.to_owned(),
        cause: source,
    })?;
    let mode = match group {
        Some(gid) => {
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| {
                Error::Bind {
                    path: path.to_owned(),
                    cause: io::Error::from(e),
                }
            })?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        Error::Bind {
            path: path.to_owned(),
            cause: source,
        }
    })?;
    let security = security.clone();
    Ok(sriov_authority::incoming_with(
        listener,
        std::future::pending(),
        move |stream| {
            let security = security.clone();
            async move { security.accept(stream).await }
        },
    ))
}

/// The fds the calling connection sent, if it came over a socket served by
/// [`listen_unix`].
pub fn fds_of<T>(request: &tonic::Request<T>) -> Option<&FdTable> {
    request
        .extensions()
        .get::<sriov_authority::ConnInfo>()
        .and_then(|info| info.get::<FdTable>())
}
