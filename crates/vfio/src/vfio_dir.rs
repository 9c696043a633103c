use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::device::{DeviceNodes, DeviceNumber, StatDeviceNodes};
use crate::error::Result;
use crate::group::IommuGroup;

/// Default VFIO directory as seen from the forwarder's container (`NSM_VFIO_PATH`).
pub const DEFAULT_VFIO_DIR: &str = "/host/dev/vfio";

/// The `/dev/vfio` directory: the container node `vfio` and one node per IOMMU group.
#[derive(Debug, Clone)]
pub struct VfioDir {
    root: PathBuf,
    nodes: Arc<dyn DeviceNodes>,
}

impl VfioDir {
    /// A VFIO directory at `root` whose nodes are read with `stat(2)`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_device_nodes(root, Arc::new(StatDeviceNodes))
    }

    /// A VFIO directory whose device numbers come from `nodes` (tests use a fake).
    pub fn with_device_nodes(root: impl Into<PathBuf>, nodes: Arc<dyn DeviceNodes>) -> Self {
        Self {
            root: root.into(),
            nodes,
        }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/vfio`, the container node every VFIO user opens.
    pub fn container_path(&self) -> PathBuf {
        self.root.join("vfio")
    }

    /// `<root>/<group>` or `<root>/noiommu-<group>`.
    pub fn group_path(&self, group: &IommuGroup) -> PathBuf {
        self.root.join(group.device_file_name())
    }

    /// Device number of `<root>/vfio` (10:196 on Linux, but read, never assumed).
    pub fn container_device(&self) -> Result<DeviceNumber> {
        self.nodes.device_number(&self.container_path())
    }

    /// Device number of the group's node; fails when the group is not bound to vfio-pci
    /// (its node does not exist).
    pub fn group_device(&self, group: &IommuGroup) -> Result<DeviceNumber> {
        self.nodes.device_number(&self.group_path(group))
    }

    /// The device number of any node, read through the same seam.
    pub(crate) fn device_number(&self, path: &Path) -> Result<DeviceNumber> {
        self.nodes.device_number(path)
    }

    /// Both device numbers a container needs to use a group: (container, group).
    ///
    /// ```
    /// use sriov_vfio::{IommuGroup, VfioDir};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let vfio = VfioDir::new("/dev/vfio");
    /// let group = IommuGroup::new(42);
    /// match vfio.devices_for(&group) {
    ///     Ok((container, group)) => println!("allow {} and {}", container.cgroup_rule(), group.cgroup_rule()),
    ///     // No node: the group is not bound to vfio-pci on this machine.
    ///     Err(e) => assert!(e.to_string().contains("/dev/vfio/"), "{e}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn devices_for(&self, group: &IommuGroup) -> Result<(DeviceNumber, DeviceNumber)> {
        Ok((self.container_device()?, self.group_device(group)?))
    }
}
