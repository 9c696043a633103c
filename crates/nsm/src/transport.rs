//! Dialing and serving NSM's gRPC over unix sockets (and TCP for
//! completeness).

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use sriov_authority::Incoming;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint};

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

fn unix_connector(
    path: &Path,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<UnixStream>,
    Error = io::Error,
    Future = impl Future<Output = io::Result<TokioIo<UnixStream>>> + Send,
> + Send
+ Clone
+ 'static {
    let path = path.to_owned();
    tower::service_fn(move |_: http::Uri| {
        let path = path.clone();
        async move { Ok(TokioIo::new(UnixStream::connect(path).await?)) }
    })
}

/// Connects to `url` now, failing with [`Error::Dial`] (code
/// `UNAVAILABLE`) when nothing accepts within `timeout`. The channel
/// reconnects by itself after the peer restarts.
pub async fn dial(url: &NsmUrl, timeout: Duration) -> Result<Channel, Error> {
    let endpoint = endpoint(url, timeout)?;
    let result = match url {
        NsmUrl::Unix(path) => endpoint.connect_with_connector(unix_connector(path)).await,
        NsmUrl::Tcp { .. } => endpoint.connect().await,
    };
    result.map_err(|source| Error::Dial {
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
    let endpoint = endpoint(url, timeout)?;
    Ok(match url {
        NsmUrl::Unix(path) => endpoint.connect_with_connector_lazy(unix_connector(path)),
        NsmUrl::Tcp { .. } => endpoint.connect_lazy(),
    })
}

/// Binds the unix socket of `url` for a tonic server
/// (`Server::builder()...serve_with_incoming(stream)`): creates the parent
/// directory, removes a stale socket left by an earlier run, and makes the
/// socket 0600: only root (the NSM manager runs as root) may connect.
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
    Ok(sriov_authority::incoming(listener, std::future::pending()))
}
