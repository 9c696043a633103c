#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The forwarder's DaemonSet (`deploy/base/forwarder-sriov`) against the
//! binary: every `NSM_*` variable is set to the binary's default unless it is
//! one of the few pod-specific values listed here with the reason, every
//! path the settings point at is mounted, nothing else is mounted but the
//! SPIFFE socket, and the probes ask the metrics endpoint the forwarder serves.
//! The manifest and the code cannot drift apart without this failing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;
use sriov_config::{EnvConfig, SriovConfig, VARIABLES};

/// What a pod-specific variable must be in the manifest.
#[derive(Debug)]
enum Expected {
    /// Not set at all, so the binary's default applies.
    Absent,
    /// A literal value different from the default.
    Value(&'static str),
    /// Taken from the pod by the downward API.
    FieldRef(&'static str),
}

/// The deliberate differences from the binary's defaults, each with its
/// reason (the manifest's comments say the same to its reader).
const POD_SPECIFIC: &[(&str, Expected, &str)] = &[
    (
        "NSM_NAME",
        Expected::FieldRef("metadata.name"),
        "NSE names are cluster-wide; one forwarder per node needs one name per pod",
    ),
    (
        "NSM_NS_NAME",
        Expected::Absent,
        "the other spelling of NSM_NSNAME: setting both, even to \"\", is refused",
    ),
    (
        "NSM_LISTEN_ON",
        Expected::Value("unix:///var/lib/networkservicemesh/forwarder-sriov.listen.on.sock"),
        "nsmgr dials the registered URL from its own pod: the socket must be on the shared hostPath",
    ),
    (
        "NSM_SRIOV_CONFIG_FILE",
        Expected::Value("/etc/nsm/sriov/config.yaml"),
        "the default is relative to the working directory; the ConfigMap is mounted here",
    ),
    (
        "NSM_METRICS_LISTEN",
        Expected::Value("127.0.0.1:9465"),
        "off in the binary; the probes ask /livez and /readyz on the node's loopback",
    ),
    (
        "SPIFFE_ENDPOINT_SOCKET",
        Expected::Value("unix:///run/spire/sockets/agent.sock"),
        "secure mode needs the SPIRE agent's Workload API, mounted from the node",
    ),
];

/// An env entry as the manifest has it.
#[derive(Debug)]
enum Env {
    Value(String),
    FieldRef(String),
}

impl Expected {
    fn matches(&self, got: Option<&Env>) -> bool {
        match (self, got) {
            (Expected::Absent, None) => true,
            (Expected::Value(want), Some(Env::Value(v))) => want == v,
            (Expected::FieldRef(want), Some(Env::FieldRef(f))) => want == f,
            _ => false,
        }
    }
}

/// The one mount no setting points at: ready for SPIFFE mTLS.
const SPIFFE_SOCKET_DIR: &str = "/run/spire/sockets";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn base_dir() -> PathBuf {
    workspace().join("deploy/base/forwarder-sriov")
}

fn yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The DaemonSet's pod spec and its forwarder container.
struct Manifest {
    pod: Value,
    container: Value,
}

impl Manifest {
    fn load() -> Self {
        let ds = yaml(&base_dir().join("daemonset.yaml"));
        assert_eq!(ds["kind"].as_str(), Some("DaemonSet"));
        let pod = ds["spec"]["template"]["spec"].clone();
        let container = pod["containers"]
            .as_sequence()
            .expect("containers")
            .iter()
            .find(|c| c["name"].as_str() == Some("forwarder-sriov"))
            .expect("a container named forwarder-sriov")
            .clone();
        Self { pod, container }
    }

    /// Every env entry: name to a literal value or a field reference.
    fn env(&self) -> BTreeMap<String, Env> {
        let mut out = BTreeMap::new();
        for e in self.container["env"].as_sequence().expect("env") {
            let name = e["name"].as_str().expect("env name").to_string();
            let got = if let Some(v) = e.get("value") {
                let v = v.as_str();
                Env::Value(
                    v.unwrap_or_else(|| panic!("{name}: value must be a string"))
                        .into(),
                )
            } else {
                let path = e["valueFrom"]["fieldRef"]["fieldPath"].as_str();
                Env::FieldRef(
                    path.unwrap_or_else(|| panic!("{name}: neither value nor fieldRef"))
                        .into(),
                )
            };
            assert!(
                out.insert(name.clone(), got).is_none(),
                "{name} is set twice"
            );
        }
        out
    }

    /// The values the binary would see in the pod (`fieldRef`s filled in
    /// with a pod-like name).
    fn effective_env(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(k, v)| match v {
                Env::Value(s) => (k, s),
                Env::FieldRef(_) => (k, "forwarder-sriov-x7k2p".to_string()),
            })
            .collect()
    }

    /// `(mountPath, volume)` of every mount.
    fn mounts(&self) -> Vec<(String, Value)> {
        let volumes = self.pod["volumes"].as_sequence().expect("volumes");
        self.container["volumeMounts"]
            .as_sequence()
            .expect("volumeMounts")
            .iter()
            .map(|m| {
                let name = m["name"].as_str().unwrap();
                let volume = volumes
                    .iter()
                    .find(|v| v["name"].as_str() == Some(name))
                    .unwrap_or_else(|| panic!("mount {name} has no volume"))
                    .clone();
                (m["mountPath"].as_str().unwrap().to_string(), volume)
            })
            .collect()
    }
}

/// The filesystem path a setting points at: an absolute path, or the
/// directory of a `unix://` socket (the socket itself may not exist yet).
fn pointed_path(value: &str) -> Option<PathBuf> {
    if let Some(socket) = value.strip_prefix("unix://") {
        return Path::new(socket).parent().map(Path::to_path_buf);
    }
    value.starts_with('/').then(|| PathBuf::from(value))
}

/// The mount `path` lives under, longest mount path first.
fn mount_of<'a>(mounts: &'a [(String, Value)], path: &Path) -> Option<&'a (String, Value)> {
    mounts
        .iter()
        .filter(|(m, _)| path.starts_with(m))
        .max_by_key(|(m, _)| m.len())
}

