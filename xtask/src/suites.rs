//! `cargo xtask test` and `cargo xtask lint`: the suites CI runs, in order.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::report::{Outcome, Report};

/// Features the test builds turn on: the forwarder's fake kernel, so the
/// real binary runs on fixture trees (`bins/forwarder-sriov/Cargo.toml`).
/// Release builds never carry it (`tests/production_build.rs` there).
pub(crate) const TEST_FEATURES: &str = "forwarder-sriov/testing";
/// [`TEST_FEATURES`] plus the device plugin's (fixture trees driven by the fake kernel in DRA
/// mode), for the commands that take the whole workspace.
pub(crate) const WORKSPACE_TEST_FEATURES: &str =
    "forwarder-sriov/testing,sriov-device-plugin/testing";

/// Installs what the suites need (`setup.rs`), runs every suite, prints the
/// summary, and fails if any suite failed.
///
/// `--no-vm` leaves out the QEMU suite (it is still reported, as skipped);
/// `--no-install` only reports what setup would install.
pub(crate) fn test(args: &[String]) -> Result<()> {
    for a in args {
        if a != "--no-vm" && a != "--no-install" {
            bail!("unknown argument {a:?}; usage: cargo xtask test [--no-vm] [--no-install]");
        }
    }
    let no_vm = args.iter().any(|a| a == "--no-vm");
    crate::setup::prepare(!args.iter().any(|a| a == "--no-install"));
    let mut report = Report::default();
    lint_into(&mut report);
    let test_outcome = cargo_test(
        &mut report,
        &[
            "test",
            "--workspace",
            "--all-targets",
            "--features",
            WORKSPACE_TEST_FEATURES,
        ],
    );
    report.record("cargo-test", test_outcome);
    let doc_outcome = cargo_test(
        &mut report,
        &[
            "test",
            "--workspace",
            "--doc",
            "--features",
            WORKSPACE_TEST_FEATURES,
        ],
    );
    report.record("doc-tests", doc_outcome);
    report.record("publish", crate::publish::suite_outcome());
    report.record("grpc-interop", crate::interop::outcome());
    report.record("fuzz", crate::fuzz::suite_outcome());
    report.record("kernel", kernel_suite_outcome());
    report.record("chaos", crate::chaos::suite_outcome());
    report.record("deploy", crate::deploy::suite_outcome());
    if no_vm {
        report.record("vm-test", Outcome::Skipped("--no-vm given".into()));
    } else {
        report.record("vm-test", crate::vm::suite_outcome());
    }
    report.print_summary();
    if report.failed() {
        bail!("one or more suites failed");
    }
    Ok(())
}

/// fmt, clippy and the dependency policy.
pub(crate) fn lint() -> Result<()> {
    let mut report = Report::default();
    lint_into(&mut report);
    report.print_summary();
    if report.failed() {
        bail!("lint failed");
    }
    Ok(())
}

fn lint_into(report: &mut Report) {
    report.record("fmt", status(cargo(&["fmt", "--all", "--check"])));
    // Twice: as the tests build it, and as a release builds the binaries
    // (without the test features, whose absence has code paths of its own).
    let clippy = |extra: &[&str]| {
        let mut args = vec!["clippy", "--workspace", "--all-targets"];
        args.extend(extra);
        args.extend(["--", "-D", "warnings"]);
        status(cargo(&args))
    };
    let outcome = match clippy(&["--features", WORKSPACE_TEST_FEATURES]) {
        Outcome::Passed(_) => clippy(&[]),
        failed => failed,
    };
    report.record("clippy", outcome);
    // Broken intra-doc links and malformed docs fail like clippy warnings.
    let mut doc = cargo(&["doc", "--workspace", "--no-deps", "--quiet"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    report.record("rustdoc", status(doc));
    let deny_present = Command::new("cargo")
        .args(["deny", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if deny_present {
        // advisories need the RustSec database from the network; CI is offline
        // apart from package registries, so only the offline checks run here.
        report.record(
            "cargo-deny",
            status(cargo(&["deny", "check", "licenses", "bans", "sources"])),
        );
    } else {
        report.record(
            "cargo-deny",
            Outcome::Skipped(
                "cargo-deny is not installed (cargo xtask test installs it unless --no-install)"
                    .into(),
            ),
        );
    }
}

/// The netlink and forwarder tests that need CAP_NET_ADMIN run inside the
/// cargo-test suite; they print their own skip reason when not permitted.
/// This row says which case applied so the summary shows it.
fn kernel_suite_outcome() -> Outcome {
    if is_root() {
        Outcome::Passed("namespace tests ran as root inside cargo-test".into())
    } else {
        Outcome::Skipped(
            "not root: tests needing CAP_NET_ADMIN printed SKIP and asserted nothing".into(),
        )
    }
}

pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

pub(crate) fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(args);
    c
}

fn status(mut cmd: Command) -> Outcome {
    match cmd.status() {
        Ok(s) if s.success() => Outcome::Passed(String::new()),
        Ok(s) => Outcome::Failed(format!("{cmd:?} exited with {s}")),
        Err(e) => Outcome::Failed(format!("could not run {cmd:?}: {e}")),
    }
}

/// Runs a cargo test command, echoing its output and counting results.
fn cargo_test(report: &mut Report, args: &[&str]) -> Outcome {
    match run_counting(report, cargo(args)) {
        Ok(true) => Outcome::Passed(String::new()),
        Ok(false) => Outcome::Failed(format!("cargo {}", args.join(" "))),
        Err(e) => Outcome::Failed(format!("{e:#}")),
    }
}

fn run_counting(report: &mut Report, mut cmd: Command) -> Result<bool> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        report.count_line(&line);
    }
    Ok(child.wait()?.success())
}
