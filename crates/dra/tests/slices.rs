//! Cutting a node's pool into ResourceSlices and planning the writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::resource::v1::ResourceSlice;
use sriov_dra::attributes::HostFacts;
use sriov_dra::devices::Inventory;
use sriov_dra::slices::{DesiredPool, MAX_DEVICES_PER_SLICE, PoolOwner, plan, slice_name};

fn device_names(slices: &[ResourceSlice]) -> Vec<String> {
    slices
        .iter()
        .flat_map(|s| s.spec.devices.iter().flatten().map(|d| d.name.clone()))
        .collect()
}

/// What the API server would hold after applying `slices`.
fn as_published(slices: Vec<ResourceSlice>) -> Vec<ResourceSlice> {
    slices
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            s.metadata.resource_version = Some(format!("{}", 100 + i));
            s.metadata.uid = Some(format!("uid-{i}"));
            s
        })
        .collect()
}

#[test]
fn three_hundred_devices_make_three_full_slices_of_one_generation() {
    let slices = pool(&inventory(300)).slices(7);
    assert_eq!(slices.len(), 3);
    let sizes: Vec<usize> = slices
        .iter()
        .map(|s| s.spec.devices.as_ref().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [128, 128, 44]);
    assert!(sizes.iter().all(|n| *n <= MAX_DEVICES_PER_SLICE));
    for (i, slice) in slices.iter().enumerate() {
        assert_eq!(slice.spec.pool.resource_slice_count, 3);
        assert_eq!(slice.spec.pool.generation, 7);
        assert_eq!(slice.spec.pool.name, NODE);
        assert_eq!(slice.spec.driver, DRIVER);
        assert_eq!(slice.spec.node_name.as_deref(), Some(NODE));
        assert_eq!(
            slice.metadata.name.as_deref(),
            Some(slice_name(NODE, DRIVER, i).as_str())
        );
        assert!(slice.metadata.owner_references.is_none());
    }
    let names = device_names(&slices);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "devices are sorted across slices");
    assert_eq!(names.len(), 300);
}

#[test]
fn slices_are_the_same_whatever_order_devices_arrive_in() {
    let forward = Inventory::from_devices((0..200).map(vf));
    let backward = Inventory::from_devices((0..200).rev().map(vf));
    assert_eq!(pool(&forward).slices(1), pool(&backward).slices(1));
}

#[test]
fn an_unhealthy_device_is_withdrawn_and_a_filter_is_honoured() {
    let mut devices: Vec<_> = (0..10).map(vf).collect();
    devices[4].unhealthy = Some("link down".into());
    let sick = devices[4].name.clone();
    let filtered = devices[5].name.clone();
    let inventory = Inventory::from_devices(devices);
    let pool = DesiredPool::new(
        owner(),
        &inventory,
        |d| d.name != filtered,
        |_| HostFacts::default(),
    )
    .unwrap();
    let names = device_names(&pool.slices(1));
    assert_eq!(names.len(), 8);
    assert!(!names.contains(&sick));
    assert!(!names.contains(&filtered));
}

#[test]
fn an_empty_pool_is_one_empty_slice() {
    let slices = pool(&Inventory::default()).slices(1);
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].spec.devices, None);
    assert_eq!(slices[0].spec.pool.resource_slice_count, 1);
}

#[test]
fn a_known_node_uid_makes_the_node_the_owner() {
    let owner = PoolOwner {
        node_uid: Some("1234-5678".into()),
        ..owner()
    };
    let pool = DesiredPool::new(owner, &inventory(1), |_| true, |_| HostFacts::default()).unwrap();
    let refs = pool.slices(1)[0].metadata.owner_references.clone().unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(
        (
            refs[0].kind.as_str(),
            refs[0].name.as_str(),
            refs[0].uid.as_str()
        ),
        ("Node", NODE, "1234-5678")
    );
    assert_eq!(refs[0].api_version, "v1");
    assert_eq!(refs[0].controller, Some(true));
}

#[test]
fn invalid_driver_or_node_names_are_refused() {
    let bad_driver = PoolOwner {
        driver: "Not_A_Domain".into(),
        ..owner()
    };
    assert!(
        DesiredPool::new(
            bad_driver,
            &inventory(1),
            |_| true,
            |_| HostFacts::default()
        )
        .is_err()
    );
    let bad_node = PoolOwner {
        node: "node/1".into(),
        ..owner()
    };
    assert!(DesiredPool::new(bad_node, &inventory(1), |_| true, |_| HostFacts::default()).is_err());
}

#[test]
fn generation_is_bumped_only_when_the_pool_changes() {
    let desired = pool(&inventory(300));
    let first = plan(&desired, &[]);
    assert_eq!(first.generation, 1);
    assert_eq!(first.create.len(), 3);
    assert!(first.update.is_empty() && first.delete.is_empty());

    let published = as_published(first.create);
    let again = plan(&desired, &published);
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(again.generation, 1);

    // One device fewer: every slice rewritten at generation 2, in place.
    let smaller = pool(&Inventory::from_devices((1..300).map(vf)));
    let changed = plan(&smaller, &published);
    assert_eq!(changed.generation, 2);
    assert_eq!(changed.update.len(), 3);
    assert!(changed.create.is_empty() && changed.delete.is_empty());
    assert!(changed.update.iter().all(|s| s.spec.pool.generation == 2));
    assert_eq!(
        changed.update[0].metadata.resource_version.as_deref(),
        Some("100")
    );

    // Down to 200 devices: two slices updated, the third deleted.
    let shrunk = plan(&pool(&inventory(200)), &published);
    assert_eq!(shrunk.generation, 2);
    assert_eq!(shrunk.update.len(), 2);
    assert_eq!(shrunk.delete, [slice_name(NODE, DRIVER, 2)]);
    assert!(
        shrunk
            .update
            .iter()
            .all(|s| s.spec.pool.resource_slice_count == 2)
    );
}

#[test]
fn a_slice_edited_by_someone_else_is_rewritten_at_the_next_generation() {
    let desired = pool(&inventory(10));
    let mut published = as_published(desired.slices(4));
    published[0].spec.devices.as_mut().unwrap().pop();
    let fixed = plan(&desired, &published);
    assert_eq!(fixed.generation, 5);
    assert_eq!(fixed.update.len(), 1);
    assert_eq!(fixed.update[0].spec.devices.as_ref().unwrap().len(), 10);
}

#[test]
fn foreign_named_slices_of_ours_are_deleted() {
    let desired = pool(&inventory(10));
    let mut stray = as_published(desired.slices(1)).remove(0);
    stray.metadata.name = Some("node-1-old-abcde".into());
    let p = plan(&desired, &[stray]);
    assert_eq!(p.delete, ["node-1-old-abcde"]);
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.generation, 2);
}
