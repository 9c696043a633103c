//! NSM mechanism names and parameter keys (networkservicemesh/api), and
//! validation of the parameters a client sends.

use std::collections::HashMap;

use sriov_netlink::{IfName, NetnsUrl};
use tonic::Status;

/// Mechanism class between a client and its local forwarder.
pub const CLS_LOCAL: &str = "LOCAL";
/// Mechanism class between forwarders / towards remote hops.
pub const CLS_REMOTE: &str = "REMOTE";
/// Kernel interface mechanism type.
pub const MECH_KERNEL: &str = "KERNEL";
/// VFIO device mechanism type.
pub const MECH_VFIO: &str = "VFIO";
/// No-op mechanism type (what the forwarder offers the next hop).
pub const MECH_NOOP: &str = "NOOP";

/// The preferences the forwarder offers the next hop, in sdk-sriov's
/// order (its `mechanisms/noop` client): NOOP as LOCAL, then as REMOTE.
pub fn noop_preferences() -> Vec<sriov_api::nsm::connection::Mechanism> {
    [CLS_LOCAL, CLS_REMOTE]
        .into_iter()
        .map(|cls| sriov_api::nsm::connection::Mechanism {
            cls: cls.to_string(),
            r#type: MECH_NOOP.to_string(),
            parameters: Default::default(),
        })
        .collect()
}

/// Interface name in the client's namespace.
pub const NAME: &str = "name";
/// The client's network namespace, `inode://<dev>/<ino>` or `file://...`.
pub const INODE_URL: &str = "inodeURL";
/// The rule an `inode://` namespace is held to when fd passing is required
/// (the default; the `/proc` scan fallback is for development only).
pub const RULE_NETNS_BY_FD: &str = "an inode:// namespace must be sent by fd (SCM_RIGHTS) on the \
     connection whose Request names it";
/// The client's network namespace inode number (informational).
pub const NETNS_INODE: &str = "netnsInode";
/// The SR-IOV token from `NSM_SRIOV_TOKENS_<name>`.
pub const TOKEN_ID: &str = "tokenID";
/// The VF's PCI address (set by the forwarder).
pub const PCI_ADDRESS: &str = "pciAddress";
/// Interface MTU.
pub const MTU: &str = "MTU";
/// VLAN tag.
pub const VLAN: &str = "vlan";
/// The client container's cgroup directory, relative to the cgroup root.
pub const CGROUP_DIR: &str = "cgroupDir";
/// The VF's IOMMU group (set by the forwarder).
pub const IOMMU_GROUP: &str = "iommuGroup";
/// Major number of `/dev/vfio/vfio` (set by the forwarder).
pub const VFIO_MAJOR: &str = "vfioMajor";
/// Minor number of `/dev/vfio/vfio` (set by the forwarder).
pub const VFIO_MINOR: &str = "vfioMinor";
/// Major number of `/dev/vfio/<group>` (set by the forwarder).
pub const DEVICE_MAJOR: &str = "deviceMajor";
/// Minor number of `/dev/vfio/<group>` (set by the forwarder).
pub const DEVICE_MINOR: &str = "deviceMinor";

/// Host path of the VF's VFIO character device, `/dev/vfio/devices/vfioN`
/// (iommufd; kernels from 6.2). Ours, beside NSM's keys; set only where the
/// kernel made one.
pub const VFIO_CDEV_PATH: &str = "vfioCdevPath";
/// Major number of the VFIO character device (ours).
pub const VFIO_CDEV_MAJOR: &str = "vfioCdevMajor";
/// Minor number of the VFIO character device (ours).
pub const VFIO_CDEV_MINOR: &str = "vfioCdevMinor";
/// `true` when VFIO runs without an IOMMU: the group node is
/// `/dev/vfio/noiommu-<iommuGroup>` on the host (ours; absent otherwise).
pub const VFIO_NOIOMMU: &str = "vfioNoiommu";

/// Longest token ID accepted (ours are `sriov-` + a 36-character UUID).
const MAX_TOKEN_LEN: usize = 128;

fn bad(key: &str, value: &str, why: impl std::fmt::Display) -> Status {
    let shown: String = value
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect();
    Status::invalid_argument(format!("mechanism parameter {key}={shown:?}: {why}"))
}

/// The token ID, required.
pub fn token(params: &HashMap<String, String>) -> Result<String, Status> {
    let t = params.get(TOKEN_ID).ok_or_else(|| {
        Status::invalid_argument(format!("mechanism parameter {TOKEN_ID} is required"))
    })?;
    if t.is_empty() || t.len() > MAX_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(TOKEN_ID, t, "not a token ID"));
    }
    Ok(t.clone())
}

/// Kernel mechanism parameters, validated before anything is touched.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelParams {
    /// The token.
    pub token: String,
    /// The client's namespace.
    pub netns: NetnsUrl,
    /// The interface name to give the VF there.
    pub name: Option<IfName>,
    /// MTU from the parameters (the connection context's MTU wins).
    pub mtu: Option<u32>,
    /// VLAN from the parameters (the ethernet context's tag wins).
    pub vlan: Option<u16>,
}

