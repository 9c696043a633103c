//! `cargo xtask demo`: the README's main-job command.
//!
//! Runs the real `forwarder-sriov` binary on a private copy of the shipped
//! `testdata/sysfs/node` fixture (the host's sysfs is never touched):
//! first what discovery sees and VFs created on the 82576 PF, then, as
//! root, the whole flow through `sriov-e2e` with stand-ins for kubelet and
//! the NSM manager, the forwarder in a private network namespace whose
//! veth pairs stand in for the VF netdevs, and a client namespace that
//! receives the VF with its address.

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

/// Where cargo puts the workspace's builds: `$CARGO_TARGET_DIR`, else `target/`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub(crate) fn run(_args: &[String]) -> Result<()> {
    let root = workspace_root();
    if !cargo(&[
        "build",
        "--quiet",
        "--bin",
        "forwarder-sriov",
        "--bin",
        "sriov-e2e",
        "--features",
        crate::suites::TEST_FEATURES,
    ])
    .status()?
    .success()
    {
        bail!("building forwarder-sriov failed");
    }
    let bin = target_dir().join("debug/forwarder-sriov");
    let sys = target_dir().join("demo/sysfs");
    if sys.exists() {
        std::fs::remove_dir_all(&sys).with_context(|| format!("clearing {}", sys.display()))?;
    }
    copy_tree(&root.join("testdata/sysfs/node"), &sys)?;
    let s = sys.to_string_lossy().into_owned();
    println!("== a private copy of testdata/sysfs/node at {s}\n");
    let config = root.join("testdata/config/demo.yaml");
    let c = config.to_string_lossy().into_owned();
    step(&bin, &["inventory", "--sysfs-root", &s, "--config", &c])?;
    step(
        &bin,
        &["pci", "--sysfs-root", &s, "set-numvfs", "0000:01:00.0", "3"],
    )?;
    step(
        &bin,
        &[
            "pci",
            "--sysfs-root",
            &s,
            "bind",
            "0000:01:10.2",
            "vfio-pci",
        ],
    )?;
    step(&bin, &["inventory", "--sysfs-root", &s])?;
    step(
        &bin,
        &[
            "pci",
            "--sysfs-root",
            &s,
            "restore",
            "0000:01:10.2",
            "igbvf",
        ],
    )?;

    if !crate::suites::is_root() {
        println!(
            "demo: SKIPPED the NSM flow: it needs root to create network namespaces and /dev/vfio stand-ins"
        );
        return Ok(());
    }
    let work = target_dir().join("demo/work");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    println!(
        "== the NSM flow: sriov-e2e drives forwarder-sriov with {}",
        config.display()
    );
    let status = Command::new(target_dir().join("debug/sriov-e2e"))
        .arg("--forwarder")
        .arg(&bin)
        .arg("--sysfs-root")
        .arg(&sys)
        .arg("--config")
        .arg(&config)
        .arg("--work")
        .arg(&work)
        .args(["--veth", "--vfio"])
        .status()?;
    println!("(forwarder log: {})", work.join("forwarder.log").display());
    if !status.success() {
        bail!("the NSM flow failed");
    }
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
