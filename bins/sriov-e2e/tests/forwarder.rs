#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The real `forwarder-sriov` binary end to end on a private copy of the
//! node fixture, with veth stand-ins for VF netdevs in a private network
//! namespace: kubelet registration, Allocate, NSE registration, KERNEL and
//! VFIO Requests and Closes, graceful shutdown. Needs root (namespaces,
//! mknod); prints SKIP otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `forwarder-sriov` next to this test's own build output.
fn forwarder_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("forwarder-sriov");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace's binaries first (cargo test --workspace does)",
        bin.display()
    );
    bin
}

#[test]
fn forwarder_serves_kernel_and_vfio_end_to_end_on_the_fixture() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIP forwarder_serves_kernel_and_vfio_end_to_end_on_the_fixture: needs root for network namespaces and mknod"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sysfs = tmp.path().join("sysfs");
    sriov_pci_fake::copy_tree(&workspace().join("testdata/sysfs/node"), &sysfs).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sriov-e2e"))
        .arg("--forwarder")
        .arg(forwarder_bin())
        .arg("--sysfs-root")
        .arg(&sysfs)
        .arg("--config")
        .arg(workspace().join("testdata/config/demo.yaml"))
        .arg("--work")
        .arg(tmp.path().join("work"))
        .args(["--veth", "--vfio", "--restart"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(tmp.path().join("work/forwarder.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{stdout}\n--- forwarder log ---\n{log}"
    );
    for check in [
        "PASS device-plugin-registered",
        "PASS list-and-watch: 4 healthy VFs advertised",
        "PASS allocate",
        "PASS nse-registered: sriov-forwarder for [\"forwarder\"]",
        "PASS registry-path-header",
        "PASS nsmgr-selects-forwarder: sriov-forwarder at unix://",
        "PASS kernel-request",
        "PASS vf-in-client-namespace: nsm-1 UP mtu 1400 172.16.1.2/30",
        "PASS close-disables-at-answer",
        "PASS close-returns-vf",
        "PASS vfio-request",
        "PASS vfio-device-node",
        "PASS vfio-close-restores-driver",
        "PASS restart-close-undoes",
        "PASS restart-vf-reusable",
        "PASS restart-expiry-undoes",
        "PASS restart-vfio-close-undoes",
        "PASS restart-pod-gone-undoes",
        "PASS restart-retry-takes-over",
        "PASS log-level-SIGUSR1",
        "PASS log-level-SIGUSR2",
        "PASS graceful-shutdown",
        "PASS nse-unregistered",
    ] {
        assert!(stdout.contains(check), "missing {check:?} in\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // Issue #15: the default run is secure. The forwarder got its SVID
    // from the Workload API stand-in, loaded the policies, registered over
    // mTLS with its socket sent by fd, and took the client's namespace by
    // fd (the registry path header carries signed tokens).
    assert!(stdout.contains("secure mode: SPIRE stand-in"), "{stdout}");
    for line in [
        "SVID received",
        "policies loaded",
        "ready: NSE and device plugins registered",
    ] {
        assert!(
            log.contains(line),
            "missing {line:?} in the forwarder log\n{log}"
        );
    }
    assert!(!log.contains("NSM_INSECURE=true"), "{log}");
}

/// Issue 13's hostile tenant, through the real daemon: inside `unshare
/// --pid --net --mount --fork --mount-proc`, so "PID 1" and "the host"
/// are this test's own and nothing of the machine's is at stake.
#[test]
fn hostile_requests_are_refused_and_change_nothing() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIP hostile_requests_are_refused_and_change_nothing: needs root for pid, net and mount namespaces"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sysfs = tmp.path().join("sysfs");
    sriov_pci_fake::copy_tree(&workspace().join("testdata/sysfs/node"), &sysfs).unwrap();
    let out = Command::new("unshare")
        .args(["--pid", "--net", "--mount", "--fork", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_sriov-e2e"))
        .arg("--forwarder")
        .arg(forwarder_bin())
        .arg("--sysfs-root")
        .arg(&sysfs)
        .arg("--config")
        .arg(workspace().join("testdata/config/demo.yaml"))
        .arg("--work")
        .arg(tmp.path().join("work"))
        .args(["--veth", "--vfio", "--hostile"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(tmp.path().join("work/forwarder.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{stdout}\n{}\n--- forwarder log ---\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "PASS hostile-host-netns-file: PermissionDenied",
        "PASS hostile-inode-not-sent-by-fd: PermissionDenied",
        "PASS secure-plaintext-refused",
        "PASS secure-untrusted-svid-refused",
        "PASS secure-unsigned-token-refused: PermissionDenied",
        "PASS secure-expired-token-refused: PermissionDenied",
        "PASS hostile-forwarder-netns: PermissionDenied",
        "PASS hostile-symlinked-netns: InvalidArgument",
        "PASS hostile-refresh-changes-netns: PermissionDenied",
        "PASS hostile-foreign-refresh: PermissionDenied",
        "PASS hostile-foreign-close: PermissionDenied",
        "PASS hostile-victim-untouched",
        "PASS hostile-chosen-segment-id",
        "PASS hostile-monitor-everything: PermissionDenied",
        "PASS hostile-monitor-scoped",
        "PASS hostile-cgroup-ancestor: \"kubepods\"",
        "PASS hostile-cgroup-ancestor: \"kubepods/pod-e2e\"",
        "PASS hostile-oversized-message",
        "PASS hostile-too-many-labels: InvalidArgument",
        "PASS hostile-huge-expires",
        "PASS hostile-nothing-changed",
        "PASS hostile-file-modes",
        "PASS hostile-tokens-not-logged",
        "PASS vfio-request",
        "PASS hostile-corrupt-state-refused",
    ] {
        assert!(stdout.contains(check), "missing {check:?} in\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

/// Issue 17: with `TELEMETRY=true` the real daemon pushes to an OTLP
/// collector (the fake one, on the loopback of the forwarder's namespace):
/// the KERNEL Request carries a `traceparent` the driver chose, and the
/// collector must receive spans of that trace, each descending from the
/// span the driver named, and `sriov.*` metrics.
#[test]
fn forwarder_pushes_the_callers_trace_and_metrics_over_otlp() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIP forwarder_pushes_the_callers_trace_and_metrics_over_otlp: needs root for network namespaces"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sysfs = tmp.path().join("sysfs");
    sriov_pci_fake::copy_tree(&workspace().join("testdata/sysfs/node"), &sysfs).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sriov-e2e"))
        .arg("--forwarder")
        .arg(forwarder_bin())
        .arg("--sysfs-root")
        .arg(&sysfs)
        .arg("--config")
        .arg(workspace().join("testdata/config/demo.yaml"))
        .arg("--work")
        .arg(tmp.path().join("work"))
        .args(["--veth", "--telemetry"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(tmp.path().join("work/forwarder.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{stdout}\n--- forwarder log ---\n{log}"
    );
    for check in [
        "PASS kernel-request",
        "PASS otlp-trace: ",
        "PASS otlp-metrics: ",
        "PASS graceful-shutdown",
    ] {
        assert!(stdout.contains(check), "missing {check:?} in\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(
        log.contains("pushing traces and metrics over OTLP"),
        "{log}"
    );
    // Everything batched was flushed at exit.
    assert!(!log.contains("telemetry not flushed"), "{log}");
}

/// Issue 17: the operator endpoints of the real daemon (`--ops`).
/// `/readyz` is 503 while kubelet is away at start and 200 once the NSE
/// and the resource are registered, `/livez` 200; the Prometheus text
/// parses and counts one Request and one Close exactly; every `sriov_*`
/// family scraped is in the crates' lists (which the dashboard test holds
/// the dashboard to); a one-second CPU profile decodes; `/debug/state` lists the
/// fixture's VFs and the standing connection without its token; kubelet's
/// socket removed turns `/readyz` 503 and gRPC health NOT_SERVING, and
/// back.
#[test]
fn forwarder_serves_metrics_probes_profiles_and_state() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIP forwarder_serves_metrics_probes_profiles_and_state: needs root for network namespaces"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sysfs = tmp.path().join("sysfs");
    sriov_pci_fake::copy_tree(&workspace().join("testdata/sysfs/node"), &sysfs).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sriov-e2e"))
        .arg("--forwarder")
        .arg(forwarder_bin())
        .arg("--sysfs-root")
        .arg(&sysfs)
        .arg("--config")
        .arg(workspace().join("testdata/config/demo.yaml"))
        .arg("--work")
        .arg(tmp.path().join("work"))
        .args(["--veth", "--ops"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(tmp.path().join("work/forwarder.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{stdout}\n--- forwarder log ---\n{log}"
    );
    for check in [
        "PASS readyz-before-registrations: 503 not ready: ",
        "PASS livez: 200 ok",
        "PASS device-plugin-registered",
        "PASS readyz-after-registrations: 200 ready",
        "PASS prometheus-text-parses",
        "PASS kernel-request",
        "PASS pprof-profile",
        "PASS debug-state: 4 VFs of worker.domain/10G",
        "PASS close-returns-vf",
        "PASS metrics-request-counted",
        "PASS metrics-close-counted",
        "PASS metrics-all-listed",
        "PASS readyz-kubelet-gone: 503",
        "PASS readyz-kubelet-back: 200 ready; gRPC SERVING",
        "PASS graceful-shutdown",
    ] {
        assert!(stdout.contains(check), "missing {check:?} in\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // Kubelet is away, whether or not the NSE has registered by then.
    let before = stdout
        .lines()
        .find(|l| l.starts_with("PASS readyz-before-registrations"))
        .unwrap();
    assert!(
        before.contains("kubelet has not registered worker.domain/10G")
            && before.ends_with("gRPC NOT_SERVING"),
        "{before}"
    );
    assert!(log.contains("metrics: /metrics /readyz /livez"), "{log}");
}
