//! The publisher against the fake API server, through real HTTP and kube-rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use k8s_openapi::api::resource::v1::ResourceSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use sriov_dra::devices::Inventory;
use sriov_dra::publisher::{PublishError, Publisher};
use sriov_dra::slices::slice_name;
use sriov_dra::testing::FakeApiServer;

/// A client built the way the binary builds one from a kubeconfig.
async fn client_from_kubeconfig(server: &FakeApiServer, dir: &std::path::Path) -> kube::Client {
    let path = server.kubeconfig(dir).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn setup() -> (FakeApiServer, Publisher, tempfile::TempDir) {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client_from_kubeconfig(&server, dir.path()).await;
    let publisher = Publisher::new(client, DRIVER, NODE);
    (server, publisher, dir)
}

fn writes(server: &FakeApiServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.is_write())
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn by_name(server: &FakeApiServer) -> Vec<(String, i64, usize)> {
    server
        .slices()
        .into_iter()
        .map(|s| {
            (
                s.metadata.name.unwrap_or_default(),
                s.spec.pool.generation,
                s.spec.devices.map_or(0, |d| d.len()),
            )
        })
        .collect()
}

/// Waits until `check` holds for the server's slices.
async fn eventually(server: &FakeApiServer, what: &str, check: impl Fn(&[ResourceSlice]) -> bool) {
    for _ in 0..200 {
        if check(&server.slices()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}: {:?}", by_name(server));
}

#[tokio::test]
async fn first_publish_creates_and_the_same_publish_writes_nothing() {
    let (server, publisher, _dir) = setup().await;
    let desired = pool(&inventory(300));

    let first = publisher.publish(&desired).await.unwrap();
    assert_eq!(first.generation, 1);
    assert_eq!(first.created.len(), 3);
    assert_eq!(
        by_name(&server),
        [
            (slice_name(NODE, DRIVER, 0), 1, 128),
            (slice_name(NODE, DRIVER, 1), 1, 128),
            (slice_name(NODE, DRIVER, 2), 1, 44),
        ]
    );
    // The list went by field selector, as upstream allows.
    let list = server
        .requests()
        .into_iter()
        .find(|r| r.method == "GET")
        .unwrap();
    assert!(list.query.contains("fieldSelector"), "{list:?}");

    server.clear_requests();
    let again = publisher.publish(&desired).await.unwrap();
    assert!(!again.wrote());
    assert_eq!(again.generation, 1);
    assert_eq!(writes(&server), Vec::<String>::new());
}

#[tokio::test]
async fn a_removed_device_is_an_update_at_the_next_generation_and_shrinking_deletes() {
    let (server, publisher, _dir) = setup().await;
    publisher.publish(&pool(&inventory(300))).await.unwrap();

    let fewer = pool(&Inventory::from_devices((1..300).map(vf)));
    let out = publisher.publish(&fewer).await.unwrap();
    assert_eq!(out.generation, 2);
    assert_eq!(out.updated.len(), 3);
    assert!(out.created.is_empty() && out.deleted.is_empty());
    assert!(server.slices().iter().all(|s| s.spec.pool.generation == 2));
    assert!(
        !server
            .slices()
            .iter()
            .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
            .any(|d| d.name == vf(0).name)
    );

    server.clear_requests();
    let out = publisher.publish(&pool(&inventory(100))).await.unwrap();
    assert_eq!(out.generation, 3);
    assert_eq!(out.deleted.len(), 2);
    assert_eq!(by_name(&server), [(slice_name(NODE, DRIVER, 0), 3, 100)]);
    assert_eq!(server.slices()[0].spec.pool.resource_slice_count, 1);
    let w = writes(&server);
    assert_eq!(
        w.iter().filter(|w| w.starts_with("DELETE")).count(),
        2,
        "{w:?}"
    );
}

#[tokio::test]
async fn a_conflict_is_re_read_and_retried() {
    let (server, publisher, _dir) = setup().await;
    publisher.publish(&pool(&inventory(10))).await.unwrap();
    server.inject_conflicts(2);
    server.clear_requests();
    let out = publisher.publish(&pool(&inventory(9))).await.unwrap();
    assert_eq!(out.updated.len(), 1);
    let puts: Vec<u16> = server
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.status)
        .collect();
    assert_eq!(puts, [409, 409, 200]);
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    assert_eq!(lists, 3, "each retry starts from a fresh list");
    assert_eq!(by_name(&server), [(slice_name(NODE, DRIVER, 0), 2, 9)]);
}

#[tokio::test]
async fn endless_conflicts_give_up_naming_the_slice() {
    let (server, publisher, _dir) = setup().await;
    publisher.publish(&pool(&inventory(10))).await.unwrap();
    server.inject_conflicts(100);
    let err = publisher.publish(&pool(&inventory(9))).await.unwrap_err();
    assert!(matches!(err, PublishError::Conflicts { .. }), "{err}");
    assert!(
        err.to_string().contains(&slice_name(NODE, DRIVER, 0)),
        "{err}"
    );
}

#[tokio::test]
async fn withdraw_deletes_every_slice_of_ours_and_nothing_else() {
    let (server, publisher, dir) = setup().await;
    publisher.publish(&pool(&inventory(300))).await.unwrap();
    // Another node's pool of the same driver must survive.
    let other = Publisher::new(
        client_from_kubeconfig(&server, dir.path()).await,
        DRIVER,
        "node-2",
    );
    let other_pool = sriov_dra::slices::DesiredPool::new(
        sriov_dra::slices::PoolOwner {
            node: "node-2".into(),
            ..owner()
        },
        &inventory(5),
        |_| true,
        |_| Default::default(),
    )
    .unwrap();
    other.publish(&other_pool).await.unwrap();

    let deleted = publisher.withdraw().await.unwrap();
    assert_eq!(deleted.len(), 3);
    let left = server.slices();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].spec.node_name.as_deref(), Some("node-2"));
}

