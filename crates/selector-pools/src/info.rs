//! SRDP's info providers: what a container gets for one device (device nodes and the
//! per-device entry of the `_INFO` env), and its device-info file content.

use std::collections::BTreeMap;

use serde::Serialize;
use sriov_deviceplugin::DeviceSpec;

use crate::config::{ResourceConfig, Selectors};
use crate::host::{Host, HostDevice};

/// `/dev/vfio/vfio`, the VFIO container node every vfio-pci device needs.
pub const VFIO_CONTAINER: &str = "/dev/vfio/vfio";
/// The device-info spec version written.
pub const DEVICE_INFO_VERSION: &str = "1.1.0";

/// What a container gets for one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device nodes, in provider order.
    pub specs: Vec<DeviceSpec>,
    /// Provider name (`generic`, `vfio`, `uio`, `rdma`, `vdpa`, `vhost`, `extra`) to its
    /// key/value pairs; this device's entry in `PCIDEVICE_<PREFIX>_<NAME>_INFO`.
    pub env: BTreeMap<String, BTreeMap<String, String>>,
}

fn spec(host_path: &str, container_path: &str) -> DeviceSpec {
    DeviceSpec {
        container_path: container_path.to_string(),
        host_path: host_path.to_string(),
        permissions: "rw".to_string(),
    }
}

fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The providers SRDP attaches to `dev` under `rc` and the selector that took it: generic
/// always; vfio or uio by driver; vdpa, else rdma, by selector; vhost with `needVhostNet`;
/// extra with `additionalInfo`. Unlike SRDP, the env entry never depends on whether device
/// specs were computed first, so uio's and vdpa's `mount` is there on the first Allocate.
pub fn device_info(
    host: &Host,
    rc: &ResourceConfig,
    sel: &Selectors,
    dev: &HostDevice,
) -> DeviceInfo {
    let mut info = DeviceInfo::default();
    let id = dev.id();
    let address = dev.address.to_string();
    info.env.insert("generic".into(), kv(&[("deviceID", &id)]));
    match dev.driver.as_deref() {
        Some("vfio-pci") => {
            info.specs.push(spec(VFIO_CONTAINER, VFIO_CONTAINER));
            let mut env = kv(&[("mount", VFIO_CONTAINER)]);
            if let Some(group) = dev.iommu_group {
                // As SRDP: the host node is noiommu-<N> in no-IOMMU mode, but the container
                // sees /dev/vfio/<N>.
                let host_path = format!("/dev/vfio/{}", group.device_file_name());
                let container_path = format!("/dev/vfio/{}", group.id);
                info.specs.push(spec(&host_path, &container_path));
                env.insert("dev-mount".into(), container_path);
            }
            info.env.insert("vfio".into(), env);
        }
        Some("uio" | "igb_uio") => {
            if let Some(node) = dev.uio.first() {
                info.specs.push(spec(node, node));
                info.env.insert("uio".into(), kv(&[("mount", node)]));
            } else {
                info.env.insert("uio".into(), BTreeMap::new());
            }
        }
        _ => {}
    }
    if let Some(wanted) = &sel.vdpa_type {
        if let Some(vdpa) = &dev.vdpa {
            let mut env = BTreeMap::new();
            // As SRDP's vdpa info provider: the configured vdpaType decides, not what the
            // device happens to be bound to.
            if wanted == "vhost"
                && let Some(path) = &vdpa.path
            {
                info.specs.push(spec(path, path));
                env.insert("mount".to_string(), path.clone());
            }
            info.env.insert("vdpa".into(), env);
        }
    } else if sel.is_rdma && !dev.rdma.names.is_empty() {
        let mut env = BTreeMap::new();
        for node in &dev.rdma.char_devices {
            info.specs.push(spec(node, node));
            for key in ["uverbs", "umad", "issm", "rdma_cm"] {
                if node.contains(key) {
                    env.insert(key.to_string(), node.clone());
                }
            }
        }
        if let Some(name) = dev.rdma.names.first() {
            env.insert("rdma_dev".into(), name.clone());
        }
        info.env.insert("rdma".into(), env);
    }
    if sel.need_vhost_net {
        // As SRDP: the vhost entry exists only when /dev/vhost-net does (a pod is not told of
        // a mount it does not get), and its device specs need /dev/net/tun too.
        if host.dev_exists("vhost-net") {
            if host.dev_exists("net/tun") {
                info.specs.push(spec("/dev/vhost-net", "/dev/vhost-net"));
                info.specs.push(spec("/dev/net/tun", "/dev/net/tun"));
            } else {
                tracing::warn!(device = %dev.address, "needVhostNet is set but /dev/net/tun is missing");
            }
            info.env.insert(
                "vhost".into(),
                kv(&[
                    ("net-mount", "/dev/vhost-net"),
                    ("tun-mount", "/dev/net/tun"),
                ]),
            );
        } else {
            tracing::warn!(device = %dev.address, "needVhostNet is set but /dev/vhost-net is missing");
        }
    }
    if let Some(extra) = &rc.additional_info {
        let mut env = BTreeMap::new();
        // Keyed by PCI address, also for auxiliary devices (their parent's), as in SRDP.
        for key in ["*".to_string(), address] {
            if let Some(pairs) = extra.get(&key) {
                env.extend(pairs.clone());
            }
        }
        info.env.insert("extra".into(), env);
    }
    info
}

