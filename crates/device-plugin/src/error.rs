//! Errors of the device plugin crate; each names the socket or directory.

use std::io;
use std::path::PathBuf;

/// What failed, and on which path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating the socket directory failed.
    #[error("creating socket directory {dir}: {cause}")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// Binding or inspecting the plugin's own socket failed.
    #[error("listening on {path}: {cause}")]
    Listen {
        /// The plugin socket.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// Setting up inotify on a directory failed.
    #[error("watching {dir} with inotify: {cause}")]
    Watch {
        /// The watched directory.
        dir: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// Dialling a kubelet socket failed.
    #[error("connecting to {path}: {cause}")]
    Connect {
        /// The socket dialled.
        path: PathBuf,
        /// The cause.
        cause: tonic::transport::Error,
    },
    /// Kubelet answered `Register` with an error.
    #[error("registering {resource} with {path}: {status}")]
    Register {
        /// Kubelet's registration socket.
        path: PathBuf,
        /// The resource being registered.
        resource: String,
        /// Kubelet's answer.
        status: tonic::Status,
    },
    /// A call to kubelet did not answer in time.
    #[error("{call} on {path} timed out")]
    Timeout {
        /// The socket called.
        path: PathBuf,
        /// The RPC.
        call: &'static str,
    },
    /// A pod-resources call failed.
    #[error("pod-resources {call} on {path}: {status}")]
    PodResources {
        /// The pod-resources socket.
        path: PathBuf,
        /// The RPC.
        call: &'static str,
        /// Kubelet's answer.
        status: tonic::Status,
    },
}
