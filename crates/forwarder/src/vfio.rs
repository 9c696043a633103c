//! How this node gives clients VFIO devices, decided once at start and said
//! once: by writing `devices.allow` at Request time (cgroup v1 and hybrid),
//! by binding each token to a VF at kubelet's Allocate and returning its
//! nodes as device specs (cgroup v2, or on v1 when asked), or not at all
//! (no vfio-pci driver or no `/dev/vfio/vfio`), in which case Allocate hands
//! out no VFIO devices and a VFIO Request is refused with the same reason.

use std::path::Path;
use std::sync::Arc;

use sriov_pci::Sysfs;
use sriov_token_pool::VfioAtAllocate;
use sriov_vfio::{CgroupDevices, CgroupMode, VfioDir};

/// The decision; see the module docs.
#[derive(Debug)]
pub(crate) enum VfioAccess {
    /// Granted at Request time through the v1 devices cgroup.
    AtRequest(Arc<CgroupDevices>),
    /// Given at Allocate, for the reason `why`; `cgroups` is the v1 root when
    /// there is one, to revoke grants an earlier process made at Request.
    AtAllocate {
        why: String,
        cgroups: Result<Arc<CgroupDevices>, String>,
    },
    /// Neither path works on this node.
    Unavailable(String),
}

impl VfioAccess {
    /// Decides from the node: `/dev/vfio` (`vfio`) and vfio-pci first
    /// (without them no path works), then the cgroup mode at `cgroup_path`
    /// (`NSM_CGROUP_PATH`).
    pub(crate) fn decide(
        cgroup_path: &Path,
        vfio: &VfioDir,
        sysfs: &Sysfs,
        at_allocate: bool,
    ) -> Self {
        let vfio_pci = sysfs.drivers_dir().join("vfio-pci");
        if !vfio_pci.is_dir() {
            return Self::Unavailable(format!(
                "the vfio-pci driver is not loaded ({} does not exist; modprobe vfio-pci)",
                vfio_pci.display()
            ));
        }
        if let Err(e) = vfio.container_device() {
            return Self::Unavailable(format!("{e} (NSM_VFIO_PATH is the host's /dev/vfio)"));
        }
        let open = || {
            CgroupDevices::open(cgroup_path)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        };
        match CgroupMode::detect(cgroup_path) {
            Ok(CgroupMode::V2) => Self::AtAllocate {
                why: format!(
                    "{} is on cgroup v2, where a container's devices are fixed when it is created",
                    cgroup_path.display()
                ),
                cgroups: open(),
            },
            Ok(mode) if at_allocate => Self::AtAllocate {
                why: format!("VFIO at Allocate was asked for on this {mode} node"),
                cgroups: open(),
            },
            Ok(_) => match open() {
                Ok(c) => Self::AtRequest(c),
                Err(why) => Self::AtAllocate {
                    why: format!("the cgroup root is unusable: {why}"),
                    cgroups: Err(why),
                },
            },
            // The runtime applies Allocate's answer whatever the mode: the
            // path that does not need the cgroup root.
            Err(e) => Self::AtAllocate {
                why: format!("the cgroup root is unusable: {e}"),
                cgroups: Err(e.to_string()),
            },
        }
    }

    /// Says the decision, once, at start.
    pub(crate) fn log(&self) {
        match self {
            Self::AtRequest(c) => tracing::info!(
                cgroup_root = %c.root().display(),
                "VFIO: devices granted at Request time through the v1 devices cgroup"
            ),
            Self::AtAllocate { why, .. } => tracing::info!(
                "VFIO: each token is bound to a VF on vfio-pci at kubelet's Allocate and its \
                 /dev/vfio nodes returned as device specs ({why})"
            ),
            Self::Unavailable(why) => tracing::warn!(
                "VFIO is unavailable on this node: {why}; Allocate hands out no VFIO devices and \
                 VFIO Requests are refused with this reason (KERNEL works)"
            ),
        }
    }

    /// Why VFIO access is given only at Allocate, when it is.
    pub(crate) fn only_at_allocate(&self) -> Option<&str> {
        match self {
            Self::AtAllocate { why, .. } => Some(why),
            _ => None,
        }
    }

