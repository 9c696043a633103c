//! How the libraries' errors reach a client: the gRPC code of each, decided
//! here once so every element answers the same mistake the same way.
//!
//! A caller's mistake is INVALID_ARGUMENT (PERMISSION_DENIED when it names
//! something it may not use), an unknown token NOT_FOUND, no free VF
//! RESOURCE_EXHAUSTED, a state the caller must change first (a token not
//! allocated or already in use, cgroup v2) FAILED_PRECONDITION. INTERNAL is
//! kept for what only the node's operator can fix, never for a caller's
//! mistake.

use sriov_token_pool::PoolError;
use tonic::Status;

use crate::params::{self, with_causes};

/// A pool error.
pub fn pool(e: PoolError) -> Status {
    match &e {
        PoolError::UnknownToken(_) => Status::not_found(e.to_string()),
        PoolError::WrongName { .. } => Status::invalid_argument(e.to_string()),
        PoolError::Exhausted { .. } => Status::resource_exhausted(e.to_string()),
        PoolError::NotAllocated(_)
        | PoolError::InUse { .. }
        | PoolError::NoVfs(_)
        | PoolError::NotBoundAtAllocate { .. }
        | PoolError::BoundVfUnusable { .. } => Status::failed_precondition(e.to_string()),
        PoolError::Persist { .. }
        | PoolError::Poisoned
        | PoolError::CorruptState { .. }
        | PoolError::UnsafeStateDir { .. } => Status::internal(e.to_string()),
    }
}

/// A sysfs error: the devices and drivers are ours (the pool's VFs, the
/// configured `vfKernelDriver`), never named by a caller.
pub fn pci(e: sriov_pci::PciError) -> Status {
    crate::metrics::sysfs_error(pci_op(&e));
    Status::internal(e.to_string())
}

/// The `op` label of a sysfs error: what failed, and for a write the
/// attribute (`write:bind`, `write:driver_override`), a short fixed set.
fn pci_op(e: &sriov_pci::PciError) -> String {
    use sriov_pci::PciError;
    match e {
        PciError::NoDevice { .. } => "no_device".into(),
        PciError::Read { .. } => "read".into(),
        PciError::Parse { .. } => "parse".into(),
        PciError::Write { path, .. } => match path.file_name().and_then(|f| f.to_str()) {
            Some(attr) => format!("write:{attr}"),
            None => "write".into(),
        },
        PciError::NotSriov { .. } => "not_sriov".into(),
        PciError::TooManyVfs { .. } => "too_many_vfs".into(),
        PciError::NoDriver { .. } => "no_driver".into(),
        PciError::InvalidDriverName(_) => "invalid_driver".into(),
        PciError::Timeout { .. } => "timeout".into(),
    }
}

/// A netlink error. The namespace errors are about the client's `inodeURL`.
pub fn netlink(e: sriov_netlink::Error) -> Status {
    use sriov_netlink::Error;
    match e {
        Error::ForbiddenNetns { .. } => Status::permission_denied(format!(
            "mechanism parameter {}: {}",
            params::INODE_URL,
            with_causes(&e)
        )),
        Error::InvalidNetnsUrl { .. }
        | Error::NetnsOpen { .. }
        | Error::NotANetns { .. }
        | Error::NetnsInodeNotFound { .. } => Status::invalid_argument(with_causes(&e)),
        other => {
            crate::metrics::netlink_error(netlink_op(&other));
            Status::internal(with_causes(&other))
        }
    }
}

/// The `op` label of a netlink error the host made (not a caller's).
fn netlink_op(e: &sriov_netlink::Error) -> &'static str {
    use sriov_netlink::Error;
    match e {
        Error::Setns { .. } => "setns",
        Error::Thread { .. } => "thread",
        Error::Socket { .. } => "socket",
        Error::InvalidInterfaceName { .. } | Error::InvalidValue { .. } => "invalid_value",
        Error::LinkNotFound { .. } => "link_not_found",
        Error::Netlink { .. } => "request",
        Error::VfNotSupported { .. } => "vf_not_supported",
        Error::NoSuchVf { .. } => "no_such_vf",
        Error::RolledBack { .. } => "rolled_back",
        Error::RollbackFailed { .. } | Error::VfRollbackFailed { .. } => "rollback_failed",
        _ => "other",
    }
}

/// A VFIO or cgroup error. The cgroup directory errors are about the
/// client's `cgroupDir`.
pub fn vfio(e: sriov_vfio::Error) -> Status {
    use sriov_vfio::Error;
    match e {
        Error::CgroupDirRejected { .. }
        | Error::CgroupDirUnresolvable { .. }
        | Error::NotDevicesCgroup { .. } => {
            Status::invalid_argument(format!("mechanism parameter {}: {e}", params::CGROUP_DIR))
        }
        Error::CgroupDirRefused { .. } | Error::CgroupDirEscapes { .. } => {
            Status::permission_denied(format!("mechanism parameter {}: {e}", params::CGROUP_DIR))
        }
        Error::CgroupV2 { .. } => Status::failed_precondition(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// Runs blocking sysfs and pool work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    // The blocking thread works inside the calling element's span, so host
    // operations' spans opened there are its children.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| Status::internal(format!("blocking task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn caller_mistakes_are_never_internal() {
        assert_eq!(
            pool(PoolError::UnknownToken("t".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            netlink(sriov_netlink::Error::InvalidNetnsUrl {
                url: "http://x".into(),
                reason: "scheme".into(),
            })
            .code(),
            Code::InvalidArgument
        );
        assert_eq!(
            vfio(sriov_vfio::Error::CgroupV2 {
                root: "/sys/fs/cgroup".into()
            })
            .code(),
            Code::FailedPrecondition
        );
    }
}
