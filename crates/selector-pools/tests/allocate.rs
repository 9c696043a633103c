//! What Allocate hands a container: env, device specs by info provider, device-info files, CDI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use sriov_deviceplugin::{AllocateError, Backend, ContainerAllocateResponse};
use sriov_selector_pools::{NoLinkHealth, device_info_file_name, env_name};

fn one(lab: &Lab, json: &str, ids: &[&str]) -> ContainerAllocateResponse {
    let m = lab.manager(json);
    let mut r = m.pools()[0].allocate(&[strings(ids)]).unwrap();
    r.remove(0)
}

fn info(r: &ContainerAllocateResponse, env: &str) -> Value {
    serde_json::from_str(&r.envs[&format!("{env}_INFO")]).unwrap()
}

fn specs(r: &ContainerAllocateResponse) -> Vec<(String, String)> {
    r.devices
        .iter()
        .map(|d| {
            assert_eq!(d.permissions, "rw");
            (d.host_path.clone(), d.container_path.clone())
        })
        .collect()
}

#[test]
fn env_names_are_upper_case_with_dots_and_slashes_as_underscores() {
    assert_eq!(
        env_name("intel.com", "intel_sriov_netdevice"),
        "PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE"
    );
    assert_eq!(
        env_name("openshift.io", "mlx-nics"),
        "PCIDEVICE_OPENSHIFT_IO_MLX-NICS"
    );
    assert_eq!(env_name("a.b/c", "d"), "PCIDEVICE_A_B_C_D");
}

#[test]
fn a_netdev_vf_gets_ids_and_generic_info_only() {
    let lab = Lab::new();
    let r = one(
        &lab,
        r#"{"resourceList":[{"resourceName":"sriov_net","selectors":{"drivers":["iavf"]}}]}"#,
        &["0000:3b:02.1", "0000:3b:02.0"],
    );
    let env = "PCIDEVICE_INTEL_COM_SRIOV_NET";
    assert_eq!(
        r.envs[env], "0000:3b:02.1,0000:3b:02.0",
        "in the order kubelet asked"
    );
    assert_eq!(
        info(&r, env),
        json!({
            "0000:3b:02.0": {"generic": {"deviceID": "0000:3b:02.0"}},
            "0000:3b:02.1": {"generic": {"deviceID": "0000:3b:02.1"}}
        })
    );
    assert!(r.devices.is_empty());
    assert!(r.mounts.is_empty());
}

#[test]
fn vfio_devices_get_the_container_node_once_and_their_group_nodes() {
    let lab = Lab::new();
    lab.bind("0000:3b:02.0", "vfio-pci");
    lab.bind("0000:3b:02.1", "vfio-pci");
    let g0 = lab
        .fake
        .sysfs()
        .iommu_group(addr("0000:3b:02.0"))
        .unwrap()
        .unwrap();
    let g1 = lab
        .fake
        .sysfs()
        .iommu_group(addr("0000:3b:02.1"))
        .unwrap()
        .unwrap();
    // 02.1's group runs without an IOMMU: the host node is noiommu-<N>.
    lab.write("0000:3b:02.1", "iommu_group/name", "vfio-noiommu\n");
    let r = one(
        &lab,
        r#"{"resourceList":[{"resourceName":"dpdk","selectors":{"drivers":["vfio-pci"]}}]}"#,
        &["0000:3b:02.0", "0000:3b:02.1"],
    );
    assert_eq!(
        specs(&r),
        vec![
            ("/dev/vfio/vfio".into(), "/dev/vfio/vfio".into()),
            (format!("/dev/vfio/{g0}"), format!("/dev/vfio/{g0}")),
            (format!("/dev/vfio/noiommu-{g1}"), format!("/dev/vfio/{g1}")),
        ]
    );
    let v = info(&r, "PCIDEVICE_INTEL_COM_DPDK");
    assert_eq!(
        v["0000:3b:02.0"]["vfio"],
        json!({"mount": "/dev/vfio/vfio", "dev-mount": format!("/dev/vfio/{g0}")})
    );
    assert_eq!(
        v["0000:3b:02.1"]["vfio"]["dev-mount"],
        format!("/dev/vfio/{g1}")
    );
}

#[test]
fn uio_devices_get_their_node_and_mount_on_the_first_allocate() {
    let lab = Lab::new();
    lab.bind("0000:3b:0a.2", "igb_uio");
    lab.mkdir("0000:3b:0a.2", "uio/uio4");
    let r = one(
        &lab,
        r#"{"resourceList":[{"resourceName":"uio","selectors":{"drivers":["igb_uio"]}}]}"#,
        &["0000:3b:0a.2"],
    );
    assert_eq!(specs(&r), vec![("/dev/uio4".into(), "/dev/uio4".into())]);
    assert_eq!(
        info(&r, "PCIDEVICE_INTEL_COM_UIO")["0000:3b:0a.2"]["uio"],
        json!({"mount": "/dev/uio4"})
    );
}

