//! PFs in switchdev mode: representor netdevs under the PF's `net/` are never a device's
//! interfaces (not offered, not matched, not followed for health); the uplink representor
//! names the PF, as SRDP's `GetPfName` does through sriovnet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use sriov_selector_pools::LinkTable;

#[test]
fn vfs_of_a_switchdev_pf_keep_their_pool_and_no_representor_is_a_device_netdev() {
    let lab = Lab::new();
    let pf = addr("0000:5e:00.0");
    let reps = lab.fake.switchdev(pf, 0).unwrap();
    assert_eq!(reps, ["ens1f0np0_0", "ens1f0np0_1"]);
    assert_eq!(
        lab.select(r#"{"pfNames":["ens1f0np0"]}"#),
        strings(&CX5_VFS)
    );
    for rep in &reps {
        let by_rep = format!(r#"{{"pfNames":["{rep}"]}}"#);
        assert!(lab.select(&by_rep).is_empty(), "{rep}");
    }
    let m = lab.manager(
        r#"{"resourceList":[{"resourceName":"cx","selectors":{"drivers":["mlx5_core"]}}]}"#,
    );
    let members = m.pools()[0].members();
    let ids: Vec<String> = members.iter().map(|m| m.device.id()).collect();
    assert_eq!(ids, strings(&CX5_VFS), "the PF (with VFs) is not offered");
    for member in &members {
        assert_eq!(member.device.pf_name.as_deref(), Some("ens1f0np0"));
        assert!(
            member.device.netdevs.iter().all(|n| !reps.contains(n)),
            "{:?}",
            member.device.netdevs
        );
    }
    let text = m.explain().unwrap().to_string();
    for rep in &reps {
        assert!(!text.contains(rep.as_str()), "{rep} in:\n{text}");
    }
}

/// A PF without VFs whose e-switch is in switchdev mode (sub-functions have representors on
/// it): offered with its uplink only, and its health follows the uplink, not a representor
/// that sorts first or goes away with its sub-function.
#[test]
fn a_switchdev_pf_without_vfs_is_offered_with_its_uplink_and_healthy_by_it() {
    let lab = Lab::new();
    let pf = addr("0000:01:00.0");
    assert!(lab.fake.switchdev(pf, 0).unwrap().is_empty());
    lab.fake.add_representor(pf, "en0pf0sf1", "pf0sf1").unwrap();
    let links = Arc::new(LinkTable::new());
    links.replace_all([
        ("enp1s0".to_string(), true),
        ("en0pf0sf1".to_string(), false),
    ]);
    let m = lab.manager_with(
        r#"{"resourceList":[{"resourceName":"igb_pf","selectors":{"drivers":["igb"]}}]}"#,
        false,
        links.clone(),
    );
    let members = m.pools()[0].members();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].device.netdevs, ["enp1s0"]);
    assert_eq!(
        members[0].unhealthy, None,
        "a representor's link is not the PF's"
    );

    // The sub-function and its representor go: nothing of the PF vanished.
    std::fs::remove_dir_all(lab.fake.sysfs().device_dir(pf).join("net/en0pf0sf1")).unwrap();
    links.remove("en0pf0sf1");
    m.refresh().unwrap();
    assert_eq!(m.pools()[0].members()[0].unhealthy, None);

    links.set("enp1s0", false);
    m.refresh().unwrap();
    assert_eq!(
        m.pools()[0].members()[0].unhealthy.as_deref(),
        Some("link enp1s0 is down")
    );
}

/// A representor but no `p<N>` uplink (a driver that names no physical port): the PF is named
/// by its own interface, never by a representor that sorts before it.
#[test]
fn without_an_uplink_the_pf_is_named_by_an_interface_that_is_no_representor() {
    let lab = Lab::new();
    lab.fake
        .add_representor(addr("0000:5e:00.0"), "a_rep", "pf0vf0")
        .unwrap();
    let m = lab.manager(
        r#"{"resourceList":[{"resourceName":"cx","selectors":{"drivers":["mlx5_core"]}}]}"#,
    );
    let names: Vec<Option<String>> = m.pools()[0]
        .members()
        .into_iter()
        .map(|m| m.device.pf_name)
        .collect();
    assert_eq!(
        names,
        [Some("ens1f0np0".to_string()), Some("ens1f0np0".to_string())]
    );
}
