//! `cargo xtask fuzz [--time S] [TARGET...]`: runs the cargo-fuzz targets in
//! `fuzz/` for S seconds each (default 60) from the seed corpora in
//! `testdata/fuzz/<target>/`, and prints executions, corpus size and
//! crashes per target. CI runs every target briefly (`suite_outcome`).
//!
//! The build uses the stable toolchain with `RUSTC_BOOTSTRAP=1` and
//! `--sanitizer none` (coverage-guided libFuzzer, no ASan): our code has
//! no `unsafe` parsing, panics and failed assertions are what we hunt,
//! and no nightly toolchain is needed on a fresh machine. Seeds are copied
//! into a scratch corpus under `target/fuzz/`, so runs never write into
//! `testdata/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::report::Outcome;

/// Each target and what it feeds.
pub(crate) const TARGETS: &[(&str, &str)] = &[
    (
        "urls",
        "netns URLs, NSM socket URLs, PCI addresses, sysfs values",
    ),
    (
        "request",
        "Request protobuf decoding, size limits, KERNEL/VFIO parameters, IP context plan",
    ),
    ("sriov_config", "the forwarder's SR-IOV YAML config"),
    (
        "srdp_config",
        "the device plugin's JSON resourceList, selectors, pfNames # ranges",
    ),
    ("state_file", "the pool's state file and journal"),
    (
        "authority",
        "the HTTP/2 :authority rewriter, input cut into arbitrary reads",
    ),
    (
        "tokens",
        "NSM path tokens (JWT): decoding and ES256 verification",
    ),
    (
        "uevent",
        "kernel uevent datagrams (NETLINK_KOBJECT_UEVENT) read for device health",
    ),
    (
        "dra_claim",
        "ResourceClaims and their opaque VfConfig parameters, read by DRA mode's Prepare",
    ),
];

/// Seconds per target in CI.
const CI_SECONDS: u64 = 15;

/// What one run found.
#[derive(Debug)]
struct Figures {
    target: &'static str,
    execs: u64,
    corpus: usize,
    crash: Option<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn fuzz_command(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("fuzz")
        .current_dir(root.join("fuzz"))
        .env("RUSTC_BOOTSTRAP", "1");
    cmd
}

fn build(root: &Path) -> Result<()> {
    let ok = fuzz_command(root)
        .args(["build", "--sanitizer", "none", "-O"])
        .status()
        .context("running cargo fuzz build")?
        .success();
    if !ok {
        bail!("cargo fuzz build failed");
    }
    Ok(())
}

fn copy_seeds(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| to.display().to_string())?;
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(e.path(), to.join(e.file_name()))
                .with_context(|| e.path().display().to_string())?;
        }
    }
    Ok(())
}

/// The number after `name:` in libFuzzer's final stats.
fn stat(stderr: &str, name: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.trim_start_matches(':').trim().parse().ok())
    })
}

fn run_target(root: &Path, target: &'static str, seconds: u64) -> Result<Figures> {
    let scratch = root.join("target/fuzz/corpus").join(target);
    let artifacts = root.join("target/fuzz/artifacts").join(target);
    copy_seeds(&root.join("testdata/fuzz").join(target), &scratch)?;
    std::fs::create_dir_all(&artifacts)?;
    let out = fuzz_command(root)
        .args(["run", "--sanitizer", "none", "-O", target])
        .arg(&scratch)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running fuzz target {target}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let corpus = std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0);
    let crash = (!out.status.success()).then(|| {
        stderr
            .lines()
            .find_map(|l| {
                l.split_once("Test unit written to ")
                    .map(|(_, p)| p.trim().to_string())
            })
            .unwrap_or_else(|| {
                let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            })
    });
    Ok(Figures {
        target,
        execs: stat(&stderr, "stat::number_of_executed_units").unwrap_or(0),
        corpus,
        crash,
    })
}

fn run_all(targets: &[&'static str], seconds: u64) -> Result<Vec<Figures>> {
    let root = root();
    crate::setup::ensure_cargo_tool("fuzz", "cargo-fuzz")?;
    build(&root)?;
    let mut all = Vec::new();
    for t in targets {
        let f = run_target(&root, t, seconds)?;
        println!(
            "fuzz {:<13} {:>6} s {:>12} execs {:>6} corpus  {}",
            f.target,
            seconds,
            f.execs,
            f.corpus,
            match &f.crash {
                Some(c) => format!("CRASH {c}"),
                None => "no crash".into(),
            }
        );
        all.push(f);
    }
    Ok(all)
}

fn chosen(names: &[String]) -> Result<Vec<&'static str>> {
    if names.is_empty() {
        return Ok(TARGETS.iter().map(|(t, _)| *t).collect());
    }
    names
        .iter()
        .map(|n| {
            TARGETS
                .iter()
                .find(|(t, _)| t == n)
                .map(|(t, _)| *t)
                .ok_or_else(|| {
                    let known: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
                    anyhow::anyhow!("unknown fuzz target {n:?}; targets: {}", known.join(", "))
                })
        })
        .collect()
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut seconds = 60;
    let mut names = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => {
                seconds = it
                    .next()
                    .context("--time needs seconds")?
                    .parse()
                    .context("--time takes whole seconds")?;
            }
            "--list" => {
                for (t, what) in TARGETS {
                    println!("{t:<13} {what}");
                }
                return Ok(());
            }
            other => names.push(other.to_string()),
        }
    }
    let figures = run_all(&chosen(&names)?, seconds)?;
    let crashed: Vec<&Figures> = figures.iter().filter(|f| f.crash.is_some()).collect();
    if !crashed.is_empty() {
        bail!(
            "{} target(s) crashed: {}",
            crashed.len(),
            crashed
                .iter()
                .map(|f| f.target)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// The CI suite: every target for a short, bounded time.
pub(crate) fn suite_outcome() -> Outcome {
    let targets: Vec<&'static str> = TARGETS.iter().map(|(t, _)| *t).collect();
    match run_all(&targets, CI_SECONDS) {
        Err(e) => Outcome::Failed(format!("{e:#}")),
        Ok(figures) => {
            let summary: Vec<String> = figures
                .iter()
                .map(|f| format!("{} {} execs", f.target, f.execs))
                .collect();
            match figures.iter().find(|f| f.crash.is_some()) {
                Some(f) => Outcome::Failed(format!(
                    "{} crashed: {}",
                    f.target,
                    f.crash.as_deref().unwrap_or_default()
                )),
                None => Outcome::Passed(format!(
                    "{CI_SECONDS} s each, no crash: {}",
                    summary.join(", ")
                )),
            }
        }
    }
}
