//! The events that drive rescans: netlink link changes into the pools' link table
//! ([`follow_links`]), and kernel uevents (driver bind/unbind, devices added or removed,
//! [`follow_uevents`]). Without netlink (no permission, no socket) the table stays empty and
//! every device stays healthy, as under SRDP; without a uevent socket, driver and VF changes
//! are seen at the periodic rescan only.

use std::sync::Arc;
use std::time::Duration;

use sriov_netlink::RtNetlink;
use sriov_selector_pools::{LinkTable, follow_links, follow_uevents};
use sriov_uevent::UeventSocket;
use tokio::sync::{Notify, watch};

/// Starts the task; it ends when `stop` turns true. Each link change asks for a rescan.
pub(crate) fn spawn(table: Arc<LinkTable>, rescan: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let nl = match RtNetlink::new() {
            Ok(nl) => nl,
            Err(e) => {
                tracing::warn!("no netlink, devices stay healthy: {e}");
                return;
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = follow_links(&nl, &table, || rescan.notify_one()) => {}
        }
    });
}

/// Starts following uevents until `stop` turns true; each relevant one asks for a rescan.
/// A failed socket is reopened (after a rescan, since events may have been missed).
pub(crate) fn spawn_uevents(rescan: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let follow = async {
            loop {
                match UeventSocket::open() {
                    Ok(socket) => follow_uevents(socket, || rescan.notify_one()).await,
                    Err(e) => tracing::warn!(
                        "{e}; driver unbinds and VF changes are seen at the periodic rescan"
                    ),
                }
                rescan.notify_one();
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            () = follow => {}
        }
    });
}
