//! `cargo xtask bench`: runs every benchmark binary in release mode.
//!
//! Benchmarks live as `[[bench]]` targets with `harness = false` in the crate
//! they measure and print their own figures; nothing here asserts on time.

use anyhow::{Result, bail};

use crate::suites::cargo;

pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut cmd = cargo(&["bench", "--workspace"]);
    cmd.args(args);
    if !cmd.status()?.success() {
        bail!("a benchmark failed");
    }
    Ok(())
}