/// A device-info file (device-info-spec 1.1.0), as Multus and SR-IOV CNI read it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceInfoFile {
    /// `pci` or `vdpa`.
    #[serde(rename = "type")]
    pub kind: String,
    /// [`DEVICE_INFO_VERSION`].
    pub version: String,
    /// For `pci`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci: Option<PciInfo>,
    /// For `vdpa`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vdpa: Option<VdpaInfo>,
}

/// The `pci` object of a device-info file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PciInfo {
    /// The function.
    #[serde(rename = "pci-address")]
    pub pci_address: String,
    /// RDMA devices, comma-joined.
    #[serde(rename = "rdma-device", skip_serializing_if = "Option::is_none")]
    pub rdma_device: Option<String>,
    /// The PF, for VFs (SRDP leaves it out; the spec has it).
    #[serde(rename = "pf-pci-address", skip_serializing_if = "Option::is_none")]
    pub pf_pci_address: Option<String>,
}

/// The `vdpa` object of a device-info file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VdpaInfo {
    /// The vDPA device (`vdpa0`).
    #[serde(rename = "parent-device", skip_serializing_if = "String::is_empty")]
    pub parent_device: String,
    /// `vhost` or `virtio`.
    pub driver: String,
    /// The vhost-vdpa node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The function.
    #[serde(rename = "pci-address")]
    pub pci_address: String,
}

/// The device-info file for `dev`, as SRDP writes it on Allocate.
pub fn device_info_file(dev: &HostDevice, sel: &Selectors) -> DeviceInfoFile {
    let address = dev.address.to_string();
    if let (Some(_), Some(vdpa)) = (&sel.vdpa_type, &dev.vdpa) {
        return DeviceInfoFile {
            kind: "vdpa".into(),
            version: DEVICE_INFO_VERSION.into(),
            pci: None,
            vdpa: Some(VdpaInfo {
                parent_device: vdpa.name.clone(),
                driver: vdpa.kind.clone(),
                path: vdpa.path.clone(),
                pci_address: address,
            }),
        };
    }
    let rdma_device = (sel.is_rdma && !dev.rdma.names.is_empty()).then(|| dev.rdma.names.join(","));
    DeviceInfoFile {
        kind: "pci".into(),
        version: DEVICE_INFO_VERSION.into(),
        pci: Some(PciInfo {
            pci_address: address,
            rdma_device,
            pf_pci_address: dev.pf.map(|p| p.to_string()),
        }),
        vdpa: None,
    }
}

/// `PCIDEVICE_<PREFIX>_<NAME>`: upper case, `.` and `/` as `_` (SRDP's env name for the IDs;
/// `_INFO` is appended for the JSON).
pub fn env_name(prefix: &str, resource_name: &str) -> String {
    format!("PCIDEVICE_{prefix}_{resource_name}")
        .replace(['.', '/'], "_")
        .to_uppercase()
}