#[test]
fn every_nsm_variable_is_set_to_the_binarys_default_unless_pod_specific() {
    let env = Manifest::load().env();
    let mut wrong = Vec::new();
    for var in VARIABLES {
        let default = Expected::Value(var.default);
        let want = POD_SPECIFIC
            .iter()
            .find(|(n, _, _)| *n == var.name)
            .map_or(&default, |(_, want, _)| want);
        let got = env.get(var.name);
        if !want.matches(got) {
            wrong.push(format!(
                "{}: manifest has {got:?}, expected {want:?}",
                var.name
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn pod_specific_values_are_real_variables_that_differ_from_their_defaults() {
    for (name, want, reason) in POD_SPECIFIC {
        assert!(!reason.is_empty());
        let var = VARIABLES
            .iter()
            .find(|v| v.name == *name)
            .unwrap_or_else(|| panic!("{name} is not a variable the binary reads"));
        if let Expected::Value(v) = want {
            assert_ne!(
                *v, var.default,
                "{name} equals its default: drop it from the list"
            );
        }
    }
}

#[test]
fn the_manifest_sets_no_nsm_variable_the_binary_does_not_read() {
    for name in Manifest::load().env().keys() {
        if name.starts_with("NSM_") {
            assert!(
                VARIABLES.iter().any(|v| v.name == name),
                "{name} is not read by the binary (it would only log a warning)"
            );
        }
    }
}

#[test]
fn the_manifest_environment_parses_without_warnings() {
    let loaded = EnvConfig::from_vars(Manifest::load().effective_env())
        .expect("the manifest's environment is valid");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert!(
        !loaded.config.insecure,
        "the shipped manifest runs in secure mode"
    );
    assert!(loaded.config.spiffe_endpoint_socket.is_some());
}

#[test]
fn every_path_the_settings_point_at_is_mounted() {
    let m = Manifest::load();
    let mounts = m.mounts();
    let mut missing = Vec::new();
    for (name, value) in m.effective_env() {
        let Some(path) = pointed_path(&value) else {
            continue;
        };
        if mount_of(&mounts, &path).is_none() {
            missing.push(format!("{name}={value}: {} is not mounted", path.display()));
        }
    }
    assert!(missing.is_empty(), "\n{}", missing.join("\n"));
}

#[test]
fn sockets_and_state_live_on_the_host_and_the_config_on_its_configmap() {
    let m = Manifest::load();
    let mounts = m.mounts();
    let env: BTreeMap<_, _> = m.effective_env().into_iter().collect();
    // nsmgr must reach both sockets from its own pod, and the pool's
    // crash-safe state must outlive the container.
    for name in ["NSM_CONNECT_TO", "NSM_LISTEN_ON", "NSM_STATE_DIR"] {
        let path = pointed_path(&env[name]).unwrap();
        let (_, volume) = mount_of(&mounts, &path).unwrap();
        assert_eq!(
            volume["hostPath"]["path"].as_str(),
            Some("/var/lib/networkservicemesh"),
            "{name} must be on the hostPath nsmgr shares"
        );
    }
    let config = PathBuf::from(&env["NSM_SRIOV_CONFIG_FILE"]);
    let (mount_path, volume) = mount_of(&mounts, &config).unwrap();
    assert_eq!(
        volume["configMap"]["name"].as_str(),
        Some("forwarder-sriov-config")
    );
    // The generator must produce the key the variable names.
    let key = config.strip_prefix(mount_path).unwrap().to_str().unwrap();
    let kustomization = yaml(&base_dir().join("kustomization.yaml"));
    let generator = kustomization["configMapGenerator"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|g| g["name"].as_str() == Some("forwarder-sriov-config"))
        .expect("a generator for forwarder-sriov-config");
    let files: Vec<&str> = generator["files"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        files.iter().any(|f| f.split('=').next() == Some(key)),
        "no ConfigMap key {key} in {files:?}"
    );
}

#[test]
fn nothing_is_mounted_that_no_setting_needs_but_the_spiffe_socket() {
    let m = Manifest::load();
    let paths: Vec<PathBuf> = m
        .effective_env()
        .iter()
        .filter_map(|(_, v)| pointed_path(v))
        .collect();
    for (mount_path, _) in m.mounts() {
        if mount_path == SPIFFE_SOCKET_DIR {
            continue;
        }
        assert!(
            paths.iter().any(|p| p.starts_with(&mount_path)),
            "{mount_path} is mounted but no NSM_* setting points into it"
        );
    }
    assert!(
        m.mounts().iter().any(|(p, _)| p == SPIFFE_SOCKET_DIR),
        "the SPIFFE socket dir should be mounted for mTLS"
    );
}

#[test]
fn probes_ask_the_metrics_endpoint_the_forwarder_serves() {
    let m = Manifest::load();
    let env: BTreeMap<_, _> = m.effective_env().into_iter().collect();
    let listen: std::net::SocketAddr = env["NSM_METRICS_LISTEN"].parse().unwrap();
    assert!(
        listen.ip().is_loopback(),
        "{listen}: the pod shares the node's network; keep it on loopback"
    );
    for (probe, path) in [
        ("startupProbe", "/livez"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/livez"),
    ] {
        let get = &m.container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}: {get:?}");
        // hostNetwork: kubelet reaches the node's loopback, where it listens.
        assert_eq!(
            get["host"].as_str(),
            Some(listen.ip().to_string().as_str()),
            "{probe}: {get:?}"
        );
        assert_eq!(
            get["port"].as_u64(),
            Some(u64::from(listen.port())),
            "{probe}: {get:?}"
        );
    }
}

/// VFs leave and re-enter the host's network namespace; clients'
/// namespaces arrive as fds over the socket (grpcfd), so the node's
/// processes need not be visible (issue #15: no hostPID).
#[test]
fn the_pod_shares_the_hosts_network_not_its_pids_privileged() {
    let m = Manifest::load();
    assert_eq!(m.pod["hostNetwork"].as_bool(), Some(true));
    assert_eq!(m.pod["hostPID"].as_bool(), None);
    assert_eq!(
        m.container["securityContext"]["privileged"].as_bool(),
        Some(true)
    );
}

/// The base names the image of this very version; overlays pin registries.
#[test]
fn the_image_tag_is_the_crate_version() {
    let image = Manifest::load().container["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        image,
        format!("nsm-sriov-rs/forwarder-sriov:{}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn shipped_sriov_configs_parse() {
    for file in [
        base_dir().join("sriov-config.yaml"),
        workspace().join("deploy/overlays/example/sriov-config.yaml"),
    ] {
        let loaded = SriovConfig::load(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            loaded.warnings.is_empty(),
            "{}: {:?}",
            file.display(),
            loaded.warnings
        );
    }
}

/// The binary's own `check-config`, with the manifest's environment, on a
/// private copy of the node fixture whose first X710 port is the PF the base
/// config names: the shipped config serves VFs on a node of that shape.
#[test]
fn check_config_accepts_the_manifest_on_a_node_like_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    sriov_pci_fake::copy_tree(&sriov_pci_fake::testdata_sysfs().join("node"), dir.path()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forwarder-sriov"));
    cmd.arg("check-config").env_clear();
    for (k, v) in Manifest::load().effective_env() {
        cmd.env(k, v);
    }
    cmd.env("NSM_PCI_DEVICES_PATH", dir.path().join("bus/pci/devices"))
        .env("NSM_PCI_DRIVERS_PATH", dir.path().join("bus/pci/drivers"))
        .env(
            "NSM_SRIOV_CONFIG_FILE",
            base_dir().join("sriov-config.yaml"),
        );
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("worker.domain/10G"), "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");
}
