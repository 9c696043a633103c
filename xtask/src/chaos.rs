//! `cargo xtask chaos [--rounds N]`: the crash campaign. Builds
//! `forwarder-sriov` with its `failpoints` feature (a separate copy under
//! `target/chaos/`, never the binary the other suites or a release use) and
//! runs `sriov-e2e --chaos N` on a private copy of the node fixture, inside
//! `unshare --pid --net --mount`, with veth stand-ins for the VF netdevs:
//! every named crash point and random instants, N rounds each, an audit of
//! the host after every fault, racing Requests with cancellations, and a
//! closing table; then 1000 racing Requests (200 in CI) on a generated tree
//! with 16 VFs. The full campaign ends on real igb VFs in the QEMU guest
//! (`--vm-rounds`, `vm::chaos_campaign`), where the one crash point a veth
//! cannot reach (`vfconfig.after-set`, between a VF setting made through the
//! PF and the next) runs too. CI runs a short campaign (`suite_outcome`); its
//! VM test runs one round on real VFs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::report::Outcome;
use crate::suites::{cargo, is_root};

/// Rounds of the full campaign: 14 faults a round, so 40 rounds inject 560.
const FULL_ROUNDS: usize = 40;

/// Rounds on real VFs in the full campaign: 15 faults a round (every named
/// point, `vfconfig.after-set` among them, and the random instants).
const FULL_VM_ROUNDS: usize = 10;

