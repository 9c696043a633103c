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
    // The forwarder is measured as it ships (the Dockerfile builds it the
    // same way): release, and on a glibc host linked static (`crt-static`:
    // no shared libraries for ld.so to map, relocate and resolve at every
    // start, 1.5 MiB of an idle forwarder's RSS). `--target` keeps that flag
    // off the build scripts and proc-macros, which must stay dynamic. The
    // device plugin's bench runs the binary `cargo bench` builds with it.
    let triple = host_triple()?;
    let mut build = cargo(&[
        "build",
        "--release",
        "-p",
        "forwarder-sriov",
        "--target",
        &triple,
        "--features",
        crate::suites::TEST_FEATURES,
    ]);
    if triple.ends_with("-linux-gnu") {
        build.env("RUSTFLAGS", static_rustflags());
    }
    if !build.status()?.success() {
        bail!("building the release binaries failed");
    }
    let shipped = crate::demo::target_dir()
        .join(&triple)
        .join("release")
        .join("forwarder-sriov");
    // Benchmarks that drive the real binaries find them there; `cargo bench`
    // builds other packages' binaries only in test form.
    let mut cmd = cargo(&[
        "bench",
        "--workspace",
        "--features",
        crate::suites::TEST_FEATURES,
    ]);
    if std::env::var_os("FORWARDER_SRIOV_BIN").is_none() {
        cmd.env("FORWARDER_SRIOV_BIN", &shipped);
    }
    cmd.args(args);
    if !cmd.status()?.success() {
        bail!("a benchmark failed");
    }
    Ok(())
}

/// `RUSTFLAGS` with static linking added to what the caller set.
fn static_rustflags() -> String {
    let own = std::env::var("RUSTFLAGS").unwrap_or_default();
    format!("{own} -C target-feature=+crt-static")
        .trim()
        .to_string()
}

/// The triple rustc builds for by default, as the Dockerfile asks for it.
fn host_triple() -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc)
        .args(["--print", "host-tuple"])
        .output()?;
    let triple = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || triple.is_empty() {
        bail!(
            "rustc --print host-tuple: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(triple)
}
