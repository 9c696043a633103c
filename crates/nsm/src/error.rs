use std::path::PathBuf;
use std::time::Duration;

use tonic::{Code, Status};

/// Everything that can go wrong talking to the NSM manager. Each variant
/// names the URL, socket path or endpoint it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL that is neither `unix:///absolute/path`, `tcp://host:port`
    /// nor `host:port`.
    #[error(transparent)]
    InvalidUrl(#[from] sriov_config::UrlError),

    /// No connection could be established within the dial timeout.
    #[error("dialing {url} failed within {timeout:?}: {cause}")]
    Dial {
        /// The URL dialed.
        url: String,
        /// `NSM_DIAL_TIMEOUT`.
        timeout: Duration,
        /// Why.
        cause: tonic::transport::Error,
    },

    /// Serving needs a unix socket; the URL names something else.
    #[error("cannot listen on {url}: only unix:// URLs can be served")]
    NotUnix {
        /// The URL given.
        url: String,
    },

    /// The parent directory of a socket could not be created.
    #[error("cannot create socket directory {path}: {cause}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },

    /// A stale socket file (or something else) is in the way and cannot be
    /// removed.
    #[error("cannot remove stale socket {path}: {cause}")]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },

    /// Binding the unix socket failed.
    #[error("cannot listen on unix socket {path}: {cause}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },

    /// The registry at `url` refused or failed a call.
    #[error("registry {url}: {op} of endpoint {name:?} failed: {status}")]
    Registry {
        /// `NSM_CONNECT_TO`.
        url: String,
        /// `Register`, `Find` or `Unregister`.
        op: &'static str,
        /// The endpoint name (empty for a Find by service).
        name: String,
        /// The gRPC status returned (or made from the transport failure).
        status: Status,
    },

    /// The listen socket could not be sent by fd with a registration.
    #[error("sending socket {path} by fd to the registry: {cause}")]
    SendFd {
        /// The socket path (`NSM_LISTEN_ON`).
        path: PathBuf,
        /// Why.
        cause: String,
    },

    /// The background registration task is gone (it panicked or was
    /// aborted), so the state it kept is unknown.
    #[error("registration task for endpoint {name:?} ended unexpectedly")]
    TaskGone {
        /// The endpoint name.
        name: String,
    },
}

impl Error {
    /// The gRPC code that best describes the failure to a caller: an
    /// unreachable peer is `UNAVAILABLE`, a bad URL `INVALID_ARGUMENT`,
    /// and a registry failure keeps the registry's own code.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidUrl(_) | Error::NotUnix { .. } => Code::InvalidArgument,
            Error::Dial { .. } => Code::Unavailable,
            Error::CreateDir { .. }
            | Error::RemoveStale { .. }
            | Error::Bind { .. }
            | Error::SendFd { .. }
            | Error::TaskGone { .. } => Code::Internal,
            Error::Registry { status, .. } => status.code(),
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        Status::new(err.code(), err.to_string())
    }
}
