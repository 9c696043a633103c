//! `cargo xtask bench`: runs every benchmark binary in release mode.
//!
//! Benchmarks live as `[[bench]]` targets with `harness = false` in the crate
//! they measure and print their own figures; nothing here asserts on time.
//! Among them: `bins/sriov-device-plugin/benches/reload.rs`, the standalone
//! plugin's reload latency (config rewritten until kubelet's ListAndWatch
//! carries it; median and p99, goal < 200 ms, printed as met or missed).

use anyhow::{Result, bail};

use crate::suites::cargo;

pub(crate) fn run(args: &[String]) -> Result<()> {
    // Benchmarks that drive the real binaries find them in target/release:
    // `cargo bench` builds other packages' binaries only in test form.
    if !cargo(&[
        "build",
        "--release",
        "--workspace",
        "--bins",
        "--features",
        crate::suites::TEST_FEATURES,
    ])
    .status()?
    .success()
    {
        bail!("building the release binaries failed");
    }
    let mut cmd = cargo(&[
        "bench",
        "--workspace",
        "--features",
        crate::suites::TEST_FEATURES,
    ]);
    cmd.args(args);
    if !cmd.status()?.success() {
        bail!("a benchmark failed");
    }
    Ok(())
}
