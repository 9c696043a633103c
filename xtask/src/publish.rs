//! The `publish` suite of `cargo xtask test`: the crates other Rust NSM
//! components reuse (issue #20) still package and build as crates.io would
//! take them.
//!
//! `cargo publish --workspace --dry-run` with the three packages packages
//! each, then builds each from its `.crate` file alone, the later ones
//! against the earlier ones' packages (a temporary local registry), since
//! none of them is on crates.io yet. It fails when a published crate gains a
//! dependency on a workspace crate that is not published, a path dependency
//! without a version, or a file outside its package; it needs the crates.io
//! index (not the network beyond it) and uploads nothing.

use std::process::Stdio;

use crate::report::Outcome;
use crate::suites::cargo;

/// The published crates, dependencies first.
const CRATES: &[&str] = &[
    "sriov-failpoint",
    "sriov-pci",
    "sriov-pci-fake",
    "sriov-vfio",
];

/// The suite's row for `cargo xtask test`.
pub(crate) fn suite_outcome() -> Outcome {
    // --allow-dirty: a developer's uncommitted work is packaged as it is;
    // CI's clone is clean anyway.
    let mut args = vec!["publish", "--workspace", "--dry-run", "--allow-dirty"];
    for name in CRATES {
        args.extend(["-p", name]);
    }
    let mut cmd = cargo(&args);
    let out = match cmd.stdout(Stdio::inherit()).output() {
        Ok(out) => out,
        Err(e) => return Outcome::Failed(format!("could not run {cmd:?}: {e}")),
    };
    let log = String::from_utf8_lossy(&out.stderr);
    eprint!("{log}");
    if out.status.success() {
        Outcome::Passed(summary(&log))
    } else {
        let errors: Vec<&str> = log
            .lines()
            .skip_while(|l| !l.starts_with("error"))
            .take(6)
            .collect();
        Outcome::Failed(format!(
            "cargo {} exited with {}: {}",
            args.join(" "),
            out.status,
            errors.join(" / ")
        ))
    }
}

/// `sriov-pci 15 files, sriov-pci-fake 13 files, ...` from cargo's
/// `Packaging <name> v<version>` and `Packaged <n> files, ...` lines.
fn summary(log: &str) -> String {
    let mut packaged = Vec::new();
    let mut current = None;
    for line in log.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Packaging ") {
            current = rest.split_whitespace().next();
        } else if let Some(rest) = line.strip_prefix("Packaged ") {
            let files = rest.split(',').next().unwrap_or(rest);
            packaged.push(format!("{} {files}", current.take().unwrap_or("?")));
        }
    }
    format!(
        "dry run: {} packaged and built from their .crate files, uploads skipped",
        packaged.join(", ")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_summary_names_each_package_and_its_file_count() {
        let log = "    Updating crates.io index
   Packaging sriov-pci v0.1.0 (/w/crates/pci)
warning: ignoring example `list_vfs` as `examples/list_vfs.rs` is not included in the published package
    Packaged 15 files, 63.2KiB (18.8KiB compressed)
   Packaging sriov-vfio v0.1.0 (/w/crates/vfio)
    Packaged 15 files, 91.1KiB (24.7KiB compressed)
   Verifying sriov-pci v0.1.0 (/w/crates/pci)
";
        assert_eq!(
            super::summary(log),
            "dry run: sriov-pci 15 files, sriov-vfio 15 files packaged and built \
             from their .crate files, uploads skipped"
        );
    }
}