#[tokio::test]
async fn a_pool_of_another_node_is_refused() {
    let (_server, publisher, _dir) = setup().await;
    let foreign = sriov_dra::slices::DesiredPool::new(
        sriov_dra::slices::PoolOwner {
            node: "node-9".into(),
            ..owner()
        },
        &inventory(1),
        |_| true,
        |_| Default::default(),
    )
    .unwrap();
    assert!(matches!(
        publisher.publish(&foreign).await,
        Err(PublishError::WrongOwner { .. })
    ));
}

#[tokio::test]
async fn the_run_loop_follows_changes_and_puts_back_what_others_break() {
    let (server, publisher, _dir) = setup().await;
    let publisher = Arc::new(publisher);
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(pool(&inventory(300))));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(publisher.clone().run(rx, async {
        let _ = stop_rx.await;
    }));

    eventually(&server, "three slices", |s| s.len() == 3).await;

    // Deleted behind our back: recreated by the watch loop.
    let victim = slice_name(NODE, DRIVER, 1);
    assert!(server.delete_slice_behind_back(&victim));
    eventually(&server, "the deleted slice back", |s| {
        s.len() == 3 && s.iter().all(|s| s.spec.pool.generation == 2)
    })
    .await;

    // Edited behind our back: put back at the next generation.
    assert!(server.modify_slice_behind_back(&victim, |s| {
        s.spec.devices.as_mut().unwrap().truncate(1);
    }));
    eventually(&server, "the edited slice restored", |s| {
        s.iter().all(|s| s.spec.pool.generation == 3)
            && s.iter()
                .map(|s| s.spec.devices.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
                == 300
    })
    .await;

    // Our own writes do not make the loop spin: quiet after a while.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.clear_requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(writes(&server), Vec::<String>::new());

    // A new desired pool (a device went unhealthy) is published.
    let mut devices: Vec<_> = (0..300).map(vf).collect();
    devices[0].unhealthy = Some("no carrier".into());
    tx.send(Arc::new(pool(&Inventory::from_devices(devices))))
        .unwrap();
    eventually(&server, "the unhealthy device withdrawn", |s| {
        s.iter()
            .map(|s| s.spec.devices.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
            == 299
    })
    .await;

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}
