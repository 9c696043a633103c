//! The crate's error type: every variant names the namespace, link or URL it failed on.

use std::io;
use std::path::PathBuf;

use crate::plumb::MovedLink;
use crate::vf::VfRecord;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace URL that is not one of the accepted forms (or is hostile).
    #[error("network namespace URL {url:?} refused: {reason}")]
    InvalidNetnsUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },

    /// A namespace file could not be opened or inspected.
    #[error("cannot open network namespace file {path}")]
    NetnsOpen {
        /// The path we tried.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The path exists but is not a network namespace (not nsfs, or another kind of namespace).
    #[error("{path} is not a network namespace: {reason}")]
    NotANetns {
        /// The path we opened.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },

    /// The namespace is one no client may name (the forwarder's own, the host's).
    #[error("network namespace {netns} refused: {rule}")]
    ForbiddenNetns {
        /// The namespace as the request named it.
        netns: String,
        /// The rule it broke.
        rule: &'static str,
    },

    /// No task we can see has a network namespace with this device/inode pair.
    #[error("no process has network namespace inode://{dev}/{ino}")]
    NetnsInodeNotFound {
        /// `st_dev` of the nsfs inode.
        dev: u64,
        /// `st_ino` of the nsfs inode.
        ino: u64,
    },

    /// Entering a namespace on a helper thread failed.
    #[error("cannot enter network namespace {netns}")]
    Setns {
        /// The namespace (its URL or inode form).
        netns: String,
        /// The errno from setns(2) or unshare(2).
        #[source]
        source: nix::Error,
    },

    /// A helper thread could not be started or died.
    #[error("namespace helper thread for {netns} failed: {reason}")]
    Thread {
        /// The namespace the thread was meant to work in.
        netns: String,
        /// What happened.
        reason: String,
    },

    /// Creating a netlink socket or its connection failed.
    #[error("cannot open a netlink socket in network namespace {netns}")]
    Socket {
        /// The namespace the socket was for.
        netns: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// An interface name that the kernel would refuse (or that we refuse to pass on).
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidInterfaceName {
        /// The name as given.
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },

    /// A malformed value in a request (MAC address, prefix length, ...).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue {
        /// What kind of value it was.
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it is invalid.
        reason: &'static str,
    },

    /// The link does not exist in the namespace we looked in.
    #[error("link {link} not found in network namespace {netns}")]
    LinkNotFound {
        /// The link, by name or index.
        link: String,
        /// The namespace searched.
        netns: String,
    },

    /// The kernel refused a netlink request.
    #[error("netlink: {op} on link {link} failed")]
    Netlink {
        /// What we asked for, e.g. `set mtu 9000`.
        op: String,
        /// The link it was about.
        link: String,
        /// The rtnetlink error (carries the errno).
        #[source]
        source: rtnetlink::Error,
    },

    /// The link has no SR-IOV virtual functions, or its driver does not implement the setting.
    #[error("link {link} does not support VF setting {setting}: no VFs or driver lacks support")]
    VfNotSupported {
        /// The PF link.
        link: String,
        /// The setting we tried (`mac`, `vlan`, ...) or `vf info` for reads.
        setting: &'static str,
    },

    /// The PF exists and has VFs, but not this one.
    #[error("link {link} has no VF {vf}")]
    NoSuchVf {
        /// The PF link.
        link: String,
        /// The VF number asked for.
        vf: u32,
    },

    /// A multi-step operation failed; every earlier step was undone.
    #[error("{op} on link {link} failed and was rolled back")]
    RolledBack {
        /// The operation, e.g. `move into namespace`.
        op: &'static str,
        /// The link it was about.
        link: String,
        /// The step that failed.
        #[source]
        source: Box<Error>,
    },

    /// A multi-step operation failed and undoing it failed too. `record` says where the link is,
    /// so the caller can keep it and retry [`crate::RtNetlink::back_out`] later.
    #[error("{op} on link {link} failed ({cause}) and the rollback failed too: {rollback}")]
    RollbackFailed {
        /// The operation.
        op: &'static str,
        /// The link it was about.
        link: String,
        /// The step that failed first.
        cause: Box<Error>,
        /// Why the rollback failed.
        rollback: Box<Error>,
        /// What was done and not undone.
        record: Box<MovedLink>,
    },

    /// Setting a VF failed and writing its previous values back failed too; `record` holds
    /// those values for a later [`crate::RtNetlink::restore_vf`].
    #[error("setting VF {vf} of {link} failed ({cause}) and restoring it failed too: {rollback}")]
    VfRollbackFailed {
        /// The PF link.
        link: String,
        /// The VF number.
        vf: u32,
        /// The first failure.
        cause: Box<Error>,
        /// Why restoring failed.
        rollback: Box<Error>,
        /// The previous values.
        record: Box<VfRecord>,
    },
}

impl Error {
    /// The errno the kernel answered with, when this is a refused netlink request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { source, .. } => netlink_errno(source),
            Error::RolledBack { source, .. }
            | Error::RollbackFailed { cause: source, .. }
            | Error::VfRollbackFailed { cause: source, .. } => source.errno(),
            _ => None,
        }
    }
}

/// The positive errno inside a kernel NACK.
pub(crate) fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()),
        _ => None,
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
