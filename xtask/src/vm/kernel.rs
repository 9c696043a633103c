//! The guest kernel: Debian's `linux-image-amd64` fetched with `apt-get
//! download` and unpacked with `dpkg-deb -x` into the cache directory. Nothing
//! is installed on the host and nothing goes into its /boot.
//!
//! Debian's image has PCI_IOV, IGB, IGBVF, VFIO_PCI and INTEL_IOMMU (as
//! modules where they can be); it lacks VFIO_NOIOMMU, which is why the VM gets
//! an emulated intel-iommu. The package ships no modules.dep (its postinst
//! runs depmod), so the host's `depmod -b` generates one inside the cache.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// An unpacked guest kernel with its module tree.
pub(crate) struct GuestKernel {
    /// `uname -r` of the guest, e.g. `6.12.95+deb12-amd64`.
    pub(crate) version: String,
    pub(crate) vmlinuz: PathBuf,
    /// `.../lib/modules/<version>`.
    pub(crate) modules: PathBuf,
}

/// Why no kernel could be had: the suite is skipped, not failed, on hosts
/// without Debian's tools or package lists.
#[derive(Debug)]
pub(crate) struct Unavailable(pub(crate) String);

/// Returns the cached guest kernel, fetching and unpacking it on first use.
pub(crate) fn ensure(cache: &Path) -> Result<std::result::Result<GuestKernel, Unavailable>> {
    let root = match std::env::var("NSM_VM_KERNEL_PACKAGE") {
        Ok(p) => cache.join(format!("kernel-{p}")),
        Err(_) => cache.join("kernel"),
    };
    let ready = root.join("READY");
    if let Ok(version) = fs::read_to_string(&ready) {
        let version = version.trim().to_string();
        if let Some(k) = located(&root.join("root"), &version) {
            return Ok(Ok(k));
        }
    }
    for tool in ["apt-cache", "apt-get", "dpkg-deb", "depmod"] {
        if !on_path(tool) {
            return Ok(Err(Unavailable(format!(
                "no guest kernel: `{tool}` is not installed (a Debian host with kmod is needed)"
            ))));
        }
    }
    // NSM_VM_KERNEL_PACKAGE pins a kernel (e.g. bookworm's
    // linux-image-6.1.0-42-amd64) where the newest is not wanted.
    let pinned = std::env::var("NSM_VM_KERNEL_PACKAGE").ok();
    let Some(package) = pinned.map_or_else(newest_image_package, |p| Ok(Some(p)))? else {
        return Ok(Err(Unavailable(
            "no guest kernel: apt knows no linux-image-amd64 (xtask/setup/qemu.sh adds bookworm-backports)".into(),
        )));
    };
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let deb = match find_deb(&debs, &package)? {
        Some(d) => d,
        None => {
            println!("vm-test: downloading {package}");
            let st = Command::new("apt-get")
                .args(["download", "-q"])
                .arg(&package)
                .current_dir(&debs)
                .status()
                .context("running apt-get download")?;
            if !st.success() {
                return Ok(Err(Unavailable(format!(
                    "no guest kernel: apt-get download {package} failed ({st})"
                ))));
            }
            find_deb(&debs, &package)?
                .with_context(|| format!("apt-get download left no {package}_*.deb"))?
        }
    };
    let tree = root.join("root");
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("clearing {}", tree.display()))?;
    }
    fs::create_dir_all(&tree)?;
    println!("vm-test: unpacking {}", deb.display());
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tree)
        .status()
        .context("running dpkg-deb")?;
    if !st.success() {
        bail!("dpkg-deb -x {} failed: {st}", deb.display());
    }
    let version = only_module_version(&tree)?;
    let st = Command::new("depmod")
        .arg("-b")
        .arg(&tree)
        .arg(&version)
        .status()
        .context("running depmod")?;
    if !st.success() {
        bail!("depmod -b {} {version} failed: {st}", tree.display());
    }
    let k = located(&tree, &version)
        .with_context(|| format!("{} has no vmlinuz or modules for {version}", tree.display()))?;
    fs::write(&ready, &version)?;
    Ok(Ok(k))
}

fn located(tree: &Path, version: &str) -> Option<GuestKernel> {
    let vmlinuz = tree.join(format!("boot/vmlinuz-{version}"));
    let modules = tree.join(format!("lib/modules/{version}"));
    (vmlinuz.is_file() && modules.join("modules.dep").is_file()).then(|| GuestKernel {
        version: version.to_string(),
        vmlinuz,
        modules,
    })
}

pub(crate) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// The versioned image package behind the `linux-image-amd64` metapackage,
/// newest kernel first across every suite apt knows (so backports' 6.12 wins
/// over bookworm's 6.1 when the backports entry exists).
fn newest_image_package() -> Result<Option<String>> {
    let out = Command::new("apt-cache")
        .args(["show", "linux-image-amd64"])
        .output()
        .context("running apt-cache show")?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(pick_image_package(&String::from_utf8_lossy(&out.stdout)))
}

