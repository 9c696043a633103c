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
    Status::internal(e.to_string())
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
        other => Status::internal(with_causes(&other)),
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
    tokio::task::spawn_blocking(f)
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