#[test]
fn rdma_devices_get_their_character_devices_and_rdma_info() {
    let lab = Lab::new();
    lab.make_rdma("0000:5e:00.2", "mlx5_2", 2);
    let r = one(
        &lab,
        r#"{"resourceList":[{"resourceName":"rdma","resourcePrefix":"nvidia.com","selectors":{"isRdma":true}}]}"#,
        &["0000:5e:00.2"],
    );
    let host: Vec<String> = specs(&r).into_iter().map(|(h, _)| h).collect();
    assert_eq!(
        host,
        vec![
            "/dev/infiniband/uverbs2",
            "/dev/infiniband/umad2",
            "/dev/infiniband/issm2",
            "/dev/infiniband/rdma_cm"
        ]
    );
    assert_eq!(
        info(&r, "PCIDEVICE_NVIDIA_COM_RDMA")["0000:5e:00.2"]["rdma"],
        json!({
            "rdma_dev": "mlx5_2",
            "uverbs": "/dev/infiniband/uverbs2",
            "umad": "/dev/infiniband/umad2",
            "issm": "/dev/infiniband/issm2",
            "rdma_cm": "/dev/infiniband/rdma_cm"
        })
    );
    let file = lab.devinfo_dir().join(device_info_file_name(
        "nvidia.com/rdma",
        addr("0000:5e:00.2"),
    ));
    let v: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    assert_eq!(v["pci"]["rdma-device"], "mlx5_2");
}

#[test]
fn need_vhost_net_adds_vhost_and_tun_and_vdpa_vhost_adds_its_node() {
    let lab = Lab::new();
    lab.make_vdpa("0000:5e:00.3", "vhost_vdpa", 1);
    let r = one(
        &lab,
        r#"{"resourceList":[{"resourceName":"v","selectors":{"vdpaType":"vhost","needVhostNet":true}}]}"#,
        &["0000:5e:00.3"],
    );
    assert_eq!(
        specs(&r),
        vec![
            ("/dev/vhost-vdpa-1".into(), "/dev/vhost-vdpa-1".into()),
            ("/dev/vhost-net".into(), "/dev/vhost-net".into()),
            ("/dev/net/tun".into(), "/dev/net/tun".into()),
        ]
    );
    let v = info(&r, "PCIDEVICE_INTEL_COM_V");
    assert_eq!(
        v["0000:5e:00.3"]["vdpa"],
        json!({"mount": "/dev/vhost-vdpa-1"})
    );
    assert_eq!(
        v["0000:5e:00.3"]["vhost"],
        json!({"net-mount": "/dev/vhost-net", "tun-mount": "/dev/net/tun"})
    );
    let file = lab
        .devinfo_dir()
        .join(device_info_file_name("intel.com/v", addr("0000:5e:00.3")));
    let d: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    assert_eq!(
        d,
        json!({"type": "vdpa", "version": "1.1.0", "vdpa": {
            "parent-device": "vdpa1", "driver": "vhost", "path": "/dev/vhost-vdpa-1",
            "pci-address": "0000:5e:00.3"}})
    );
}

#[test]
fn additional_info_merges_the_wildcard_and_the_device_entry() {
    let lab = Lab::new();
    let r = one(
        &lab,
        r#"{"resourceList":[{"resourceName":"x","selectors":{"drivers":["iavf"]},
            "additionalInfo":{"*":{"a":"all","b":"all"},"0000:3b:02.0":{"b":"mine"}}}]}"#,
        &["0000:3b:02.0", "0000:3b:02.1"],
    );
    let v = info(&r, "PCIDEVICE_INTEL_COM_X");
    assert_eq!(v["0000:3b:02.0"]["extra"], json!({"a": "all", "b": "mine"}));
    assert_eq!(v["0000:3b:02.1"]["extra"], json!({"a": "all", "b": "all"}));
}

#[test]
fn accelerators_get_generic_info_and_extra() {
    let lab = Lab::new();
    let r = one(
        &lab,
        r#"{"resourceList":[{"resourceName":"qat","deviceType":"accelerator","selectors":{"devices":["4940"]},
            "additionalInfo":{"*":{"token":"t"}}}]}"#,
        &["0000:6b:00.0"],
    );
    assert_eq!(
        info(&r, "PCIDEVICE_INTEL_COM_QAT"),
        json!({"0000:6b:00.0": {"generic": {"deviceID": "0000:6b:00.0"}, "extra": {"token": "t"}}})
    );
}

