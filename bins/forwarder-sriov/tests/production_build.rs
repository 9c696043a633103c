//! The release binaries carry no test support: no fake kernel, fake NSM
//! manager, fake kubelet, mocks or crash points. Checked on the dependency
//! graph cargo resolves for each binary built alone, as the image builds it
//! (`cargo build --release -p <binary>`), with its default features.
#![allow(clippy::expect_used)]

use std::process::Command;

/// Crates and features that exist only for tests, the demo and the chaos
/// campaign.
const TEST_ONLY: &[&str] = &[
    "sriov-pci-fake",
    "mockall",
    "feature \"testing\"",
    "feature \"fake\"",
    "feature \"failpoints\"",
];

/// What `cargo build -p <package> [--features ..]` would compile, crates and
/// features, one per line.
fn graph(package: &str, features: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["tree", "--offline", "-e", "normal,features"])
        .args(["--prefix", "none", "-p", package]);
    for f in features {
        cmd.args(["--features", f]);
    }
    let out = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn release_binaries_carry_no_test_support() {
    for package in ["forwarder-sriov", "sriov-device-plugin"] {
        let graph = graph(package, &[]);
        assert!(
            graph.contains("sriov-pci v"),
            "{package}: the graph looks empty:\n{graph}"
        );
        for line in graph.lines() {
            for bad in TEST_ONLY {
                assert!(
                    !line.contains(bad),
                    "{package}'s production build pulls in {bad}: {line}"
                );
            }
        }
    }
}

#[test]
fn the_test_build_does_carry_it() {
    // So the check above can fail: the same query with the `testing`
    // feature finds the fake kernel.
    assert!(graph("forwarder-sriov", &["testing"]).contains("sriov-pci-fake"));
}
