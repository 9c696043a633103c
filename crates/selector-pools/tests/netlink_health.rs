//! Real link health: a private network namespace with a veth pair named like the X710's PF
//! port 0 (`ens785f0`), followed over netlink, driving the pools' health. Never touches the
//! host's interfaces; prints SKIP where namespaces cannot be created.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use sriov_deviceplugin::Backend;
use sriov_netlink::rtnetlink::LinkUnspec;
use sriov_netlink::testing::{add_veth, in_private_netns};
use sriov_selector_pools::{LinkHealth, LinkState, LinkTable, follow_links};

async fn until(table: &LinkTable, name: &str, want: LinkState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while table.state(name) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never became {want:?} (is {:?})",
            table.state(name)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn pf_carrier_loss_and_removal_seen_over_netlink_make_vfs_unhealthy() {
    in_private_netns(
        "pf_carrier_loss_and_removal_seen_over_netlink_make_vfs_unhealthy",
        |nl| async move {
            let lab = Lab::new();
            let table = Arc::new(LinkTable::new());
            let m = lab.manager_with(
                r#"{"resourceList":[{"resourceName":"x","selectors":{"pfNames":["ens785f0"]}}]}"#,
                false,
                table.clone(),
            );
            let pool = m.pools()[0].clone();
            let healthy = |p: &sriov_selector_pools::ResourcePool| {
                p.devices().borrow().iter().filter(|d| d.healthy).count()
            };

            let body = async {
                add_veth(nl.handle(), "ens785f0", "peer0").await.unwrap();
                let pf = nl.link(&"ens785f0".into()).await.unwrap().unwrap();
                let peer = nl.link(&"peer0".into()).await.unwrap().unwrap();
                for index in [pf.index, peer.index] {
                    nl.handle()
                        .link()
                        .change(LinkUnspec::new_with_index(index).up().build())
                        .execute()
                        .await
                        .unwrap();
                }
                until(&table, "ens785f0", LinkState::Healthy).await;
                m.refresh().unwrap();
                assert_eq!(healthy(&pool), 4);

                // The far end going down takes the PF's carrier away.
                nl.handle()
                    .link()
                    .change(LinkUnspec::new_with_index(peer.index).down().build())
                    .execute()
                    .await
                    .unwrap();
                until(&table, "ens785f0", LinkState::Unhealthy).await;
                m.refresh().unwrap();
                assert_eq!(healthy(&pool), 0);
                assert_eq!(
                    pool.members()[0].unhealthy.as_deref(),
                    Some("link ens785f0 is down")
                );

                nl.handle().link().del(pf.index).execute().await.unwrap();
                until(&table, "ens785f0", LinkState::Absent).await;
                m.refresh().unwrap();
                assert_eq!(
                    pool.members()[0].unhealthy.as_deref(),
                    Some("link ens785f0 is gone")
                );
            };
            tokio::select! {
                _ = follow_links(&nl, &table, || {}) => unreachable!("follow_links returned"),
                _ = body => {}
            }
        },
    );
}
