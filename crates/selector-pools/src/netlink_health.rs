//! Feeding a [`LinkTable`] from netlink: a full dump of the namespace's links, then its
//! `RTNLGRP_LINK` events, starting over with a fresh dump when the kernel reports lost events.
//! This is what makes SRDP's "health check" real: PF carrier loss or a vanished netdev reaches
//! the pools on the next refresh, which `on_change` should trigger.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use sriov_netlink::{LinkEvent, RtNetlink};

use crate::health::LinkTable;

/// Keeps `table` in step with the links of `nl`'s namespace; calls `on_change` after the first
/// dump and whenever a link's health changes or a link disappears. Never returns; failures to
/// subscribe or dump are logged and retried.
pub async fn follow_links(nl: &RtNetlink, table: &LinkTable, on_change: impl Fn()) {
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
                on_change();
            }
            Err(e) => tracing::warn!("cannot list links: {e}"),
        }
        while let Some(event) = events.next().await {
            match event {
                LinkEvent::Changed(status) => {
                    // A rename arrives as a change of the same ifindex under the new name.
                    let renamed = names
                        .insert(status.index, status.name.clone())
                        .filter(|old| *old != status.name);
                    let mut changed = table.set(&status.name, status.is_healthy());
                    if let Some(old) = renamed {
                        changed |= table.remove(&old);
                    }
                    if changed {
                        on_change();
                    }
                }
                LinkEvent::Removed { index, name } => {
                    names.remove(&index);
                    if table.remove(&name) {
                        on_change();
                    }
                }
                // The kernel dropped events (ENOBUFS): start over with a fresh dump.
                LinkEvent::Lost => break,
            }
        }
        tracing::debug!("link event stream ended or lost events; re-reading every link");
    }
}
