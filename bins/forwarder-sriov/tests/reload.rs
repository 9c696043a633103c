#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The daemon reloads on SIGHUP (sysfs rescanned: VFs created after it
//! started join their resource) and when its config file changes, and
//! refuses an invalid config naming the field, the running one kept.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Only turns a hang into a failure; measures nothing.
const PATIENCE: Duration = Duration::from_secs(60);

const CONFIG: &str = "physicalFunctions:
  0000:3b:00.0:
    pfKernelDriver: i40e
    vfKernelDriver: iavf
    capabilities: [10G]
    serviceDomains: [worker.domain]
";

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(root: &Path, sysfs: &Path) -> Self {
        let at = |p: &str| root.join(p);
        let unix = |p: &str| format!("unix://{}", at(p).display());
        for d in ["config", "cgroup", "vfio", "state"] {
            std::fs::create_dir_all(at(d)).unwrap();
        }
        std::fs::write(at("config/sriov.yaml"), CONFIG).unwrap();
        let log = at("forwarder.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_forwarder-sriov"))
            .env_clear()
            .env("NSM_INSECURE", "true")
            .env("NSM_NAME", "forwarder-reload")
            .env("NSM_CONNECT_TO", unix("nsm.sock"))
            .env("NSM_LISTEN_ON", unix("listen.on.sock"))
            .env("NSM_DEVICE_PLUGIN_PATH", at("device-plugins"))
            .env("NSM_POD_RESOURCES_PATH", at("pod-resources"))
            .env("NSM_SRIOV_CONFIG_FILE", at("config/sriov.yaml"))
            .env("NSM_PCI_DEVICES_PATH", sysfs.join("bus/pci/devices"))
            .env("NSM_PCI_DRIVERS_PATH", sysfs.join("bus/pci/drivers"))
            .env("NSM_STATE_DIR", at("state"))
            .env("NSM_CGROUP_PATH", at("cgroup"))
            .env("NSM_VFIO_PATH", at("vfio"))
            .env("NSM_LOG_LEVEL", "INFO")
            .arg("--log-format=text")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line holding every one of `parts`.
    fn wait_for(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {parts:?} in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[cfg_attr(
    not(feature = "testing"),
    ignore = "runs the daemon on a fixture tree: needs --features testing (cargo xtask test sets it)"
)]
fn sighup_and_config_changes_reload_and_an_invalid_config_is_refused() {
    let sysfs = tempfile::tempdir().unwrap();
    sriov_pci_fake::copy_tree(&sriov_pci_fake::testdata_sysfs().join("node"), sysfs.path())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let daemon = Daemon::start(root, sysfs.path());
    daemon.wait_for(&["device plugin started", "worker.domain/10G"]);
    daemon.wait_for(&["NetworkService serving"]);

    // VFs created behind the daemon's back, then SIGHUP: the file did not
    // change, so only the signal can have reloaded.
    let fake = sriov_pci_fake::FakeSysfs::attach(sysfs.path()).unwrap();
    fake.sysfs()
        .set_num_vfs("0000:3b:00.0".parse().unwrap(), 6)
        .unwrap();
    daemon.signal("HUP");
    let line = daemon.wait_for(&["config reloaded", "worker.domain/10G"]);
    assert!(line.contains("changed"), "{line}");

    // A new resource through the file alone.
    std::fs::write(
        root.join("config/sriov.yaml"),
        CONFIG.replace("[10G]", "[10G, fast]"),
    )
    .unwrap();
    daemon.wait_for(&["device plugin started", "worker.domain/fast"]);

    // An invalid one: refused, naming the field; the plugins stay.
    std::fs::write(
        root.join("config/sriov.yaml"),
        CONFIG.replace("[10G]", "[]"),
    )
    .unwrap();
    let line = daemon.wait_for(&["config reload refused"]);
    assert!(
        line.contains(
            "sriov.yaml:5: physicalFunctions.0000:3b:00.0.capabilities: must not be empty"
        ),
        "{line}"
    );
    assert!(
        !daemon.log().contains("device plugin stopped"),
        "{}",
        daemon.log()
    );

    daemon.signal("TERM");
    let mut daemon = daemon;
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", daemon.log());
}
