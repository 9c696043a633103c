//! Prepare and Unprepare on a fake sysfs tree whose kernel binds and unbinds
//! drivers as Linux does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use k8s_openapi::api::resource::v1::{
    AllocationResult, DeviceAllocationConfiguration, DeviceAllocationResult,
    DeviceRequestAllocationResult, OpaqueDeviceConfiguration, ResourceClaim, ResourceClaimStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{Value, json};
use sriov_dra::checkpoint::{CHECKPOINT_FILE, CheckpointError, ClaimState};
use sriov_dra::devices::{DraDevice, Inventory, device_name};
use sriov_dra::prepare::{PrepareError, PreparedDevice, Preparer, PreparerConfig};
use sriov_dra::vfconfig::{API_VERSION, KIND};
use sriov_pci::PciAddress;
use sriov_pci_fake::{FakeSysfs, fixtures};
use sriov_selector_pools::{Host, HostPaths};

const DRIVER: &str = sriov_dra::DEFAULT_DRIVER_NAME;
const POOL: &str = "node-a";
const RESOURCE: &str = "intel.com/sriov";
const VF0: &str = "0000:3b:02.0";
const VF1: &str = "0000:3b:02.1";
const VF2: &str = "0000:3b:02.2";

/// A node: an X710 with 4 VFs per port on iavf, and the plugin's directories.
struct Node {
    fake: FakeSysfs,
    tmp: tempfile::TempDir,
    inventory: Inventory,
}

impl Node {
    fn new() -> Self {
        let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let host = Host::new(HostPaths {
            sysfs: fake.sysfs(),
            proc_net_route: tmp.path().join("route"),
            dev_dir: tmp.path().join("dev"),
        });
        let inventory = Inventory::from_devices([VF0, VF1, VF2].map(|a| {
            let address: PciAddress = a.parse().unwrap();
            DraDevice {
                name: device_name(address),
                resource: RESOURCE.into(),
                host: host.describe(address).unwrap(),
                unhealthy: None,
            }
        }));
        Self {
            fake,
            tmp,
            inventory,
        }
    }

    fn config(&self) -> PreparerConfig {
        PreparerConfig {
            driver_name: DRIVER.into(),
            pool_name: POOL.into(),
            sysfs: self.fake.sysfs(),
            cdi_dir: self.cdi_dir(),
            device_info_dir: self.devinfo_dir(),
            checkpoint: self.checkpoint(),
        }
    }

    fn preparer(&self) -> Preparer {
        Preparer::new(self.config()).unwrap()
    }

    fn cdi_dir(&self) -> PathBuf {
        self.tmp.path().join("cdi")
    }

    fn devinfo_dir(&self) -> PathBuf {
        self.tmp.path().join("devinfo")
    }

    fn checkpoint(&self) -> PathBuf {
        self.tmp.path().join("plugin").join(CHECKPOINT_FILE)
    }

    fn spec_path(&self, uid: &str) -> PathBuf {
        self.cdi_dir().join(format!("{DRIVER}-vf_{uid}.json"))
    }

    fn spec(&self, uid: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.spec_path(uid)).unwrap()).unwrap()
    }

    fn driver(&self, vf: &str) -> Option<String> {
        self.fake.sysfs().driver(vf.parse().unwrap()).unwrap()
    }

    fn group(&self, vf: &str) -> u32 {
        self.fake
            .sysfs()
            .iommu_group(vf.parse().unwrap())
            .unwrap()
            .unwrap()
    }

    fn writes(&self) -> usize {
        self.fake.kernel().writes().len()
    }

    fn files(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }
}

fn params(fields: Value) -> Value {
    let mut v = json!({"apiVersion": API_VERSION, "kind": KIND});
    if let (Value::Object(base), Value::Object(more)) = (&mut v, fields) {
        base.extend(more);
    }
    v
}

