//! Feeding a [`LinkTable`] from netlink: a full dump of the namespace's links, then its
//! `RTNLGRP_LINK` events, starting over with a fresh dump when the kernel reports lost events.
//! This is what makes SRDP's "health check" real: PF carrier loss or a vanished netdev reaches
//! the pools on the next refresh, which `on_change` should trigger. Kernel uevents
//! ([`follow_uevents`]) trigger it too, for what links do not show: a driver unbound from a
//! device, a VF removed or added.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use sriov_netlink::{LinkEvent, RtNetlink};
use sriov_uevent::{Action, Notice, Uevent, UeventSource};

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

/// Whether a uevent can change a pool's membership or health: a PCI function added, removed,
/// bound or unbound (a VF's driver let go of it, VFs created or removed through
/// `sriov_numvfs`), an auxiliary device (sub-function) coming or going, or a netdev appearing,
/// leaving or being renamed (a VF's netdev, which rtnetlink reports only in our namespace).
pub fn affects_pools(ev: &Uevent) -> bool {
    let subsystem = ev.subsystem.as_deref();
    let action = &ev.action;
    match subsystem {
        Some("pci") | Some("auxiliary") => matches!(
            action,
            Action::Add | Action::Remove | Action::Bind | Action::Unbind | Action::Change
        ),
        Some("net") => matches!(action, Action::Add | Action::Remove | Action::Move),
        _ => false,
    }
}

/// Calls `on_change` for every uevent of `source` that [`affects_pools`] and whenever events
/// were lost (the caller rescans everything). Returns when the source ends (the socket
/// failed); the caller reopens it.
pub async fn follow_uevents(mut source: impl UeventSource, on_change: impl Fn()) {
    while let Some(notice) = source.next().await {
        match notice {
            Notice::Event(ev) if affects_pools(&ev) => {
                tracing::debug!(action = %ev.action, devpath = %ev.devpath, driver = ?ev.driver, "device event");
                on_change();
            }
            Notice::Event(_) => {}
            Notice::Lost => {
                tracing::debug!("kernel dropped uevents; rescanning every device");
                on_change();
            }
        }
    }
}
