//! `cargo xtask demo`: the README's main-job command.
//!
//! Runs the forwarder binary against a shipped fixture (no host sysfs is
//! touched) and shows what it would advertise.

use anyhow::{Result, bail};

use crate::suites::cargo;

pub(crate) fn run(_args: &[String]) -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.join("testdata/sysfs/x710-2port"))
        .unwrap_or_default();
    let mut cmd = cargo(&[
        "run",
        "--quiet",
        "--bin",
        "forwarder-sriov",
        "--",
        "inventory",
    ]);
    cmd.arg("--sysfs-root").arg(&root);
    println!(
        "$ forwarder-sriov inventory --sysfs-root {}",
        root.display()
    );
    if !cmd.status()?.success() {
        bail!("forwarder-sriov inventory failed");
    }
    Ok(())
}