/// Rounds in CI.
const CI_ROUNDS: usize = 2;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn build(args: &[&str]) -> Result<()> {
    let status = cargo(args).status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Builds `forwarder-sriov` with its failpoints into
/// `target/chaos/forwarder-sriov-failpoints` and puts the plain debug
/// binary back, so no other suite runs the armed one. Returns its path.
pub(crate) fn build_armed() -> Result<PathBuf> {
    let target = crate::demo::target_dir();
    build(&[
        "build",
        "-p",
        "forwarder-sriov",
        "--features",
        "failpoints,testing",
    ])?;
    let chaos_dir = target.join("chaos");
    std::fs::create_dir_all(&chaos_dir)?;
    let armed = chaos_dir.join("forwarder-sriov-failpoints");
    std::fs::copy(target.join("debug/forwarder-sriov"), &armed)
        .context("keeping the failpoints build aside")?;
    build(&[
        "build",
        "-p",
        "forwarder-sriov",
        "-p",
        "sriov-e2e",
        "--features",
        crate::suites::TEST_FEATURES,
    ])?;
    Ok(armed)
}

/// Runs the campaign; `Ok` carries the closing `PASS chaos:` line.
fn campaign(rounds: usize) -> Result<String> {
    let root = root();
    let target = crate::demo::target_dir();
    let armed = build_armed()?;
    let chaos_dir = target.join("chaos");

    let work = chaos_dir.join(format!("run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(root.join("testdata/sysfs/node"))
        .arg(work.join("sysfs"))
        .status()?;
    if !status.success() {
        bail!("copying the node fixture failed: {status}");
    }
    let mut child = Command::new("unshare")
        .args(["--pid", "--net", "--mount", "--fork", "--mount-proc"])
        .arg(target.join("debug/sriov-e2e"))
        .arg("--forwarder")
        .arg(&armed)
        .arg("--sysfs-root")
        .arg(work.join("sysfs"))
        .arg("--config")
        .arg(root.join("testdata/config/demo.yaml"))
        .arg("--work")
        .arg(work.join("work"))
        .args(["--veth", "--vfio", "--chaos", &rounds.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting sriov-e2e --chaos under unshare")?;
    let stdout = child.stdout.take().context("sriov-e2e stdout")?;
    let mut closing = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("chaos| {line}");
        if let Some(rest) = line.strip_prefix("PASS chaos: ") {
            closing = Some(rest.to_string());
        }
    }
    let status = child.wait()?;
    let line = match (status.success(), closing) {
        (true, Some(line)) => line,
        (ok, _) => bail!(
            "the campaign failed (exit {status}, closing line {}); forwarder log: {}",
            if ok { "missing" } else { "absent or FAIL" },
            work.join("work/forwarder.log").display()
        ),
    };
    let raced = race(
        &target,
        &armed,
        &work,
        if rounds >= 10 { 1000 } else { 200 },
    )?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(format!("{line}; race: {raced}"))
}

/// The race on 16 VFs: a generated tree (one PF, 16 iavf VFs) that the
/// shipped fixture, with four, cannot offer; `requests` racing Requests over
/// the 16 tokens the pod holds. `Ok` carries the `PASS chaos-racing:` line.
fn race(target: &Path, forwarder: &Path, work: &Path, requests: usize) -> Result<String> {
    let tree = work.join("race-sysfs");
    let wrote = cargo(&[
        "run",
        "-q",
        "-p",
        "sriov-pci-fake",
        "--bin",
        "write-fixtures",
        "--",
    ])
    .args(["--generated", "1", "16"])
    .arg(&tree)
    .status()?;
    if !wrote.success() {
        bail!("writing the 16-VF tree failed: {wrote}");
    }
    let config = work.join("race.yaml");
    std::fs::write(
        &config,
        "physicalFunctions:\n  0000:10:00.0:\n    pfKernelDriver: ice\n    vfKernelDriver: iavf\n    \
         capabilities: [100G]\n    serviceDomains: [race.domain]\n",
    )?;
    let out = Command::new("unshare")
        .args(["--pid", "--net", "--mount", "--fork", "--mount-proc"])
        .arg(target.join("debug/sriov-e2e"))
        .arg("--forwarder")
        .arg(forwarder)
        .arg("--sysfs-root")
        .arg(&tree)
        .arg("--config")
        .arg(&config)
        .args(["--resource", "race.domain/100G"])
        .arg("--work")
        .arg(work.join("race"))
        .args(["--veth", "--race", &requests.to_string()])
        .output()
        .context("starting sriov-e2e --race under unshare")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        println!("chaos| {line}");
    }
    match stdout
        .lines()
        .find_map(|l| l.strip_prefix("PASS chaos-racing: "))
    {
        Some(line) if out.status.success() => Ok(line.to_string()),
        _ => bail!(
            "the 16-VF race failed (exit {}); forwarder log: {}",
            out.status,
            work.join("race/forwarder.log").display()
        ),
    }
}

/// `cargo xtask chaos [--rounds N] [--vm-rounds N]`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    const USAGE: &str = "usage: cargo xtask chaos [--rounds N] [--vm-rounds N]";
    let mut rounds = FULL_ROUNDS;
    let mut vm_rounds = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut number = |flag: &str| -> Result<usize> {
            it.next()
                .with_context(|| format!("{flag} needs a number; {USAGE}"))?
                .parse()
                .with_context(|| format!("{flag} takes a whole number"))
        };
        match a.as_str() {
            "--rounds" => rounds = number("--rounds")?,
            "--vm-rounds" => vm_rounds = Some(number("--vm-rounds")?),
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if !is_root() {
        bail!("the campaign needs root: pid, network and mount namespaces, mknod");
    }
    // A short host campaign is a quick check; the full one is the table and
    // ends on real VFs unless told otherwise.
    let vm_rounds = vm_rounds.unwrap_or(if rounds >= 10 { FULL_VM_ROUNDS } else { 0 });
    if rounds > 0 {
        let line = campaign(rounds)?;
        println!("chaos: {line}");
    }
    if vm_rounds > 0 {
        let lines = crate::vm::chaos_campaign(vm_rounds)?;
        for l in &lines {
            println!("chaos-vm| {l}");
        }
        let closing = lines
            .iter()
            .find_map(|l| l.strip_prefix("PASS chaos: "))
            .context("the campaign on real VFs printed no closing line")?;
        println!("chaos on real igb VFs, {vm_rounds} rounds: {closing}");
    }
    Ok(())
}

/// The short campaign of `cargo xtask test`.
pub(crate) fn suite_outcome() -> Outcome {
    if !is_root() {
        return Outcome::Skipped(
            "not root: the campaign needs pid, network and mount namespaces".into(),
        );
    }
    match campaign(CI_ROUNDS) {
        Ok(line) => Outcome::Passed(format!("{CI_ROUNDS} rounds: {line}")),
        Err(e) => Outcome::Failed(format!("{e:#}")),
    }
}
