//! Discovery, selectors, assignment and runtime changes on fake sysfs trees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use sriov_deviceplugin::Backend;
use sriov_selector_pools::{LinkTable, NoLinkHealth, SkipReason, Verdict};

#[test]
fn vendor_and_driver_select_the_x710_vfs_and_pfs_with_vfs_are_skipped() {
    let lab = Lab::new();
    let got = lab.select(r#"{"vendors":["8086"],"drivers":["iavf"]}"#);
    let mut want = strings(&X710_PORT0_VFS);
    want.extend(strings(&X710_PORT1_VFS));
    assert_eq!(got, want);

    let m =
        lab.manager(r#"{"resourceList":[{"resourceName":"p","selectors":{"vendors":["8086"]}}]}"#);
    let ex = m.explain().unwrap();
    let pf = ex
        .devices
        .iter()
        .find(|(d, _)| d.address == addr("0000:3b:00.0"))
        .unwrap();
    assert_eq!(pf.1, Verdict::Skipped(SkipReason::PfWithVfs { num_vfs: 4 }));
    // The 82576 PF has no VFs enabled, so it is a candidate like any NIC.
    assert!(
        m.pools()[0]
            .members()
            .iter()
            .any(|m| m.device.address == addr("0000:01:00.0"))
    );
}

#[test]
fn a_nic_carrying_the_default_route_is_left_to_the_host() {
    let lab = Lab::new();
    assert_eq!(
        lab.select(r#"{"drivers":["e1000e"]}"#),
        strings(&["0000:00:1f.6"])
    );
    lab.default_route("eno1");
    assert!(lab.select(r#"{"drivers":["e1000e"]}"#).is_empty());
    let m = lab.manager(r#"{"resourceList":[{"resourceName":"p","selectors":{}}]}"#);
    let ex = m.explain().unwrap();
    let (_, verdict) = ex
        .devices
        .iter()
        .find(|(d, _)| d.address == addr("0000:00:1f.6"))
        .unwrap();
    assert_eq!(
        *verdict,
        Verdict::Skipped(SkipReason::DefaultRoute {
            netdev: "eno1".into()
        })
    );
}

#[test]
fn a_device_without_a_driver_is_left_out_as_srdp_does() {
    let lab = Lab::new();
    // 00:14.3 is a network controller (class 0x0280) no driver claims.
    assert!(!lab.select("{}").contains(&"0000:00:14.3".to_string()));
    let m = lab.manager(r#"{"resourceList":[{"resourceName":"p","selectors":{}}]}"#);
    let text = m.explain().unwrap().to_string();
    assert!(
        text.contains("0000:00:14.3 8086:a370 driver=-\n    skipped: no driver is bound to it"),
        "{text}"
    );
}

#[test]
fn an_unreadable_device_is_skipped_and_the_rest_still_pooled() {
    let lab = Lab::new();
    std::fs::write(lab.dev_dir("0000:3b:02.1").join("vendor"), "garbage\n").unwrap();
    let got = lab.select(r#"{"pfNames":["ens785f0"]}"#);
    assert_eq!(
        got,
        strings(&["0000:3b:02.0", "0000:3b:02.2", "0000:3b:02.3"])
    );
    let m = lab.manager(r#"{"resourceList":[{"resourceName":"p","selectors":{}}]}"#);
    let text = m.explain().unwrap().to_string();
    assert!(
        text.contains("0000:3b:02.1\n    skipped: its sysfs facts are unreadable"),
        "{text}"
    );
}

#[test]
fn each_selector_filters_as_srdp_does() {
    let lab = Lab::new();
    lab.write("0000:3b:02.1", "acpi_index", "101\n");
    lab.make_rdma("0000:5e:00.3", "mlx5_3", 3);
    lab.make_infiniband("0000:5e:00.3");
    lab.make_vdpa("0000:5e:00.2", "vhost_vdpa", 0);
    lab.make_vdpa_under("0000:3b:0a.3", "mlx5_core.vnet.7", "virtio_vdpa", 3);
    let mut lab = lab;
    lab.ddp
        .insert(addr("0000:3b:0a.1"), "GTPv1-C/U IPv4/IPv6 payload".into());

    let cases: &[(&str, &[&str])] = &[
        (r#"{"vendors":["15b3"]}"#, &CX5_VFS),
        (r#"{"devices":["1018"]}"#, &CX5_VFS),
        (
            r#"{"devices":["154C"],"pfNames":["ens785f1"]}"#,
            &X710_PORT1_VFS,
        ),
        (r#"{"drivers":["mlx5_core"]}"#, &CX5_VFS),
        (
            r#"{"pciAddresses":["0000:3b:02.3","3b:0a.0"]}"#,
            &["0000:3b:02.3", "0000:3b:0a.0"],
        ),
        (r#"{"acpiIndexes":["101"]}"#, &["0000:3b:02.1"]),
        // Names compare case-insensitively; ranges take VF indexes.
        (
            r#"{"pfNames":["ENS785F0#0,2-3"]}"#,
            &["0000:3b:02.0", "0000:3b:02.2", "0000:3b:02.3"],
        ),
        // Every entry naming a PF counts (SRDP reads only the first).
        (
            r#"{"pfNames":["ens785f1#0","ens785f1#3"]}"#,
            &["0000:3b:0a.0", "0000:3b:0a.3"],
        ),
        (r#"{"rootDevices":["0000:5e:00.0#1"]}"#, &["0000:5e:00.3"]),
        (r#"{"rootDevices":["0000:3b:00.1"]}"#, &X710_PORT1_VFS),
        (r#"{"linkTypes":["infiniband"]}"#, &["0000:5e:00.3"]),
        (
            r#"{"linkTypes":["ether"],"vendors":["15b3"]}"#,
            &["0000:5e:00.2"],
        ),
        (
            r#"{"ddpProfiles":["GTPv1-C/U IPv4/IPv6 payload"]}"#,
            &["0000:3b:0a.1"],
        ),
        (r#"{"pKeys":["0xffff"]}"#, &["0000:5e:00.3"]),
        (r#"{"isRdma":true}"#, &["0000:5e:00.3"]),
        (r#"{"vdpaType":"vhost"}"#, &["0000:5e:00.2"]),
        (r#"{"vdpaType":"virtio"}"#, &["0000:3b:0a.3"]),
        // PFs have no PF: pfNames and rootDevices never take them.
        (r#"{"pfNames":["enp1s0"]}"#, &[]),
    ];
    for (selectors, want) in cases {
        assert_eq!(
            lab.select(selectors),
            strings(want),
            "selectors {selectors}"
        );
    }
    assert_eq!(
        lab.select_typed(r#"{"vendors":["8086"]}"#, "accelerator"),
        strings(&["0000:6b:00.0"])
    );
}

#[test]
fn the_first_pool_and_the_first_selector_that_match_win() {
    let lab = Lab::new();
    let m = lab.manager(
        r#"{"resourceList":[
            {"resourceName":"port0","selectors":[{"pfNames":["ens785f0#0-1"]},{"pfNames":["ens785f0"]}]},
            {"resourceName":"all_x710","selectors":{"drivers":["iavf"]}}
        ]}"#,
    );
    let first = m.pools()[0].members();
    let ids: Vec<(String, usize)> = first
        .iter()
        .map(|m| (m.device.address.to_string(), m.selector))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("0000:3b:02.0".into(), 0),
            ("0000:3b:02.1".into(), 0),
            ("0000:3b:02.2".into(), 1),
            ("0000:3b:02.3".into(), 1)
        ]
    );
    let second: Vec<String> = m.pools()[1]
        .members()
        .iter()
        .map(|m| m.device.address.to_string())
        .collect();
    assert_eq!(second, strings(&X710_PORT1_VFS));
    let text = m.explain().unwrap().to_string();
    assert!(text.contains("0000:3b:0a.0"), "{text}");
    assert!(
        text.contains(
            "not intel.com/port0: selectors[0]: pfNames: PF ens785f1 is not in [ens785f0#0-1]"
        ),
        "{text}"
    );
    assert!(
        text.contains("-> intel.com/all_x710 (selectors[0])"),
        "{text}"
    );
}

#[test]
fn devices_carry_numa_node_and_pf_group_unless_topology_is_excluded() {
    let lab = Lab::new();
    let m = lab.manager(
        r#"{"resourceList":[
            {"resourceName":"x","selectors":{"drivers":["iavf"]}},
            {"resourceName":"cx","excludeTopology":true,"selectors":{"drivers":["mlx5_core"]}}
        ]}"#,
    );
    let x = m.pools()[0].devices().borrow().clone();
    assert_eq!(x[0].numa_node, Some(0));
    assert_eq!(x[0].group.as_deref(), Some("0000:3b:00.0"));
    assert_eq!(x[4].group.as_deref(), Some("0000:3b:00.1"));
    let cx = m.pools()[1].devices().borrow().clone();
    assert_eq!(cx.len(), 2);
    assert!(cx.iter().all(|d| d.numa_node.is_none()));
}

#[test]
fn a_pool_gains_vfs_enabled_after_start_and_loses_the_pf() {
    let lab = Lab::new();
    let m = lab.manager(
        r#"{"resourceList":[
            {"resourceName":"igb_vf","selectors":{"drivers":["igbvf"]}},
            {"resourceName":"igb_pf","selectors":{"drivers":["igb"]}}
        ]}"#,
    );
    let mut vf_rx = m.pools()[0].devices();
    assert!(vf_rx.borrow_and_update().is_empty());
    assert_eq!(m.pools()[1].devices().borrow().len(), 1);

    lab.fake
        .sysfs()
        .set_num_vfs(addr("0000:01:00.0"), 2)
        .unwrap();
    assert!(m.refresh().unwrap());
    assert!(
        vf_rx.has_changed().unwrap(),
        "the VF pool published its new devices"
    );
    let ids: Vec<String> = vf_rx
        .borrow_and_update()
        .iter()
        .map(|d| d.id.clone())
        .collect();
    assert_eq!(ids, strings(&["0000:01:10.0", "0000:01:10.2"]));
    assert!(
        m.pools()[1].devices().borrow().is_empty(),
        "a PF with VFs leaves its pool"
    );

    // Nothing changed: nothing is published.
    assert!(!m.refresh().unwrap());
    assert!(!vf_rx.has_changed().unwrap());
}

#[test]
fn a_vf_rebound_to_vfio_moves_to_the_pool_that_selects_vfio() {
    let lab = Lab::new();
    let m = lab.manager(
        r#"{"resourceList":[
            {"resourceName":"kernel","selectors":{"drivers":["iavf"]}},
            {"resourceName":"dpdk","selectors":{"drivers":["vfio-pci"]}}
        ]}"#,
    );
    assert_eq!(m.pools()[0].devices().borrow().len(), 8);
    lab.bind("0000:3b:02.3", "vfio-pci");
    assert!(m.refresh().unwrap());
    assert_eq!(m.pools()[0].devices().borrow().len(), 7);
    let dpdk: Vec<String> = m.pools()[1]
        .devices()
        .borrow()
        .iter()
        .map(|d| d.id.clone())
        .collect();
    assert_eq!(dpdk, strings(&["0000:3b:02.3"]));
}

#[test]
fn pf_link_down_makes_its_vfs_unhealthy_until_it_comes_back() {
    let lab = Lab::new();
    let links = Arc::new(LinkTable::new());
    links.replace_all([
        ("ens785f0".to_string(), true),
        ("ens785f1".to_string(), true),
    ]);
    let m = lab.manager_with(
        r#"{"resourceList":[{"resourceName":"x","selectors":{"drivers":["iavf"]}}]}"#,
        false,
        links.clone(),
    );
    let mut rx = m.pools()[0].devices();
    assert!(rx.borrow_and_update().iter().all(|d| d.healthy));

    links.set("ens785f1", false);
    assert!(m.refresh().unwrap());
    let list = rx.borrow_and_update().clone();
    let unhealthy: Vec<&str> = list
        .iter()
        .filter(|d| !d.healthy)
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(unhealthy, X710_PORT1_VFS.to_vec());
    let why = m.pools()[0].members()[4].unhealthy.clone();
    assert_eq!(why.as_deref(), Some("link ens785f1 is down"));

    links.set("ens785f1", true);
    assert!(m.refresh().unwrap());
    assert!(rx.borrow_and_update().iter().all(|d| d.healthy));
}

#[test]
fn a_vanished_vf_netdev_is_unhealthy_unless_a_pod_holds_the_vf() {
    let lab = Lab::new();
    let links = Arc::new(LinkTable::new());
    let names = ["ens785f0", "ens785f1", "enp59s2", "enp59s2f1"];
    links.replace_all(names.iter().map(|n| (n.to_string(), true)));
    let m = lab.manager_with(
        r#"{"resourceList":[{"resourceName":"x","selectors":{"pfNames":["ens785f0#0-1"]}}]}"#,
        false,
        links.clone(),
    );
    let pool = m.pools()[0].clone();
    pool.allocate(&[vec!["0000:3b:02.1".to_string()]]).unwrap();
    // Both netdevs leave our namespace: 02.1 into its pod, 02.0 because its VF broke.
    for (dev, name) in [("0000:3b:02.0", "enp59s2"), ("0000:3b:02.1", "enp59s2f1")] {
        std::fs::remove_dir_all(lab.dev_dir(dev).join("net")).unwrap();
        links.remove(name);
    }
    m.refresh().unwrap();
    let health: Vec<(String, bool)> = pool
        .devices()
        .borrow()
        .iter()
        .map(|d| (d.id.clone(), d.healthy))
        .collect();
    assert_eq!(
        health,
        vec![
            ("0000:3b:02.0".into(), false),
            ("0000:3b:02.1".into(), true)
        ]
    );
    // Still reported on the next pass, not forgotten.
    m.refresh().unwrap();
    assert!(!pool.devices().borrow()[0].healthy);
}

#[test]
fn no_link_table_means_everything_stays_healthy() {
    let lab = Lab::new();
    let links = Arc::new(LinkTable::new());
    let m = lab.manager_with(
        r#"{"resourceList":[{"resourceName":"x","selectors":{"drivers":["iavf"]}}]}"#,
        false,
        links,
    );
    assert!(m.pools()[0].devices().borrow().iter().all(|d| d.healthy));
    let m = lab.manager_with(
        r#"{"resourceList":[{"resourceName":"x","selectors":{"drivers":["iavf"]}}]}"#,
        false,
        Arc::new(NoLinkHealth),
    );
    assert!(m.pools()[0].devices().borrow().iter().all(|d| d.healthy));
}

#[test]
fn auxnetdevice_pools_take_sub_functions_by_type_pf_and_index() {
    let lab = Lab::new();
    lab.make_sf("0000:5e:00.0", "mlx5_core.sf.2", 2, "enp94s0f0s2");
    lab.make_sf("0000:5e:00.0", "mlx5_core.sf.3", 3, "enp94s0f0s3");
    lab.make_rdma_under("0000:5e:00.0", "mlx5_core.sf.3", "mlx5_5", 5);
    // Not a sub-function (no sfnum): never offered, as in SRDP.
    lab.mkdir("0000:5e:00.0", "mlx5_core.eth.0/net/eth9");
    let m = lab.manager(
        r#"{"resourceList":[
            {"resourceName":"sf","deviceType":"auxNetDevice","selectors":{"auxTypes":["sf"],"pfNames":["ens1f0np0#2"]}},
            {"resourceName":"sf_rdma","deviceType":"auxNetDevice","selectors":{"auxTypes":["sf"],"isRdma":true}},
            {"resourceName":"cx","selectors":{"vendors":["15b3"]}}
        ]}"#,
    );
    let ids = |i: usize| -> Vec<String> {
        m.pools()[i]
            .devices()
            .borrow()
            .iter()
            .map(|d| d.id.clone())
            .collect()
    };
    assert_eq!(ids(0), strings(&["mlx5_core.sf.2"]));
    assert_eq!(ids(1), strings(&["mlx5_core.sf.3"]));
    assert_eq!(
        ids(2),
        strings(&CX5_VFS),
        "netDevice pools never take sub-functions"
    );
    let sf = m.pools()[0].devices().borrow()[0].clone();
    assert_eq!(sf.group.as_deref(), Some("0000:5e:00.0"));
    assert_eq!(sf.numa_node, Some(1));

    let r = m.pools()[1]
        .allocate(&[strings(&["mlx5_core.sf.3"])])
        .unwrap()
        .remove(0);
    assert_eq!(r.envs["PCIDEVICE_INTEL_COM_SF_RDMA"], "mlx5_core.sf.3");
    let info: serde_json::Value =
        serde_json::from_str(&r.envs["PCIDEVICE_INTEL_COM_SF_RDMA_INFO"]).unwrap();
    assert_eq!(
        info["mlx5_core.sf.3"]["generic"]["deviceID"],
        "mlx5_core.sf.3"
    );
    assert_eq!(info["mlx5_core.sf.3"]["rdma"]["rdma_dev"], "mlx5_5");
    assert!(
        !lab.devinfo_dir().exists(),
        "SRDP writes no device-info file for sub-functions"
    );

    let text = m.explain().unwrap().to_string();
    assert!(!text.contains("mlx5_core.eth.0"), "{text}");
    assert!(
        text.contains("not intel.com/sf: selectors[0]: pfNames: VF index 3 of ens1f0np0 is outside [ens1f0np0#2]"),
        "{text}"
    );
}

#[test]
fn a_pf_without_vfs_is_judged_by_its_own_link_until_a_pod_holds_it() {
    let lab = Lab::new();
    let links = Arc::new(LinkTable::new());
    links.replace_all([("eno1".to_string(), false)]);
    let m = lab.manager_with(
        r#"{"resourceList":[{"resourceName":"nic","selectors":{"drivers":["e1000e"]}}]}"#,
        false,
        links.clone(),
    );
    let pool = m.pools()[0].clone();
    assert!(!pool.devices().borrow()[0].healthy);
    assert_eq!(
        pool.members()[0].unhealthy.as_deref(),
        Some("link eno1 is down")
    );
    pool.allocate(&[strings(&["0000:00:1f.6"])]).unwrap();
    m.refresh().unwrap();
    assert!(pool.devices().borrow()[0].healthy);
}

#[test]
fn ddp_profiles_come_from_devlink_or_ddptool_and_only_when_selected() {
    use sriov_selector_pools::{Config, DdpTools, PoolManager};
    use std::os::unix::fs::PermissionsExt;

    let lab = Lab::new();
    let bin = lab.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = lab.path().join("calls");
    let script = |name: &str, body: &str| {
        let p = bin.join(name);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho \"$@\" >> {}\n{body}", calls.display()),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let devlink = script(
        "devlink",
        r#"[ "$4" = "pci/0000:3b:00.1" ] || exit 1
echo '{"info":{"pci/0000:3b:00.1":{"driver":"i40e","versions":{"running":{"fw.app.name":"ICE COMMS Package"}}}}}'"#,
    );
    let ddptool = script(
        "ddptool",
        r#"[ "$5" = "0000:3b:02.0" ] || exit 8
echo '{"DDPInventory":{"DDPpackage":{"name":"GTPv1-C/U IPv4/IPv6 payload"}}}'"#,
    );
    let tools = Arc::new(DdpTools::with_commands(devlink, ddptool));
    let run = |selectors: &str| -> Vec<String> {
        let json =
            format!(r#"{{"resourceList":[{{"resourceName":"p","selectors":{selectors}}}]}}"#);
        let config = Config::parse(&json, "intel.com").unwrap();
        let host = lab.host().with_extra_facts(tools.clone());
        let m = PoolManager::new(&config, host, lab.settings(false), Arc::new(NoLinkHealth));
        m.refresh().unwrap();
        m.pools()[0]
            .members()
            .iter()
            .map(|m| m.device.address.to_string())
            .collect()
    };

    assert_eq!(run(r#"{"drivers":["iavf"]}"#).len(), 8);
    assert!(
        !calls.exists(),
        "no tool runs without a ddpProfiles selector"
    );

    assert_eq!(
        run(r#"{"ddpProfiles":["ICE COMMS Package"]}"#),
        strings(&X710_PORT1_VFS)
    );
    assert_eq!(
        run(r#"{"ddpProfiles":["GTPv1-C/U IPv4/IPv6 payload"]}"#),
        strings(&["0000:3b:02.0"])
    );
    let n = std::fs::read_to_string(&calls).unwrap().lines().count();
    run(r#"{"ddpProfiles":["ICE COMMS Package"]}"#);
    let again = std::fs::read_to_string(&calls).unwrap().lines().count();
    assert_eq!(n, again, "answers are kept per device and driver");
}

#[test]
fn in_switchdev_mode_the_uplink_representor_names_the_pf() {
    let lab = Lab::new();
    // VF representors sort before the uplink; phys_port_name tells them apart.
    lab.write("0000:5e:00.0", "net/ens1f0_0/type", "1\n");
    lab.write("0000:5e:00.0", "net/ens1f0_0/phys_port_name", "pf0vf0\n");
    lab.write("0000:5e:00.0", "net/ens1f0np0/phys_port_name", "p0\n");
    assert_eq!(
        lab.select(r#"{"pfNames":["ens1f0np0"]}"#),
        strings(&CX5_VFS)
    );
    assert!(lab.select(r#"{"pfNames":["ens1f0_0"]}"#).is_empty());
}

/// Exclusive RDMA mode: a VF handed to a pod takes its `infiniband/` files along, and after a
/// restart SRDP still counts it an RDMA device by devlink's `enable_rdma`; so do we, asking
/// devlink only for an `isRdma` selector's devices that have no RDMA files.
#[test]
fn is_rdma_takes_a_device_devlink_says_has_rdma_enabled() {
    use sriov_selector_pools::{Config, DdpTools, PoolManager};
    use std::os::unix::fs::PermissionsExt;

    let lab = Lab::new();
    lab.make_rdma("0000:5e:00.2", "mlx5_2", 2);
    let bin = lab.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = lab.path().join("calls");
    let devlink = bin.join("devlink");
    std::fs::write(
        &devlink,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\n{}",
            calls.display(),
            r#"[ "$5" = "pci/0000:5e:00.3" ] || exit 1
echo '{"param":{"pci/0000:5e:00.3":[{"name":"enable_rdma","type":"generic","values":[{"cmode":"driverinit","value":true}]}]}}'"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&devlink, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tools = Arc::new(DdpTools::with_commands(devlink, bin.join("no-ddptool")));
    let run = |selectors: &str| -> Vec<String> {
        let json =
            format!(r#"{{"resourceList":[{{"resourceName":"r","selectors":{selectors}}}]}}"#);
        let config = Config::parse(&json, "nvidia.com").unwrap();
        let host = lab.host().with_extra_facts(tools.clone());
        let m = PoolManager::new(&config, host, lab.settings(false), Arc::new(NoLinkHealth));
        m.refresh().unwrap();
        m.pools()[0]
            .members()
            .iter()
            .map(|m| m.device.address.to_string())
            .collect()
    };
    assert_eq!(
        run(r#"{"vendors":["15b3"],"drivers":["mlx5_core"]}"#).len(),
        2
    );
    assert!(!calls.exists(), "devlink is not asked without isRdma");
    assert_eq!(
        run(r#"{"vendors":["15b3"],"drivers":["mlx5_core"],"isRdma":true}"#),
        strings(&CX5_VFS)
    );
    let asked = std::fs::read_to_string(&calls).unwrap();
    assert!(
        !asked.contains("0000:5e:00.2"),
        "a device with RDMA files needs no devlink: {asked}"
    );
}