#[test]
fn device_info_files_are_read_only_and_cleaned_per_resource() {
    let lab = Lab::new();
    let m = lab.manager(
        r#"{"resourceList":[
            {"resourceName":"sriov","selectors":{"pfNames":["ens785f0"]}},
            {"resourceName":"sriov_b","selectors":{"pfNames":["ens785f1"]}}]}"#,
    );
    m.pools()[0]
        .allocate(&[strings(&["0000:3b:02.2"])])
        .unwrap();
    m.pools()[1]
        .allocate(&[strings(&["0000:3b:0a.0"])])
        .unwrap();
    let path = lab
        .devinfo_dir()
        .join("intel.com-sriov-0000:3b:02.2-device.json");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        v,
        json!({"type": "pci", "version": "1.1.0",
               "pci": {"pci-address": "0000:3b:02.2", "pf-pci-address": "0000:3b:00.0"}})
    );
    // A second Allocate of the same device replaces its file.
    m.pools()[0]
        .allocate(&[strings(&["0000:3b:02.2"])])
        .unwrap();
    // No temp files are left behind.
    let mut names: Vec<String> = std::fs::read_dir(lab.devinfo_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "intel.com-sriov-0000:3b:02.2-device.json",
            "intel.com-sriov_b-0000:3b:0a.0-device.json"
        ]
    );
    assert_eq!(m.pools()[0].clean_device_info().unwrap(), 1);
    assert!(!path.exists());
    assert!(
        lab.devinfo_dir()
            .join("intel.com-sriov_b-0000:3b:0a.0-device.json")
            .exists()
    );
    m.clean_files().unwrap();
    assert_eq!(std::fs::read_dir(lab.devinfo_dir()).unwrap().count(), 0);
}

#[test]
fn unknown_ids_are_refused_and_nothing_is_marked_allocated() {
    let lab = Lab::new();
    let m =
        lab.manager(r#"{"resourceList":[{"resourceName":"x","selectors":{"drivers":["iavf"]}}]}"#);
    let err = m.pools()[0]
        .allocate(&[strings(&["0000:3b:02.0"]), strings(&["0000:5e:00.2"])])
        .unwrap_err();
    assert_eq!(
        err,
        AllocateError::UnknownDevice {
            id: "0000:5e:00.2".into()
        }
    );
    assert!(m.pools()[0].allocated().is_empty());
    m.pools()[0]
        .allocate(&[strings(&["0000:3b:02.0"])])
        .unwrap();
    assert_eq!(m.pools()[0].allocated(), strings(&["0000:3b:02.0"]));
    m.pools()[0].release(&strings(&["0000:3b:02.0"]));
    assert!(m.pools()[0].allocated().is_empty());
}

#[test]
fn with_cdi_devices_are_named_not_listed_and_the_spec_follows_the_pool() {
    let lab = Lab::new();
    lab.bind("0000:3b:02.0", "vfio-pci");
    let g = lab
        .fake
        .sysfs()
        .iommu_group(addr("0000:3b:02.0"))
        .unwrap()
        .unwrap();
    std::fs::create_dir_all(lab.cdi_dir()).unwrap();
    std::fs::write(lab.cdi_dir().join("sriov-dp-stale.yaml"), "").unwrap();
    std::fs::write(lab.cdi_dir().join("other-vendor.json"), "{}").unwrap();
    let m = lab.manager_with(
        r#"{"resourceList":[{"resourceName":"dpdk","selectors":{"drivers":["vfio-pci"]}}]}"#,
        true,
        Arc::new(NoLinkHealth),
    );
    let r = m.pools()[0]
        .allocate(&[strings(&["0000:3b:02.0"])])
        .unwrap()
        .remove(0);
    assert!(r.devices.is_empty());
    // SRDP's annotation, and not also kubelet's field: a runtime would inject twice.
    assert!(r.cdi_devices.is_empty());
    assert_eq!(
        r.annotations["cdi.k8s.io/intel.com_net-pci"],
        "intel.com/net-pci=0000:3b:02.0"
    );
    assert!(r.envs.contains_key("PCIDEVICE_INTEL_COM_DPDK"));

    let spec_path = lab.cdi_dir().join("sriov-dp-intel.com-net-pci-dpdk.json");
    let spec: Value = serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    assert_eq!(spec["kind"], "intel.com/net-pci");
    // PCI-address names and hostPath need 0.5.0, nothing here needs more.
    assert_eq!(spec["cdiVersion"], "0.5.0");
    assert_eq!(spec["devices"][0]["name"], "0000:3b:02.0");
    assert_eq!(
        spec["devices"][0]["containerEdits"]["deviceNodes"][1],
        json!({"path": format!("/dev/vfio/{g}"), "hostPath": format!("/dev/vfio/{g}"), "permissions": "rw"})
    );

    lab.bind("0000:3b:02.1", "vfio-pci");
    m.refresh().unwrap();
    let spec: Value = serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    assert_eq!(spec["devices"].as_array().unwrap().len(), 2);

    m.clean_files().unwrap();
    let left: Vec<String> = std::fs::read_dir(lab.cdi_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["other-vendor.json"]);
}

#[test]
fn with_the_cdi_field_devices_are_named_there_and_not_annotated() {
    let lab = Lab::new();
    let config = sriov_selector_pools::Config::parse(
        r#"{"resourceList":[{"resourceName":"x","selectors":{"drivers":["iavf"]}}]}"#,
        "intel.com",
    )
    .unwrap();
    let mut settings = lab.settings(true);
    settings.cdi_field = true;
    let m = sriov_selector_pools::PoolManager::new(
        &config,
        lab.host(),
        settings,
        Arc::new(NoLinkHealth),
    );
    m.refresh().unwrap();
    let r = m.pools()[0]
        .allocate(&[strings(&["0000:3b:02.0"])])
        .unwrap()
        .remove(0);
    let names: Vec<&str> = r.cdi_devices.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["intel.com/net-pci=0000:3b:02.0"]);
    assert!(r.annotations.is_empty(), "{:?}", r.annotations);
}