fn pick_image_package(show: &str) -> Option<String> {
    show.lines()
        .filter_map(|l| l.strip_prefix("Depends:"))
        .flat_map(|deps| deps.split([',', '|']))
        .filter_map(|d| d.split_whitespace().next())
        .filter(|name| name.starts_with("linux-image-") && !name.ends_with("-amd64-unsigned"))
        .filter_map(|name| Some((kernel_version_key(name)?, name.to_string())))
        .max()
        .map(|(_, name)| name)
}

/// `linux-image-6.12.95+deb12-amd64` -> `[6, 12, 95]`.
fn kernel_version_key(package: &str) -> Option<Vec<u32>> {
    let ver = package.strip_prefix("linux-image-")?;
    let numeric = ver.split(['+', '-']).next()?;
    numeric.split('.').map(|p| p.parse().ok()).collect()
}

pub(crate) fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn only_module_version(tree: &Path) -> Result<String> {
    let dir = tree.join("lib/modules");
    let mut versions = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        versions.push(entry?.file_name().to_string_lossy().into_owned());
    }
    match versions.as_slice() {
        [v] => Ok(v.clone()),
        _ => bail!(
            "expected one kernel in {}, found {versions:?}",
            dir.display()
        ),
    }
}

/// `modules.dep`, keyed by module name with `-` folded to `_` the way the
/// kernel and modprobe treat them.
pub(crate) struct ModuleDeps {
    /// name -> (path relative to the module dir, direct dependency paths)
    by_name: BTreeMap<String, (String, Vec<String>)>,
}

impl ModuleDeps {
    pub(crate) fn parse(text: &str) -> Self {
        let mut by_name = BTreeMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(str::to_string).collect();
            by_name.insert(module_name(path), (path.to_string(), deps));
        }
        ModuleDeps { by_name }
    }

    /// The paths of `wanted` and everything they depend on, each dependency
    /// before its users, so loading in this order never misses a symbol.
    pub(crate) fn closure(&self, wanted: &[&str]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for w in wanted {
            let (path, _) = self
                .by_name
                .get(&w.replace('-', "_"))
                .with_context(|| format!("module {w} is not in modules.dep"))?;
            self.visit(path, &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn visit(&self, path: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) -> Result<()> {
        if !seen.insert(path.to_string()) {
            return Ok(());
        }
        let (_, deps) = self
            .by_name
            .get(&module_name(path))
            .with_context(|| format!("dependency {path} is not in modules.dep"))?;
        for d in deps {
            self.visit(d, seen, order)?;
        }
        order.push(path.to_string());
        Ok(())
    }
}

/// `kernel/drivers/vfio/pci/vfio-pci.ko.xz` -> `vfio_pci`.
pub(crate) fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/net/ethernet/intel/igb/igb.ko.xz: kernel/drivers/dca/dca.ko.xz kernel/drivers/i2c/algos/i2c-algo-bit.ko.xz
kernel/drivers/dca/dca.ko.xz:
kernel/drivers/i2c/algos/i2c-algo-bit.ko.xz:
kernel/drivers/vfio/vfio.ko.xz: kernel/virt/lib/irqbypass.ko.xz
kernel/virt/lib/irqbypass.ko.xz:
kernel/drivers/vfio/pci/vfio-pci-core.ko.xz: kernel/drivers/vfio/vfio.ko.xz kernel/virt/lib/irqbypass.ko.xz
kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz kernel/drivers/vfio/vfio.ko.xz kernel/virt/lib/irqbypass.ko.xz
";

    #[test]
    fn closure_lists_dependencies_before_their_users_once_each() {
        let deps = ModuleDeps::parse(DEP);
        let order = deps.closure(&["igb", "vfio-pci", "vfio"]).unwrap();
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        assert_eq!(
            names,
            [
                "dca",
                "i2c_algo_bit",
                "igb",
                "irqbypass",
                "vfio",
                "vfio_pci_core",
                "vfio_pci"
            ]
        );
    }

    #[test]
    fn closure_names_the_missing_module() {
        let err = ModuleDeps::parse(DEP).closure(&["igbvf"]).unwrap_err();
        assert!(err.to_string().contains("igbvf"), "{err}");
    }

    #[test]
    fn newest_kernel_package_wins_across_suites() {
        let show = "\
Package: linux-image-amd64
Version: 6.1.176-1
Depends: linux-image-6.1.0-41-amd64 (= 6.1.176-1)

Package: linux-image-amd64
Version: 6.12.95-1~bpo12+1
Depends: linux-image-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1)

Package: linux-image-amd64
Version: 6.1.192-2
Depends: linux-image-6.1.0-42-amd64 (= 6.1.192-2)
";
        assert_eq!(
            pick_image_package(show).as_deref(),
            Some("linux-image-6.12.95+deb12-amd64")
        );
    }
}
