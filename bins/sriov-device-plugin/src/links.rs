//! Runs [`follow_links`] for the pools' link table. Without netlink (no permission, no socket)
//! the table stays empty and every device stays healthy, as under SRDP.

use std::sync::Arc;

use sriov_netlink::RtNetlink;
use sriov_selector_pools::{LinkTable, follow_links};
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
