//! runc for the guest: Debian's `runc` package fetched with `apt-get
//! download` into the cache and unpacked with `dpkg-deb -x`, like the
//! kernel. Nothing is installed on the host. The binary is dynamically
//! linked (libseccomp, glibc): the initramfs copies it with the host's
//! libraries, which `xtask/setup/qemu.sh` makes sure are there.
//!
//! It is what applies our Allocate answer in the guest: runc turns the
//! device specs into the container's device nodes and, on cgroup v2, into
//! the eBPF device filter it attaches to the container's cgroup.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::kernel::{find_deb, on_path};

/// Where Debian's package puts the binary.
const IN_PACKAGE: &str = "usr/sbin/runc";

/// The cached runc binary, fetched on first use; `Err` says why there is
/// none (the runc check then skips with that reason).
pub(crate) fn ensure(cache: &Path) -> Result<std::result::Result<PathBuf, String>> {
    let root = cache.join("runc");
    let binary = root.join("root").join(IN_PACKAGE);
    if root.join("READY").is_file() && binary.is_file() {
        return Ok(Ok(binary));
    }
    for tool in ["apt-get", "dpkg-deb"] {
        if !on_path(tool) {
            return Ok(Err(format!(
                "no runc for the guest: `{tool}` is not installed (a Debian host is needed)"
            )));
        }
    }
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let deb = match find_deb(&debs, "runc")? {
        Some(d) => d,
        None => {
            println!("vm-test: downloading runc");
            let st = Command::new("apt-get")
                .args(["download", "-q", "runc"])
                .current_dir(&debs)
                .status()
                .context("running apt-get download")?;
            if !st.success() {
                return Ok(Err(format!(
                    "no runc for the guest: apt-get download runc failed ({st})"
                )));
            }
            find_deb(&debs, "runc")?.context("apt-get download left no runc_*.deb")?
        }
    };
    let tree = root.join("root");
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("clearing {}", tree.display()))?;
    }
    fs::create_dir_all(&tree)?;
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tree)
        .status()
        .context("running dpkg-deb")?;
    if !st.success() {
        bail!("dpkg-deb -x {} failed: {st}", deb.display());
    }
    if !binary.is_file() {
        bail!("{} has no {IN_PACKAGE}", deb.display());
    }
    fs::write(root.join("READY"), deb.display().to_string())?;
    Ok(Ok(binary))
}
