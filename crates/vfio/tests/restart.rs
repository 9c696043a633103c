//! Grants outliving the process that made them: taken over after a restart, and revoked without
//! taking a shared node from another connection of the same container.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{KernelLikeWriter, Tree};
use sriov_vfio::{CgroupDevices, DeviceNumber, Grant};

/// `/dev/vfio/vfio`: one node, shared by every VFIO connection of a container.
const CONTAINER: DeviceNumber = DeviceNumber::new(10, 196);
const GROUP_A: DeviceNumber = DeviceNumber::new(243, 3);
const GROUP_B: DeviceNumber = DeviceNumber::new(243, 4);
const POD: &str = "kubepods/besteffort/pod1/ctr1";

/// Two VFIO connections of one container granted by a process that then died: what it
/// recorded, read back from its state.
fn granted_before_a_restart() -> (Tree, Arc<KernelLikeWriter>, Grant, Grant) {
    let tree = Tree::new();
    tree.cgroup(POD);
    let writer = KernelLikeWriter::new();
    let before = CgroupDevices::with_writer(tree.cgroup_root(), writer.clone()).unwrap();
    let a = before.grant_all(POD, &[CONTAINER, GROUP_A]).unwrap();
    let b = before.grant_all(POD, &[CONTAINER, GROUP_B]).unwrap();
    assert_eq!(b.rules().len(), 2, "the shared node is counted for both");
    let read_back = |g: &Grant| serde_json::from_str(&serde_json::to_string(g).unwrap()).unwrap();
    let (a, b) = (read_back(&a), read_back(&b));
    drop(before);
    (tree, writer, a, b)
}

fn later(tree: &Tree, writer: &Arc<KernelLikeWriter>) -> CgroupDevices {
    CgroupDevices::with_writer(tree.cgroup_root(), writer.clone()).unwrap()
}

#[test]
fn closing_one_adopted_connection_keeps_the_shared_node_until_the_last_one_closes() {
    let (tree, writer, a, b) = granted_before_a_restart();
    let dir = tree.cgroup_root().join(POD);
    let cg = later(&tree, &writer);
    assert!(cg.adopt(&a));
    assert!(cg.adopt(&b));
    assert_eq!(cg.holders(POD, CONTAINER), 2);

    cg.revoke_recorded(&a).unwrap();
    assert!(!writer.is_allowed(&dir, GROUP_A), "the closed VF's group");
    assert!(writer.is_allowed(&dir, GROUP_B), "the other VF's group");
    assert!(
        writer.is_allowed(&dir, CONTAINER),
        "/dev/vfio/vfio, which the other connection still opens"
    );

    cg.revoke_recorded(&b).unwrap();
    assert!(!writer.is_allowed(&dir, GROUP_B));
    assert!(!writer.is_allowed(&dir, CONTAINER));
    assert_eq!(cg.holders(POD, CONTAINER), 0);
}

#[test]
fn adopting_a_grant_twice_counts_it_once() {
    let (tree, writer, a, b) = granted_before_a_restart();
    let dir = tree.cgroup_root().join(POD);
    let cg = later(&tree, &writer);
    assert!(cg.adopt(&a));
    assert!(!cg.adopt(&a), "already live");
    assert!(cg.adopt(&b));
    assert_eq!(cg.holders(POD, CONTAINER), 2);
    cg.revoke_recorded(&a).unwrap();
    // A second revoke of the same grant must not take the other's count.
    cg.revoke_recorded(&a).unwrap();
    assert!(writer.is_allowed(&dir, CONTAINER));
    assert_eq!(cg.holders(POD, CONTAINER), 1);
}

#[test]
fn a_dead_holders_grant_leaves_the_shared_node_to_a_live_one() {
    let (tree, writer, a, b) = granted_before_a_restart();
    let dir = tree.cgroup_root().join(POD);
    let cg = later(&tree, &writer);
    // `a` was established and is taken over; `b`'s Request never finished and is rolled back.
    cg.adopt(&a);
    cg.revoke_recorded(&b).unwrap();
    assert!(
        !writer.is_allowed(&dir, GROUP_B),
        "the rolled-back VF's group"
    );
    assert!(writer.is_allowed(&dir, CONTAINER));
    assert!(writer.is_allowed(&dir, GROUP_A));
    assert_eq!(cg.holders(POD, CONTAINER), 1, "b never counted here");
}

#[test]
fn a_dead_holders_grant_never_takes_a_node_granted_after_the_restart() {
    let (tree, writer, a, b) = granted_before_a_restart();
    let dir = tree.cgroup_root().join(POD);
    let cg = later(&tree, &writer);
    cg.revoke_recorded(&a).unwrap();
    // A new connection of the same container after the restart.
    let fresh = cg.grant_all(POD, &[CONTAINER, GROUP_A]).unwrap();
    cg.revoke_recorded(&b).unwrap();
    assert!(!writer.is_allowed(&dir, GROUP_B));
    assert!(writer.is_allowed(&dir, CONTAINER), "the new connection's");
    assert!(writer.is_allowed(&dir, GROUP_A));
    cg.revoke_grant(&fresh).unwrap();
    assert!(!writer.is_allowed(&dir, CONTAINER));
}

#[test]
fn a_failed_deny_of_an_adopted_grant_is_retried_without_taking_anothers_count() {
    let (tree, writer, a, b) = granted_before_a_restart();
    let dir = tree.cgroup_root().join(POD);
    let cg = later(&tree, &writer);
    cg.adopt(&a);
    cg.adopt(&b);
    *writer.fail_rule.lock().unwrap() = Some(GROUP_A.cgroup_rule());
    let e = cg.revoke_recorded(&a).unwrap_err();
    assert!(e.to_string().contains("devices.deny"), "{e}");
    assert_eq!(cg.holders(POD, GROUP_A), 1, "kept for the retry");
    assert_eq!(cg.holders(POD, CONTAINER), 1, "released once");
    *writer.fail_rule.lock().unwrap() = None;
    cg.revoke_recorded(&a).unwrap();
    assert!(!writer.is_allowed(&dir, GROUP_A));
    assert!(writer.is_allowed(&dir, CONTAINER));
    assert_eq!(cg.holders(POD, CONTAINER), 1, "still b's");
}