/// Validates the KERNEL mechanism's parameters.
pub fn kernel(params: &HashMap<String, String>) -> Result<KernelParams, Status> {
    let token = token(params)?;
    let url = params.get(INODE_URL).ok_or_else(|| {
        Status::invalid_argument(format!("mechanism parameter {INODE_URL} is required"))
    })?;
    let netns = NetnsUrl::parse(url).map_err(|e| bad(INODE_URL, url, e))?;
    let name = match params.get(NAME) {
        Some(n) => Some(IfName::new(n).map_err(|e| bad(NAME, n, e))?),
        None => None,
    };
    let mtu = match params.get(MTU) {
        Some(m) => {
            let v: u32 = m.parse().map_err(|_| bad(MTU, m, "not a number"))?;
            if !(68..=65535).contains(&v) {
                return Err(bad(MTU, m, "outside 68..=65535"));
            }
            Some(v)
        }
        None => None,
    };
    let vlan = match params.get(VLAN) {
        Some(v) => {
            let tag: u16 = v.parse().map_err(|_| bad(VLAN, v, "not a number"))?;
            if tag > 4094 {
                return Err(bad(VLAN, v, "outside 0..=4094"));
            }
            Some(tag)
        }
        None => None,
    };
    if let Some(i) = params.get(NETNS_INODE)
        && i.parse::<u64>().is_err()
    {
        return Err(bad(NETNS_INODE, i, "not an inode number"));
    }
    Ok(KernelParams {
        token,
        netns,
        name,
        mtu,
        vlan,
    })
}

/// VFIO mechanism parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioParams {
    /// The token.
    pub token: String,
    /// The client container's cgroup, relative to the cgroup root.
    pub cgroup_dir: String,
}

/// Validates the VFIO mechanism's parameters.
pub fn vfio(params: &HashMap<String, String>) -> Result<VfioParams, Status> {
    let token = token(params)?;
    let dir = params.get(CGROUP_DIR).ok_or_else(|| {
        Status::invalid_argument(format!("mechanism parameter {CGROUP_DIR} is required"))
    })?;
    sriov_vfio::validate_cgroup_dir(dir).map_err(|e| bad(CGROUP_DIR, dir, e))?;
    Ok(VfioParams {
        token,
        cgroup_dir: dir.clone(),
    })
}

/// The instant a protobuf timestamp names, or `None` when it lies before
/// the epoch's range or beyond what `SystemTime` can hold (client input:
/// never an overflow).
pub(crate) fn system_time(t: &sriov_api::prost_types::Timestamp) -> Option<std::time::SystemTime> {
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u32::try_from(t.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    std::time::SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nanos))
}

/// An error with its causes, for status messages (`a: b: c`).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kernel_parameters_parse() {
        let k = kernel(&p(&[
            (TOKEN_ID, "sriov-1"),
            (INODE_URL, "inode://4/4026532000"),
            (NAME, "nsm-1"),
            (MTU, "9000"),
            (VLAN, "100"),
        ]))
        .unwrap();
        assert_eq!(k.name.unwrap().as_str(), "nsm-1");
        assert_eq!((k.mtu, k.vlan), (Some(9000), Some(100)));
    }

    #[test]
    fn hostile_kernel_parameters_are_invalid_arguments() {
        let ok = [(TOKEN_ID, "sriov-1"), (INODE_URL, "inode://4/4026532000")];
        for (key, value, want) in [
            (NAME, "a-name-longer-than-15", NAME),
            (NAME, "../etc", NAME),
            (INODE_URL, "http://x", INODE_URL),
            (INODE_URL, "file:///etc/passwd\0", INODE_URL),
            (MTU, "12", MTU),
            (MTU, "-1", MTU),
            (VLAN, "5000", VLAN),
            (TOKEN_ID, "", TOKEN_ID),
            (TOKEN_ID, "to ken", TOKEN_ID),
            (NETNS_INODE, "x", NETNS_INODE),
        ] {
            let mut params = p(&ok);
            params.insert(key.to_string(), value.to_string());
            let e = kernel(&params).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{key}={value}");
            assert!(e.message().contains(want), "{}", e.message());
        }
        let e = kernel(&p(&[(TOKEN_ID, "sriov-1")])).unwrap_err();
        assert!(e.message().contains("inodeURL is required"));
    }

    #[test]
    fn hostile_cgroup_dirs_are_invalid_arguments() {
        for dir in ["../../etc", "/abs/path", "a/\0b", &"x".repeat(4096)] {
            let e = vfio(&p(&[(TOKEN_ID, "sriov-1"), (CGROUP_DIR, dir)])).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(CGROUP_DIR));
        }
        assert!(
            vfio(&p(&[
                (TOKEN_ID, "sriov-1"),
                (CGROUP_DIR, "kubepods/pod1/c1")
            ]))
            .is_ok()
        );
    }
}