#[test]
fn cdi_versions_are_the_lowest_the_fields_need() {
    use sriov_selector_pools::{CdiDeviceEntry, CdiDeviceNode, CdiEdits, CdiSpec};
    let dev = |name: &str, host: &str| CdiDeviceEntry {
        name: name.into(),
        container_edits: CdiEdits {
            device_nodes: vec![CdiDeviceNode {
                path: "/dev/x".into(),
                host_path: host.into(),
                permissions: "rw".into(),
            }],
            env: Vec::new(),
        },
    };
    assert_eq!(
        CdiSpec::new("a.com/net".into(), vec![]).cdi_version,
        "0.3.0"
    );
    assert_eq!(
        CdiSpec::new("a.com/net".into(), vec![dev("vf", "")]).cdi_version,
        "0.3.0"
    );
    assert_eq!(
        CdiSpec::new("a.com/net".into(), vec![dev("vf", "/dev/x")]).cdi_version,
        "0.5.0"
    );
    assert_eq!(
        CdiSpec::new("a.com/net".into(), vec![dev("0000:3b:02.0", "")]).cdi_version,
        "0.5.0"
    );
    assert_eq!(
        CdiSpec::new("a.com/net.pci".into(), vec![]).cdi_version,
        "0.6.0"
    );
}

#[test]
fn accelerators_get_no_device_info_file() {
    let lab = Lab::new();
    one(
        &lab,
        r#"{"resourceList":[{"resourceName":"qat","deviceType":"accelerator","selectors":{"devices":["4940"]}}]}"#,
        &["0000:6b:00.0"],
    );
    let file = lab
        .devinfo_dir()
        .join(device_info_file_name("intel.com/qat", addr("0000:6b:00.0")));
    assert!(!file.exists());
}

#[test]
fn no_vhost_entry_or_specs_without_dev_vhost_net() {
    let lab = Lab::new();
    std::fs::remove_file(lab.path().join("dev/vhost-net")).unwrap();
    lab.make_vdpa("0000:5e:00.3", "vhost_vdpa", 1);
    let r = one(
        &lab,
        r#"{"resourceList":[{"resourceName":"v","selectors":{"vdpaType":"vhost","needVhostNet":true}}]}"#,
        &["0000:5e:00.3"],
    );
    assert_eq!(
        specs(&r),
        vec![("/dev/vhost-vdpa-1".into(), "/dev/vhost-vdpa-1".into())]
    );
    let v = info(&r, "PCIDEVICE_INTEL_COM_V");
    assert!(v["0000:5e:00.3"].get("vhost").is_none(), "{v}");
}

#[test]
fn an_empty_parent_device_is_left_out_of_the_vdpa_info() {
    let v = serde_json::to_value(sriov_selector_pools::VdpaInfo {
        parent_device: String::new(),
        driver: "virtio".into(),
        path: None,
        pci_address: "0000:5e:00.3".into(),
    })
    .unwrap();
    assert_eq!(
        v,
        json!({"driver": "virtio", "pci-address": "0000:5e:00.3"})
    );
}
