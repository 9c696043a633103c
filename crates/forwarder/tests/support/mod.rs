//! What the forwarder's integration tests share: the environment of a forwarder whose every
//! path lies under one temp dir, beside a fake kubelet and a fake NSM manager.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

/// The one-PF config the health tests serve (`worker.domain/10G` on the fixture's X710 port 0).
pub(crate) const ONE_PF: &str = "physicalFunctions:
  0000:3b:00.0:
    pfKernelDriver: i40e
    vfKernelDriver: iavf
    capabilities: [10G]
    serviceDomains: [worker.domain]
";

/// The environment of a plaintext forwarder named `name` under `root`, reading its config at
/// `root/<config>` and setting `extra` besides; makes the cgroup and /dev/vfio stand-ins.
pub(crate) fn env(
    root: &Path,
    name: &str,
    config: &str,
    extra: &[(&str, &str)],
) -> sriov_config::EnvConfig {
    std::fs::create_dir_all(root.join("cgroup")).unwrap();
    std::fs::create_dir_all(root.join("vfio")).unwrap();
    let at = |p: &str| root.join(p).display().to_string();
    let mut vars = vec![
        ("NSM_NAME", name.to_string()),
        ("NSM_INSECURE", "true".to_string()),
        ("NSM_CONNECT_TO", format!("unix://{}", at("nsm.sock"))),
        ("NSM_LISTEN_ON", format!("unix://{}", at("listen.on.sock"))),
        ("NSM_DEVICE_PLUGIN_PATH", at("device-plugins")),
        ("NSM_POD_RESOURCES_PATH", at("pod-resources")),
        ("NSM_SRIOV_CONFIG_FILE", at(config)),
        ("NSM_STATE_DIR", at("state")),
        ("NSM_CGROUP_PATH", at("cgroup")),
        ("NSM_VFIO_PATH", at("vfio")),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    sriov_config::EnvConfig::from_vars(vars).unwrap().config
}
