//! What the suites need on the machine, installed by `cargo xtask test`
//! itself so that a newcomer's run is CI's run (`.ci/run` only calls it).
//!
//! Each step checks first and installs only what is missing, so running it
//! on every test run costs a few probes. Every step prints one line saying
//! what it found or did; a step that cannot install (no root for apt, no
//! registry) says why, and the suite that needed it reports SKIPPED or
//! FAILED with its own reason: setup itself never stops the run.
//!
//! The shell steps live in `xtask/setup/` (apt and pip are shell's job); the
//! cargo tools are installed from crates.io here.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::suites::is_root;

/// A step and the suite it serves, in the order they run.
const STEPS: &[Step] = &[
    Step::Cargo {
        subcommand: "deny",
        krate: "cargo-deny",
        suite: "cargo-deny",
    },
    Step::Cargo {
        subcommand: "fuzz",
        krate: "cargo-fuzz",
        suite: "fuzz",
    },
    Step::Script {
        name: "qemu",
        suite: "vm-test",
        needs_root: true,
    },
    Step::Script {
        name: "python-grpc",
        suite: "grpc-interop",
        needs_root: false,
    },
    Step::Script {
        name: "deploy-tools",
        suite: "deploy",
        needs_root: false,
    },
];

enum Step {
    /// A cargo subcommand installed with `cargo install --locked`.
    Cargo {
        subcommand: &'static str,
        krate: &'static str,
        suite: &'static str,
    },
    /// `xtask/setup/<name>.sh`: idempotent, checks before it installs.
    Script {
        name: &'static str,
        suite: &'static str,
        needs_root: bool,
    },
}

/// Runs every step; `install: false` (`--no-install`) only reports.
pub(crate) fn prepare(install: bool) {
    for step in STEPS {
        let (name, suite) = match step {
            Step::Cargo { krate, suite, .. } => (*krate, *suite),
            Step::Script { name, suite, .. } => (*name, *suite),
        };
        let line = match run_step(step, install) {
            Ok(done) => done,
            Err(e) => format!("failed: {e:#}; the {suite} suite will say what it lacks"),
        };
        println!("xtask setup: {name} (for {suite}): {line}");
    }
}

fn run_step(step: &Step, install: bool) -> Result<String> {
    match step {
        Step::Cargo {
            subcommand, krate, ..
        } => {
            if !install {
                return Ok(if cargo_has(subcommand) {
                    "present".into()
                } else {
                    "missing (--no-install given)".into()
                });
            }
            Ok(if ensure_cargo_tool(subcommand, krate)? {
                format!("installed with cargo install {krate} --locked")
            } else {
                "present".into()
            })
        }
        Step::Script {
            name, needs_root, ..
        } => {
            if !install {
                return Ok("not run (--no-install given)".into());
            }
            if *needs_root && !is_root() {
                return Ok("not run: installing with apt needs root".into());
            }
            let script = script_path(name);
            let out = Command::new("bash")
                .arg(&script)
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("running {}", script.display()))?;
            let said = String::from_utf8_lossy(&out.stdout);
            let warned = String::from_utf8_lossy(&out.stderr);
            for l in warned.lines().filter(|l| l.starts_with("setup ")) {
                println!("xtask {l}");
            }
            if !out.status.success() {
                bail!(
                    "{} exited with {}: {}",
                    script.display(),
                    out.status,
                    warned.lines().last().unwrap_or_default()
                );
            }
            Ok(said
                .lines()
                .last()
                .map(|l| format!("done ({l})"))
                .unwrap_or_else(|| "done".into()))
        }
    }
}

fn script_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("setup")
        .join(format!("{name}.sh"))
}

fn cargo_has(subcommand: &str) -> bool {
    Command::new("cargo")
        .args([subcommand, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs `cargo <subcommand>` from crates.io (the only registry this kind
/// of machine reaches; no prebuilt binary download) when it is missing;
/// `true` when it had to.
pub(crate) fn ensure_cargo_tool(subcommand: &str, krate: &str) -> Result<bool> {
    if cargo_has(subcommand) {
        return Ok(false);
    }
    println!("xtask setup: installing {krate} (cargo install {krate} --locked)");
    let ok = Command::new("cargo")
        .args(["install", krate, "--locked", "--quiet"])
        .status()
        .with_context(|| format!("running cargo install {krate}"))?
        .success();
    if !ok {
        bail!("cargo install {krate} --locked failed");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_step_has_its_script_and_every_script_a_step() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("setup");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("xtask/setup")
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".sh"))
                    .map(str::to_string)
            })
            .collect();
        on_disk.sort();
        let mut steps: Vec<String> = STEPS
            .iter()
            .filter_map(|s| match s {
                Step::Script { name, .. } => Some(name.to_string()),
                Step::Cargo { .. } => None,
            })
            .collect();
        steps.sort();
        assert_eq!(on_disk, steps);
    }

    #[test]
    fn ci_entry_point_only_runs_the_readme_test_command() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let run = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
        let commands: Vec<&str> = run
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter(|l| {
                !l.starts_with("set ") && !l.starts_with("cd ") && !l.starts_with("export ")
            })
            .collect();
        assert_eq!(commands, ["cargo xtask test"]);
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        let head: String = readme.lines().take(12).collect::<Vec<_>>().join("\n");
        assert!(
            head.contains("cargo xtask test"),
            "the README's first lines give the test command"
        );
        assert!(
            !root.join(".ci/setup.d").exists(),
            "setup belongs to xtask/setup, run by cargo xtask test"
        );
    }
}
