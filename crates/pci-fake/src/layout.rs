//! Where things live in a sysfs tree, and the relative links the kernel uses.

use std::io;
use std::path::{Component, Path, PathBuf};

use sriov_pci::PciAddress;

/// Paths of a sysfs tree rooted at `root` (the equivalent of `/sys`).
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub(crate) fn bus_devices(&self) -> PathBuf {
        self.root.join("bus/pci/devices")
    }

    pub(crate) fn drivers(&self) -> PathBuf {
        self.root.join("bus/pci/drivers")
    }

    pub(crate) fn iommu_groups(&self) -> PathBuf {
        self.root.join("kernel/iommu_groups")
    }

    /// `bus/pci/devices/<addr>` (a link to the real directory).
    pub(crate) fn bus_link(&self, address: PciAddress) -> PathBuf {
        self.bus_devices().join(address.to_string())
    }

    /// The real directory behind `bus/pci/devices/<addr>`.
    pub(crate) fn real_dir(&self, address: PciAddress) -> io::Result<PathBuf> {
        let link = self.bus_link(address);
        let target = std::fs::read_link(&link)?;
        Ok(normalize(&link.parent().unwrap_or(&self.root).join(target)))
    }

    /// Where a new top-level device goes: under a root port for its bus, as
    /// on real machines (bus 0 devices sit directly under the host bridge).
    pub(crate) fn default_parent(&self, address: PciAddress) -> PathBuf {
        let host = self
            .root
            .join("devices")
            .join(format!("pci{:04x}:00", address.domain()));
        if address.bus() == 0 {
            host
        } else {
            host.join(format!(
                "{:04x}:00:{:02x}.0",
                address.domain(),
                address.bus() & 0x1f
            ))
        }
    }

    /// `../` repeated so that a link placed in `dir` climbs back to the root.
    pub(crate) fn up_to_root(&self, dir: &Path) -> PathBuf {
        let depth = dir
            .strip_prefix(&self.root)
            .map(|rel| rel.components().count())
            .unwrap_or(0);
        let mut up = PathBuf::new();
        for _ in 0..depth {
            up.push("..");
        }
        up
    }

    /// A link target, relative from `dir`, to `target` inside the tree.
    pub(crate) fn relative(&self, dir: &Path, target: &Path) -> PathBuf {
        let rel = target.strip_prefix(&self.root).unwrap_or(target);
        self.up_to_root(dir).join(rel)
    }
}

/// Removes `.` and `..` components lexically (the tree has no symlinked
/// directories above device dirs, so this matches what the kernel shows).
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

pub(crate) fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
    let link = link.as_ref();
    match std::fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink(target, link)
}

pub(crate) fn write(path: impl AsRef<Path>, content: impl AsRef<[u8]>) -> io::Result<()> {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, content)
}

pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
