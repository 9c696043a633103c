//! `cargo xtask demo`: the README's main-job command.
//!
//! Runs the real `forwarder-sriov` binary on a private copy of the shipped
//! `testdata/sysfs/node` fixture (the host's sysfs is never touched) and
//! prints a short transcript: what discovery sees, VFs created on the
//! 82576 PF, one VF moved to vfio-pci and back.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::suites::cargo;

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub(crate) fn run(_args: &[String]) -> Result<()> {
    let root = workspace_root();
    if !cargo(&["build", "--quiet", "--bin", "forwarder-sriov"])
        .status()?
        .success()
    {
        bail!("building forwarder-sriov failed");
    }
    let bin = root.join("target/debug/forwarder-sriov");
    let sys = root.join("target/demo/sysfs");
    if sys.exists() {
        std::fs::remove_dir_all(&sys).with_context(|| format!("clearing {}", sys.display()))?;
    }
    copy_tree(&root.join("testdata/sysfs/node"), &sys)?;
    let s = sys.to_string_lossy().into_owned();
    println!("== a private copy of testdata/sysfs/node at {s}\n");
    step(&bin, &["inventory", "--sysfs-root", &s])?;
    step(&bin, &["pci", "--sysfs-root", &s, "set-numvfs", "0000:01:00.0", "3"])?;
    step(&bin, &["pci", "--sysfs-root", &s, "bind", "0000:01:10.2", "vfio-pci"])?;
    step(&bin, &["inventory", "--sysfs-root", &s])?;
    step(&bin, &["pci", "--sysfs-root", &s, "restore", "0000:01:10.2", "igbvf"])?;
    println!("demo: done");
    Ok(())
}

fn step(bin: &Path, args: &[&str]) -> Result<()> {
    println!("$ forwarder-sriov {}", args.join(" "));
    let status = Command::new(bin).args(args).status()?;
    println!();
    if !status.success() {
        bail!("forwarder-sriov {} failed: {status}", args.join(" "));
    }
    Ok(())
}

pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let dst = to.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &dst)?;
        } else if ft.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), &dst)?;
        }
    }
    Ok(())
}