    /// What each device-plugin resource needs to bind at Allocate.
    pub(crate) fn at_allocate(&self, vfio: &VfioDir, sysfs: &Sysfs) -> Option<VfioAtAllocate> {
        self.only_at_allocate().map(|_| VfioAtAllocate {
            sysfs: sysfs.clone(),
            vfio: vfio.clone(),
        })
    }

    /// The cgroups for the chain's `vfio` element and the reclaim: on the
    /// Allocate path, grants an earlier process made are still revoked.
    pub(crate) fn cgroups(&self) -> Result<Arc<CgroupDevices>, String> {
        match self {
            Self::AtRequest(c) => Ok(c.clone()),
            Self::AtAllocate { cgroups, .. } => cgroups.clone(),
            Self::Unavailable(why) => Err(format!("VFIO is unavailable on this node: {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sriov_pci_fake::{FakeSysfs, fixtures};
    use sriov_vfio::{DeviceNodes, DeviceNumber};

    /// `/dev/vfio/vfio` stands in as a regular file: present or not.
    #[derive(Debug)]
    struct Present;
    impl DeviceNodes for Present {
        fn device_number(&self, path: &Path) -> sriov_vfio::Result<DeviceNumber> {
            std::fs::metadata(path).map_err(|cause| sriov_vfio::Error::DeviceNode {
                path: path.to_path_buf(),
                cause,
            })?;
            Ok(DeviceNumber::new(10, 196))
        }
    }

    struct Node {
        fake: FakeSysfs,
        dev: tempfile::TempDir,
        cgroup: tempfile::TempDir,
    }

    impl Node {
        fn new(v2: bool) -> Self {
            let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
            let dev = tempfile::tempdir().unwrap();
            std::fs::write(dev.path().join("vfio"), "").unwrap();
            let cgroup = tempfile::tempdir().unwrap();
            if v2 {
                std::fs::write(cgroup.path().join("cgroup.controllers"), "cpu\n").unwrap();
            } else {
                std::fs::create_dir(cgroup.path().join("devices")).unwrap();
            }
            Self { fake, dev, cgroup }
        }

        fn decide(&self, at_allocate: bool) -> VfioAccess {
            VfioAccess::decide(
                &self.cgroup.path().join("devices"),
                &VfioDir::with_device_nodes(self.dev.path(), Arc::new(Present)),
                &self.fake.sysfs(),
                at_allocate,
            )
        }
    }

    #[test]
    fn cgroup_v2_gives_vfio_at_allocate_and_v1_at_request_unless_asked() {
        let v2 = Node::new(true);
        let access = v2.decide(false);
        assert!(
            access
                .only_at_allocate()
                .is_some_and(|why| why.contains("cgroup v2")),
            "{access:?}"
        );
        assert!(
            access
                .at_allocate(&VfioDir::new("/x"), &v2.fake.sysfs())
                .is_some()
        );

        let v1 = Node::new(false);
        assert!(matches!(v1.decide(false), VfioAccess::AtRequest(_)));
        let asked = v1.decide(true);
        assert!(
            asked
                .only_at_allocate()
                .is_some_and(|why| why.contains("cgroup v1")),
            "{asked:?}"
        );
        assert!(
            asked.cgroups().is_ok(),
            "the v1 root stays open for old grants"
        );
    }

    #[test]
    fn without_dev_vfio_neither_path_works_and_the_reason_is_given() {
        let node = Node::new(true);
        std::fs::remove_file(node.dev.path().join("vfio")).unwrap();
        let access = node.decide(false);
        let VfioAccess::Unavailable(why) = &access else {
            panic!("{access:?}");
        };
        assert!(why.contains("vfio"), "{why}");
        assert!(access.only_at_allocate().is_none());
        assert!(
            access
                .at_allocate(&VfioDir::new("/x"), &node.fake.sysfs())
                .is_none()
        );
        let refused = access.cgroups().unwrap_err();
        assert!(
            refused.contains("VFIO is unavailable on this node"),
            "{refused}"
        );
    }
}
