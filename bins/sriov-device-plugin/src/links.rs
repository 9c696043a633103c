//! Feeds the pools' link table from netlink: a full dump, then `RTNLGRP_LINK` events; a
//! rescan is requested on every change. Without netlink (no permission, no socket) the table
//! stays empty and every device stays healthy, as under SRDP.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sriov_netlink::{LinkEvent, RtNetlink};
use sriov_resource_pools::LinkTable;
use tokio::sync::{Notify, watch};

/// Starts the task; it ends when `stop` turns true.
pub(crate) fn spawn(table: Arc<LinkTable>, rescan: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = follow(&table, &rescan) => {}
        }
    });
}

async fn follow(table: &LinkTable, rescan: &Notify) {
    let nl = match RtNetlink::new() {
        Ok(nl) => nl,
        Err(e) => {
            tracing::warn!("no netlink, devices stay healthy: {e}");
            return std::future::pending().await;
        }
    };
    loop {
        // Subscribe before the dump, so nothing between the two is missed.
        let mut events = match nl.link_events() {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("cannot subscribe to link events: {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let mut names: HashMap<u32, String> = HashMap::new();
        match nl.links().await {
            Ok(links) => {
                table.replace_all(links.iter().map(|l| (l.name.clone(), l.is_healthy())));
                names = links.into_iter().map(|l| (l.index, l.name)).collect();
                rescan.notify_one();
            }
            Err(e) => tracing::warn!("cannot list links: {e}"),
        }
        while let Some(event) = events.next().await {
            match event {
                LinkEvent::Changed(status) => {
                    // A rename arrives as a change of the same index.
                    let renamed = names
                        .insert(status.index, status.name.clone())
                        .filter(|old| *old != status.name);
                    let mut changed = table.set(&status.name, status.is_healthy());
                    if let Some(old) = renamed {
                        changed |= table.remove(&old);
                    }
                    if changed {
                        rescan.notify_one();
                    }
                }
                LinkEvent::Removed { index, name } => {
                    names.remove(&index);
                    if table.remove(&name) {
                        rescan.notify_one();
                    }
                }
                // The kernel dropped events: start over with a fresh dump.
                LinkEvent::Lost => break,
            }
        }
    }
}
