use std::path::{Path, PathBuf};

use sriov_pci::PciAddress;

use crate::device::DeviceNumber;
use crate::error::{Error, Result};
use crate::group::IommuGroup;
use crate::vfio_dir::VfioDir;

/// Where the VFIO nodes are on the host, whatever directory this process reads them through:
/// kubelet and the container runtime resolve a device spec's host path on the host.
pub const HOST_VFIO_DIR: &str = "/dev/vfio";

/// One character device a container needs for a VF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioNode {
    /// Its path on the host (under [`HOST_VFIO_DIR`]), for a device spec's `host_path`.
    pub host_path: PathBuf,
    /// Its path inside the container. The same as the host path, except a no-IOMMU group node,
    /// which the container sees as `/dev/vfio/<group>` (as sriov-network-device-plugin does, and
    /// where DPDK looks first).
    pub container_path: PathBuf,
    /// Its major:minor, read from the node, never assumed.
    pub device: DeviceNumber,
}

/// Every node a container needs to drive one VF bound to vfio-pci: the legacy container and
/// group nodes, and the VFIO character device (`/dev/vfio/devices/vfioN`, used with iommufd)
/// on kernels that make one (6.2 and later with `CONFIG_VFIO_DEVICE_CDEV`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioNodes {
    /// The VF's IOMMU group (`noiommu` set when VFIO runs without an IOMMU).
    pub group: IommuGroup,
    /// `/dev/vfio/vfio`.
    pub container: VfioNode,
    /// `/dev/vfio/<group>` or `/dev/vfio/noiommu-<group>`.
    pub group_node: VfioNode,
    /// `/dev/vfio/devices/vfioN`, where the kernel offers it.
    pub cdev: Option<VfioNode>,
}

impl VfioNodes {
    /// The nodes in the order a device spec list wants them: container, group, cdev.
    pub fn all(&self) -> Vec<&VfioNode> {
        let mut out = vec![&self.container, &self.group_node];
        out.extend(self.cdev.as_ref());
        out
    }
}

/// The name (`vfioN`) of the VFIO character device of the PCI device whose sysfs directory is
/// `device_dir`, from its `vfio-dev/` directory; `None` when the kernel made none (older than
/// 6.2, no `CONFIG_VFIO_DEVICE_CDEV`, or the device is not bound to vfio-pci).
///
/// Only an entry with a `dev` attribute counts: without `CONFIG_VFIO_DEVICE_CDEV` (Debian's
/// 6.12, for one) the kernel still lists `vfio-dev/vfioN` for a device on vfio-pci, but gives it
/// no device number and makes no `/dev/vfio/devices/vfioN`.
///
/// ```
/// # let tmp = tempfile::tempdir()?;
/// # let dev = tmp.path().join("0000:3b:02.0");
/// # std::fs::create_dir_all(dev.join("vfio-dev/vfio3"))?;
/// # std::fs::write(dev.join("vfio-dev/vfio3/dev"), "239:3\n")?;
/// assert_eq!(sriov_vfio::vfio_cdev_name(&dev)?.as_deref(), Some("vfio3"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn vfio_cdev_name(device_dir: &Path) -> Result<Option<String>> {
    let dir = device_dir.join("vfio-dev");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::CdevDir {
                path: dir,
                cause: source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| is_cdev_name(n) && dir.join(n).join("dev").is_file())
        .collect();
    names.sort();
    match names.len() {
        0 => Ok(None),
        1 => Ok(names.pop()),
        // One device, one cdev: more would mean we cannot tell which the client gets.
        _ => Err(Error::CdevAmbiguous { path: dir, names }),
    }
}

/// `vfio` followed by decimal digits only, so a name read from sysfs can never leave `devices/`.
fn is_cdev_name(name: &str) -> bool {
    name.strip_prefix("vfio")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

impl VfioDir {
    /// `<root>/devices/<name>`: a VFIO character device (`vfioN`).
    pub fn cdev_path(&self, name: &str) -> PathBuf {
        self.root().join("devices").join(name)
    }

    /// Every node a container needs for the VF `vf` (see [`VfioNodes`]), read through this
    /// directory and reported at their host paths. Fails when the VF has no IOMMU group or its
    /// group node does not exist (the VF is not bound to vfio-pci).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sriov_vfio::{DeviceNodes, DeviceNumber, VfioDir};
    ///
    /// #[derive(Debug)]
    /// struct Fixed;
    /// impl DeviceNodes for Fixed {
    ///     fn device_number(&self, path: &std::path::Path) -> sriov_vfio::Result<DeviceNumber> {
    ///         Ok(if path.ends_with("vfio") { DeviceNumber::new(10, 196) } else { DeviceNumber::new(243, 7) })
    ///     }
    /// }
    /// # let fake = sriov_pci_fake::fixtures::x710_2port(sriov_pci_fake::FakeSysfs::builder()).build()?;
    /// # let sysfs = fake.sysfs();
    /// let vf = "0000:3b:02.0".parse()?;
    /// let nodes = VfioDir::with_device_nodes("/host/dev/vfio", Arc::new(Fixed))
    ///     .nodes_for(sysfs.devices_dir(), vf)?;
    /// assert_eq!(nodes.container.host_path.to_str(), Some("/dev/vfio/vfio"));
    /// assert_eq!(nodes.group_node.device, DeviceNumber::new(243, 7));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn nodes_for(&self, devices_dir: &Path, vf: PciAddress) -> Result<VfioNodes> {
        let device_dir = devices_dir.join(vf.to_string());
        let group = IommuGroup::of_device_dir(&device_dir)?;
        let host = Path::new(HOST_VFIO_DIR);
        let container = VfioNode {
            host_path: host.join("vfio"),
            container_path: host.join("vfio"),
            device: self.container_device()?,
        };
        let group_node = VfioNode {
            host_path: host.join(group.device_file_name()),
            container_path: host.join(group.id.to_string()),
            device: self.group_device(&group)?,
        };
        let cdev = match vfio_cdev_name(&device_dir)? {
            Some(name) => {
                let path = host.join("devices").join(&name);
                Some(VfioNode {
                    device: self.device_number(&self.cdev_path(&name))?,
                    container_path: path.clone(),
                    host_path: path,
                })
            }
            None => None,
        };
        Ok(VfioNodes {
            group,
            container,
            group_node,
            cdev,
        })
    }
}
