//! Building trees: functions, drivers, SR-IOV PFs with their VFs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sriov_pci::{PciAddress, Sysfs};
use tempfile::TempDir;

use crate::kernel::{DeviceAttrs, FakeKernel};
use crate::layout::{Layout, write};
use crate::meta::{DriverSpec, Meta};

/// The SR-IOV capability of a PF being built.
#[derive(Debug, Clone)]
pub struct SriovSpec {
    /// `sriov_totalvfs`.
    pub total_vfs: u32,
    /// VFs enabled when the tree is built (created through the fake kernel).
    pub num_vfs: u32,
    /// First VF's routing-ID offset (`sriov_offset`).
    pub offset: u16,
    /// Routing-ID distance between VFs (`sriov_stride`).
    pub stride: u16,
    /// The VFs' device ID (`sriov_vf_device`).
    pub vf_device: u16,
}

/// One PCI function to put in the tree.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Its address.
    pub address: PciAddress,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code (0x020000 for Ethernet).
    pub class: u32,
    /// NUMA node, -1 for none.
    pub numa_node: i32,
    /// Driver bound at build time.
    pub driver: Option<String>,
    /// Interface name its network driver gives it.
    pub ifname: Option<String>,
    /// IOMMU group; `None` puts it in a fresh group.
    pub iommu_group: Option<u32>,
    /// SR-IOV capability, for PFs.
    pub sriov: Option<SriovSpec>,
}

impl FunctionSpec {
    /// An Ethernet function of `vendor:device` at `address`, with no driver and no SR-IOV.
    pub fn ethernet(address: &str, vendor: u16, device: u16) -> Self {
        Self {
            // The callers pass literals; a typo is a bug in the test itself.
            #[allow(clippy::expect_used)]
            address: address.parse().expect("fixture PCI address"),
            vendor,
            device,
            class: 0x020000,
            numa_node: -1,
            driver: None,
            ifname: None,
            iommu_group: None,
            sriov: None,
        }
    }

    /// Binds it to `driver` at build time.
    pub fn driver(mut self, driver: &str) -> Self {
        self.driver = Some(driver.to_string());
        self
    }

    /// Names its network interface.
    pub fn ifname(mut self, name: &str) -> Self {
        self.ifname = Some(name.to_string());
        self
    }

    /// Sets its NUMA node.
    pub fn numa(mut self, node: i32) -> Self {
        self.numa_node = node;
        self
    }

    /// Sets its class code.
    pub fn class(mut self, class: u32) -> Self {
        self.class = class;
        self
    }

    /// Puts it in IOMMU group `group`.
    pub fn iommu_group(mut self, group: u32) -> Self {
        self.iommu_group = Some(group);
        self
    }

    /// Makes it an SR-IOV PF.
    pub fn sriov(mut self, spec: SriovSpec) -> Self {
        self.sriov = Some(spec);
        self
    }
}

/// Builds a tree, in a temp dir or at a given path.
///
/// ```
/// use sriov_pci_fake::{FakeSysfs, FunctionSpec, SriovSpec};
///
/// // An E810-like PF: ice claims the PF's id, iavf the VFs'.
/// let fake = FakeSysfs::builder()
///     .driver("ice", &["8086:1592"], true)
///     .driver("iavf", &["8086:1889"], true)
///     .function(
///         FunctionSpec::ethernet("0000:17:00.0", 0x8086, 0x1592)
///             .driver("ice")
///             .ifname("ens1f0")
///             .numa(1)
///             .sriov(SriovSpec { total_vfs: 8, num_vfs: 2, offset: 8, stride: 1, vf_device: 0x1889 }),
///     )
///     .build()?;
/// let sysfs = fake.sysfs();
/// let pf = "0000:17:00.0".parse()?;
/// let vfs = sysfs.vfs(pf)?;
/// assert_eq!(vfs[1].address.to_string(), "0000:17:01.1"); // routing ID 0x100 + 8 + 1
/// assert_eq!(sysfs.driver(vfs[1].address)?.as_deref(), Some("iavf"));
/// assert_eq!(sysfs.numa_node(pf)?, Some(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct TreeBuilder {
    meta: Meta,
    functions: Vec<FunctionSpec>,
}

impl TreeBuilder {
    /// An empty tree with the `vfio-pci` driver (which claims nothing by ID).
    pub fn new() -> Self {
        Self::default().driver("vfio-pci", &[], false)
    }

    /// Declares a driver: the `vendor:device` ids it claims and whether it
    /// creates network interfaces.
    pub fn driver(mut self, name: &str, ids: &[&str], netdev: bool) -> Self {
        self.meta.drivers.insert(
            name.to_string(),
            DriverSpec {
                ids: ids.iter().map(|s| s.to_lowercase()).collect(),
                netdev,
            },
        );
        self
    }

    /// Adds a function.
    pub fn function(mut self, f: FunctionSpec) -> Self {
        if let Some(name) = &f.ifname {
            self.meta
                .ifnames
                .insert(f.address.to_string(), name.clone());
        }
        self.functions.push(f);
        self
    }

    /// Builds in a fresh temp dir, removed when the [`FakeSysfs`] drops.
    pub fn build(self) -> io::Result<FakeSysfs> {
        let dir = tempfile::Builder::new().prefix("fake-sysfs-").tempdir()?;
        let kernel = self.write_tree(dir.path())?;
        Ok(FakeSysfs {
            root: dir.path().to_path_buf(),
            _dir: Some(dir),
            kernel: Arc::new(kernel),
        })
    }