/// A claim allocated `(request, device address)` from our pool, with claim
/// configs `(requests, parameters)`.
fn claim(uid: &str, devices: &[(&str, &str)], configs: &[(&[&str], Value)]) -> ResourceClaim {
    let results = devices
        .iter()
        .map(|(request, address)| DeviceRequestAllocationResult {
            device: device_name(address.parse().unwrap()),
            driver: DRIVER.into(),
            pool: POOL.into(),
            request: request.to_string(),
            ..Default::default()
        })
        .collect();
    let config = configs
        .iter()
        .map(|(requests, p)| DeviceAllocationConfiguration {
            source: "FromClaim".into(),
            requests: Some(requests.iter().map(|r| r.to_string()).collect()),
            opaque: Some(OpaqueDeviceConfiguration {
                driver: DRIVER.into(),
                parameters: RawExtension(p.clone()),
            }),
        })
        .collect();
    ResourceClaim {
        metadata: ObjectMeta {
            uid: Some(uid.into()),
            name: Some(format!("claim-{uid}")),
            namespace: Some("team-a".into()),
            ..Default::default()
        },
        status: Some(ResourceClaimStatus {
            allocation: Some(AllocationResult {
                devices: Some(DeviceAllocationResult {
                    config: Some(config),
                    results: Some(results),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn vfio_claim(uid: &str, vf: &str) -> ResourceClaim {
    claim(
        uid,
        &[("vf", vf)],
        &[(&[], params(json!({"driver": "vfio-pci"})))],
    )
}

fn node_paths(spec: &Value, index: usize) -> Vec<(String, String)> {
    spec["devices"][index]["containerEdits"]["deviceNodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    (
                        n["hostPath"].as_str().unwrap().to_string(),
                        n["path"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn prepare_with_vfio_pci_binds_the_vf_and_writes_its_cdi_spec_and_device_info() {
    let node = Node::new();
    let preparer = node.preparer();
    let prepared = preparer
        .prepare(&vfio_claim("uid-1", VF0), &node.inventory)
        .unwrap();

    assert_eq!(
        prepared,
        [PreparedDevice {
            request_names: vec!["vf".into()],
            pool_name: POOL.into(),
            device_name: "0000-3b-02-0".into(),
            cdi_device_ids: vec![format!("{DRIVER}/vf=uid-1-0000-3b-02-0")],
        }]
    );
    assert_eq!(node.driver(VF0).as_deref(), Some("vfio-pci"));

    let spec = node.spec("uid-1");
    assert_eq!(spec["kind"], format!("{DRIVER}/vf"));
    assert_eq!(spec["devices"][0]["name"], "uid-1-0000-3b-02-0");
    assert_eq!(
        spec["devices"][0]["containerEdits"]["env"],
        json!([format!("PCIDEVICE_INTEL_COM_SRIOV={VF0}")])
    );
    let group = format!("/dev/vfio/{}", node.group(VF0));
    assert_eq!(
        node_paths(&spec, 0),
        [
            ("/dev/vfio/vfio".to_string(), "/dev/vfio/vfio".to_string()),
            (group.clone(), group)
        ]
    );

    let info = node
        .devinfo_dir()
        .join(format!("intel.com-sriov-{VF0}-device.json"));
    let info: Value = serde_json::from_slice(&std::fs::read(info).unwrap()).unwrap();
    assert_eq!(info["type"], "pci");
    assert_eq!(info["pci"]["pci-address"], VF0);

    let claims = preparer.prepared();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].state, ClaimState::Prepared);
    assert_eq!(
        claims[0].devices[0].original_driver.as_deref(),
        Some("iavf")
    );
    assert_eq!(
        preparer.devices_in_use().into_iter().collect::<Vec<_>>(),
        ["0000-3b-02-0"]
    );
}

#[test]
fn the_iommufd_cdev_and_vhost_nodes_are_given_when_there() {
    let node = Node::new();
    let dir = node.fake.sysfs().device_dir(VF1.parse().unwrap());
    std::fs::create_dir_all(dir.join("vfio-dev/vfio7")).unwrap();
    std::fs::write(dir.join("vfio-dev/vfio7/dev"), "239:7\n").unwrap();
    let c = claim(
        "uid-1",
        &[("vf", VF1)],
        &[(
            &[],
            params(json!({"driver": "vfio-pci", "addVhostMount": true})),
        )],
    );
    node.preparer().prepare(&c, &node.inventory).unwrap();
    let nodes: Vec<String> = node_paths(&node.spec("uid-1"), 0)
        .into_iter()
        .map(|(host, _)| host)
        .collect();
    assert!(
        nodes.contains(&"/dev/vfio/devices/vfio7".to_string()),
        "{nodes:?}"
    );
    assert!(nodes.contains(&"/dev/vhost-net".to_string()), "{nodes:?}");
    assert!(nodes.contains(&"/dev/net/tun".to_string()), "{nodes:?}");
}

#[test]
fn a_kernel_driver_vf_is_left_alone_and_devices_of_a_resource_share_the_env() {
    let node = Node::new();
    let c = claim("uid-1", &[("a", VF0), ("b", VF1)], &[]);
    let before = node.writes();
    let prepared = node.preparer().prepare(&c, &node.inventory).unwrap();
    assert_eq!(prepared.len(), 2);
    assert_eq!(node.writes(), before, "no driver change, no sysfs write");
    assert_eq!(node.driver(VF0).as_deref(), Some("iavf"));
    let spec = node.spec("uid-1");
    for i in 0..2 {
        assert_eq!(
            spec["devices"][i]["containerEdits"]["env"],
            json!([format!("PCIDEVICE_INTEL_COM_SRIOV={VF0},{VF1}")])
        );
        assert!(node_paths(&spec, i).is_empty());
    }
}

#[test]
fn preparing_twice_answers_the_same_without_touching_the_host() {
    let node = Node::new();
    let preparer = node.preparer();
    let c = vfio_claim("uid-1", VF0);
    let first = preparer.prepare(&c, &node.inventory).unwrap();
    let writes = node.writes();
    let spec_mtime = std::fs::metadata(node.spec_path("uid-1"))
        .unwrap()
        .modified()
        .unwrap();
    let second = preparer.prepare(&c, &node.inventory).unwrap();
    assert_eq!(first, second);
    assert_eq!(node.writes(), writes, "no second bind");
    assert_eq!(
        std::fs::metadata(node.spec_path("uid-1"))
            .unwrap()
            .modified()
            .unwrap(),
        spec_mtime
    );
}

#[test]
fn unprepare_restores_the_original_driver_and_removes_the_files() {
    let node = Node::new();
    let preparer = node.preparer();
    preparer
        .prepare(&vfio_claim("uid-1", VF0), &node.inventory)
        .unwrap();
    preparer.unprepare("uid-1").unwrap();

    assert_eq!(node.driver(VF0).as_deref(), Some("iavf"));
    let override_file = node
        .fake
        .sysfs()
        .device_dir(VF0.parse().unwrap())
        .join("driver_override");
    assert_eq!(
        std::fs::read_to_string(override_file).unwrap().trim(),
        "(null)",
        "the override is cleared (the kernel shows an empty one as \"(null)\")"
    );
    assert!(node.files(&node.cdi_dir()).is_empty());
    assert!(node.files(&node.devinfo_dir()).is_empty());
    assert!(preparer.prepared().is_empty());
    assert!(preparer.devices_in_use().is_empty());

    // Unknown, or already unprepared: nothing to do.
    let writes = node.writes();
    preparer.unprepare("uid-1").unwrap();
    preparer.unprepare("never-seen").unwrap();
    assert_eq!(node.writes(), writes);
}

#[test]
fn a_restarted_preparer_knows_and_unprepares_the_claims_of_the_last_one() {
    let node = Node::new();
    let c = vfio_claim("uid-1", VF0);
    let first = node.preparer().prepare(&c, &node.inventory).unwrap();

    let restarted = node.preparer();
    assert_eq!(restarted.prepared().len(), 1);
    let writes = node.writes();
    assert_eq!(restarted.prepare(&c, &node.inventory).unwrap(), first);
    assert_eq!(node.writes(), writes);

    restarted.unprepare("uid-1").unwrap();
    assert_eq!(node.driver(VF0).as_deref(), Some("iavf"));
    assert!(node.files(&node.cdi_dir()).is_empty());
    assert!(node.preparer().prepared().is_empty());
}

#[test]
fn a_claim_left_half_prepared_by_a_crash_is_undone_on_recovery() {
    let node = Node::new();
    node.preparer()
        .prepare(&vfio_claim("uid-1", VF0), &node.inventory)
        .unwrap();
    // As if killed after the bind, before the spec was recorded as written.
    let path = node.checkpoint();
    let mut cp: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cp["claims"]["uid-1"]["state"] = json!("preparing");
    cp["claims"]["uid-1"]["devices"][0]["state"] = json!("binding");
    std::fs::write(&path, serde_json::to_vec(&cp).unwrap()).unwrap();

    let restarted = node.preparer();
    assert_eq!(restarted.prepared()[0].state, ClaimState::Preparing);
    assert_eq!(restarted.recover().unwrap(), ["uid-1"]);
    assert_eq!(node.driver(VF0).as_deref(), Some("iavf"));
    assert!(node.files(&node.cdi_dir()).is_empty());
    assert!(node.files(&node.devinfo_dir()).is_empty());
    assert!(restarted.prepared().is_empty());
}

#[test]
fn a_device_prepared_for_another_claim_is_refused_naming_both() {
    let node = Node::new();
    let preparer = node.preparer();
    preparer
        .prepare(&vfio_claim("uid-1", VF0), &node.inventory)
        .unwrap();
    let err = preparer
        .prepare(&vfio_claim("uid-2", VF0), &node.inventory)
        .unwrap_err();
    assert!(matches!(err, PrepareError::InUse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("uid-1") && msg.contains("uid-2"), "{msg}");
    assert!(err.is_caller_error());
    assert_eq!(preparer.prepared().len(), 1);
}

#[test]
fn a_device_not_in_the_inventory_fails_before_any_host_change() {
    let node = Node::new();
    let preparer = node.preparer();
    preparer
        .prepare(&vfio_claim("uid-1", VF2), &node.inventory)
        .unwrap();
    let checkpoint = std::fs::read(node.checkpoint()).unwrap();
    let writes = node.writes();

    let c = claim(
        "uid-2",
        &[("vf", VF0), ("vf", "0000:3b:02.3")],
        &[(&[], params(json!({"driver": "vfio-pci"})))],
    );
    let err = preparer.prepare(&c, &node.inventory).unwrap_err();
    assert!(
        matches!(&err, PrepareError::UnknownDevice { device, .. } if device == "0000-3b-02-3"),
        "{err:?}"
    );
    assert_eq!(node.writes(), writes);
    assert_eq!(node.driver(VF0).as_deref(), Some("iavf"));
    assert_eq!(std::fs::read(node.checkpoint()).unwrap(), checkpoint);
    assert_eq!(
        node.files(&node.cdi_dir()),
        [format!("{DRIVER}-vf_uid-1.json")]
    );
}

#[test]
fn a_failure_midway_undoes_what_the_call_did() {
    let node = Node::new();
    let preparer = node.preparer();
    preparer
        .prepare(&vfio_claim("uid-1", VF2), &node.inventory)
        .unwrap();
    let checkpoint = std::fs::read(node.checkpoint()).unwrap();
    let devinfo = node.files(&node.devinfo_dir());

    // The first VF is bound to vfio-pci, then the second's driver is missing.
    let c = claim(
        "uid-2",
        &[("fast", VF0), ("odd", VF1)],
        &[
            (&["fast"], params(json!({"driver": "vfio-pci"}))),
            (&["odd"], params(json!({"driver": "no-such-driver"}))),
        ],
    );
    let err = preparer.prepare(&c, &node.inventory).unwrap_err();
    assert!(
        matches!(&err, PrepareError::Bind { driver, .. } if driver == "no-such-driver"),
        "{err:?}"
    );
    assert!(!err.is_caller_error());
    assert_eq!(node.driver(VF0).as_deref(), Some("iavf"), "restored");
    assert_eq!(node.driver(VF1).as_deref(), Some("iavf"));
    assert_eq!(std::fs::read(node.checkpoint()).unwrap(), checkpoint);
    assert_eq!(
        node.files(&node.cdi_dir()),
        [format!("{DRIVER}-vf_uid-1.json")]
    );
    assert_eq!(node.files(&node.devinfo_dir()), devinfo);
    assert_eq!(preparer.prepared().len(), 1);
}

#[test]
fn a_failed_spec_write_is_undone_too() {
    let node = Node::new();
    // A file where the CDI directory should be: the spec cannot be written.
    std::fs::write(node.cdi_dir(), b"").unwrap();
    let preparer = node.preparer();
    let err = preparer
        .prepare(&vfio_claim("uid-1", VF0), &node.inventory)
        .unwrap_err();
    assert!(matches!(err, PrepareError::Write { .. }), "{err:?}");
    assert_eq!(node.driver(VF0).as_deref(), Some("iavf"));
    assert!(node.files(&node.devinfo_dir()).is_empty());
    assert!(preparer.prepared().is_empty());
    assert!(node.preparer().prepared().is_empty());
}

#[test]
fn other_drivers_results_are_skipped_and_other_pools_refused() {
    let node = Node::new();
    let preparer = node.preparer();
    let mut c = vfio_claim("uid-1", VF0);
    let results = c
        .status
        .as_mut()
        .and_then(|s| s.allocation.as_mut())
        .and_then(|a| a.devices.as_mut())
        .and_then(|d| d.results.as_mut())
        .unwrap();
    results[0].driver = "gpu.example.com".into();
    assert!(preparer.prepare(&c, &node.inventory).unwrap().is_empty());
    assert!(preparer.prepared().is_empty());

    let mut c = vfio_claim("uid-2", VF0);
    let results = c
        .status
        .as_mut()
        .and_then(|s| s.allocation.as_mut())
        .and_then(|a| a.devices.as_mut())
        .and_then(|d| d.results.as_mut())
        .unwrap();
    results[0].pool = "node-b".into();
    let err = preparer.prepare(&c, &node.inventory).unwrap_err();
    assert!(matches!(err, PrepareError::WrongPool { .. }), "{err:?}");
    assert_eq!(node.driver(VF0).as_deref(), Some("iavf"));
}

#[test]
fn unallocated_claims_and_unsafe_uids_are_refused() {
    let node = Node::new();
    let preparer = node.preparer();
    let mut c = vfio_claim("uid-1", VF0);
    c.status = None;
    let err = preparer.prepare(&c, &node.inventory).unwrap_err();
    assert!(matches!(err, PrepareError::NotAllocated { .. }), "{err:?}");

    let err = preparer
        .prepare(&vfio_claim("../../etc/x", VF0), &node.inventory)
        .unwrap_err();
    assert!(
        matches!(
            err,
            PrepareError::InvalidClaim {
                field: "metadata.uid",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_corrupt_checkpoint_is_an_error_naming_the_file() {
    let node = Node::new();
    std::fs::create_dir_all(node.checkpoint().parent().unwrap()).unwrap();
    std::fs::write(node.checkpoint(), b"{\"version\": 1, \"claims\": ").unwrap();
    let err = Preparer::new(node.config()).unwrap_err();
    assert!(
        matches!(
            err,
            PrepareError::Checkpoint(CheckpointError::Corrupt { .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&node.checkpoint().display().to_string()),
        "{err}"
    );
}
