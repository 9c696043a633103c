//! Errors of the VF pool. Each names the token, VF or file involved.

use std::path::PathBuf;

use sriov_pci::PciAddress;

use crate::redact::Redacted;

/// Failures of pool operations.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No token with this ID exists.
    #[error("unknown token {:?}", Redacted(.0))]
    UnknownToken(String),
    /// The token belongs to another resource name than the one asked for.
    #[error("token {} belongs to {actual:?}, not {requested:?}", Redacted(token))]
    WrongName {
        /// The token.
        token: String,
        /// Its name.
        actual: String,
        /// The name asked for.
        requested: String,
    },
    /// The token's PF has no VF left for it (every VF is reserved by
    /// another allocated token).
    #[error("token {}: PF {pf} has no free VF ({reason})", Redacted(token))]
    Exhausted {
        /// The token.
        token: String,
        /// Its PF.
        pf: PciAddress,
        /// What is in the way.
        reason: String,
    },
    /// The token was never handed out by kubelet's Allocate.
    #[error("token {} is not allocated to any pod", Redacted(.0))]
    NotAllocated(String),
    /// VFIO access on this node is given only at kubelet's Allocate, and this token was not
    /// bound to a VF there.
    #[error(
        "token {} was not bound to a VF at kubelet's Allocate, and on this node VFIO device \
         access is only given then ({why}): recreate the pod so kubelet allocates its tokens again",
        Redacted(token)
    )]
    NotBoundAtAllocate {
        /// The token.
        token: String,
        /// Why access is only given at Allocate (the node's cgroup mode).
        why: String,
    },
    /// The token was bound to a VF at Allocate that cannot serve this use.
    #[error("token {}: its VF {vf}, bound at Allocate, {reason}", Redacted(token))]
    BoundVfUnusable {
        /// The token.
        token: String,
        /// The VF bound to it.
        vf: PciAddress,
        /// What is in the way.
        reason: String,
    },
    /// The token is already in use by another connection.
    // The holder is not named: it is another tenant's connection.
    #[error("token {} is in use by another connection", Redacted(token))]
    InUse {
        /// The token.
        token: String,
        /// The connection holding it.
        connection: String,
    },
    /// Persisting the state failed; the change was not made.
    #[error("persisting pool state to {path}: {cause}")]
    Persist {
        /// The state file.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The state file cannot be read or parsed: the pool refuses to start
    /// rather than forget what kubelet has handed to pods.
    #[error(
        "pool state {path} is unreadable: {reason}; refusing to start, since an empty pool would \
         hand out tokens pods already hold (repair or remove the file, or start with --reset-state)"
    )]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// The read or parse error.
        reason: String,
    },
    /// The state directory is not safe to keep the state in.
    #[error("state directory {dir} refused: {rule}")]
    UnsafeStateDir {
        /// The directory.
        dir: PathBuf,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A PF named in the pool's configuration has no VFs to pool.
    #[error("PF {0} has no VFs")]
    NoVfs(PciAddress),
    /// The internal lock was poisoned by a panic in another thread.
    #[error("pool state lock poisoned")]
    Poisoned,
}