    /// Builds at `root`, which must be empty or absent (for shipped fixtures).
    pub fn build_at(self, root: &Path) -> io::Result<()> {
        std::fs::create_dir_all(root)?;
        if std::fs::read_dir(root)?.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is not empty", root.display()),
            ));
        }
        self.write_tree(root).map(drop)
    }

    fn write_tree(self, root: &Path) -> io::Result<FakeKernel> {
        let layout = Layout::new(root);
        for name in self.meta.drivers.keys() {
            let d = layout.drivers().join(name);
            for f in ["bind", "unbind", "new_id", "remove_id"] {
                write(d.join(f), "")?;
            }
        }
        write(root.join("bus/pci/drivers_probe"), "")?;
        write(root.join("bus/pci/drivers_autoprobe"), "1\n")?;
        self.meta.store(root)?;
        let kernel = FakeKernel::with_meta(layout.clone(), self.meta);
        let mut functions = self.functions;
        functions.sort_by_key(|f| f.address);
        // Fixed groups first, so fresh ones are numbered after them.
        for f in &functions {
            let dir = layout.default_parent(f.address).join(f.address.to_string());
            let attrs = DeviceAttrs {
                vendor: format!("0x{:04x}", f.vendor),
                device: format!("0x{:04x}", f.device),
                class: format!("0x{:06x}", f.class),
                subsystem_vendor: format!("0x{:04x}", f.vendor),
                subsystem_device: "0x0000".to_string(),
                numa_node: f.numa_node.to_string(),
            };
            kernel.add_device(f.address, &dir, &attrs)?;
            if let Some(g) = f.iommu_group {
                kernel.join_iommu_group(f.address, g)?;
            }
            if let Some(s) = &f.sriov {
                write(dir.join("sriov_totalvfs"), format!("{}\n", s.total_vfs))?;
                write(dir.join("sriov_numvfs"), "0\n")?;
                write(dir.join("sriov_offset"), format!("{}\n", s.offset))?;
                write(dir.join("sriov_stride"), format!("{}\n", s.stride))?;
                write(dir.join("sriov_vf_device"), format!("{:x}\n", s.vf_device))?;
                write(dir.join("sriov_drivers_autoprobe"), "1\n")?;
            }
        }
        for f in &functions {
            if f.iommu_group.is_none() {
                let g = next_group(&layout)?;
                kernel.join_iommu_group(f.address, g)?;
            }
            if let Some(d) = &f.driver {
                kernel.attach_driver(f.address, d)?;
            }
        }
        for f in &functions {
            if let Some(s) = &f.sriov
                && s.num_vfs > 0
            {
                kernel.enable_vfs(f.address, s.num_vfs)?;
            }
        }
        Ok(kernel)
    }
}

fn next_group(layout: &Layout) -> io::Result<u32> {
    let mut next = 0;
    if let Ok(rd) = std::fs::read_dir(layout.iommu_groups()) {
        for e in rd {
            if let Ok(n) = e?.file_name().to_string_lossy().parse::<u32>() {
                next = next.max(n + 1);
            }
        }
    }
    Ok(next)
}

/// A fake sysfs tree with its fake kernel.
#[derive(Debug)]
pub struct FakeSysfs {
    root: PathBuf,
    _dir: Option<TempDir>,
    kernel: Arc<FakeKernel>,
}

impl FakeSysfs {
    /// A tree builder (see [`TreeBuilder`]).
    pub fn builder() -> TreeBuilder {
        TreeBuilder::new()
    }

    /// A private, writable copy of a shipped fixture (or any tree with a
    /// `fake-kernel.json`), in a temp dir.
    ///
    /// ```
    /// use sriov_pci_fake::{FakeSysfs, fixtures};
    ///
    /// // A fixture as a project would ship it (or as `sysfs-capture` writes it).
    /// let shipped = tempfile::tempdir()?;
    /// fixtures::connectx5(FakeSysfs::builder()).build_at(shipped.path())?;
    ///
    /// let fake = FakeSysfs::copy_of(shipped.path())?;
    /// let pf = "0000:5e:00.0".parse()?;
    /// fake.sysfs().set_num_vfs(pf, 4)?;
    /// // The copy changed; the shipped tree did not.
    /// assert_eq!(fake.sysfs().num_vfs(pf)?, 4);
    /// assert_eq!(sriov_pci::Sysfs::under_root(shipped.path()).num_vfs(pf)?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn copy_of(fixture: impl AsRef<Path>) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("fake-sysfs-").tempdir()?;
        copy_tree(fixture.as_ref(), dir.path())?;
        let kernel = FakeKernel::attach(dir.path())?;
        Ok(Self {
            root: dir.path().to_path_buf(),
            _dir: Some(dir),
            kernel: Arc::new(kernel),
        })
    }

    /// Attaches to a tree in place (it is changed by writes, and kept).
    pub fn attach(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        let kernel = FakeKernel::attach(&root)?;
        Ok(Self {
            root,
            _dir: None,
            kernel: Arc::new(kernel),
        })
    }

    /// The tree's root (the equivalent of `/sys`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A [`Sysfs`] view of the tree whose writes go through the fake kernel.
    pub fn sysfs(&self) -> Sysfs {
        Sysfs::under_root(&self.root).with_writer(self.kernel.clone())
    }

    /// The fake kernel (for the writes it recorded).
    pub fn kernel(&self) -> &Arc<FakeKernel> {
        &self.kernel
    }
}

/// Copies a tree, recreating symlinks as links (not following them).
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}
