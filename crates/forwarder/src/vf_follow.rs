//! VFs that appear or vanish behind our back (an operator writes `sriov_numvfs`, VFs made
//! by another agent after we started): a PCI device added or removed is a kernel uevent, and
//! each burst of them is one sysfs rescan under the running config (`Reloader::rescan`,
//! which creates no VFs). Lost events rescan too. No polling.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sriov_uevent::{Action, Notice, UeventSocket, UeventSource};

use crate::reload::Reloader;

/// Events closer together than this are one burst: writing `sriov_numvfs` adds its VFs
/// one by one, and one rescan sees them all.
const SETTLE: Duration = Duration::from_millis(100);

/// Whether `n` can mean a VF appeared or vanished.
fn changes_vfs(n: &Notice) -> bool {
    match n {
        Notice::Lost => true,
        Notice::Event(ev) => {
            ev.subsystem.as_deref() == Some("pci")
                && matches!(ev.action, Action::Add | Action::Remove)
        }
    }
}

/// Rescans after every burst of PCI add/remove uevents until `stop` resolves.
pub(crate) async fn follow(reloader: Arc<Reloader>, stop: impl Future<Output = ()>) {
    let uevents: Box<dyn UeventSource> = match UeventSocket::open() {
        Ok(s) => Box::new(s),
        Err(e) => {
            tracing::warn!("{e}; VFs created or removed after start are seen on SIGHUP only");
            return;
        }
    };
    follow_with(
        uevents,
        move || {
            let reloader = reloader.clone();
            async move {
                match reloader.rescan().await {
                    Ok(r) if !r.is_empty() => tracing::info!(
                        added = ?r.added, removed = ?r.removed, changed = ?r.changed,
                        "VFs changed behind our back: pool rescanned"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("rescan after a PCI uevent: {e}"),
                }
            }
        },
        stop,
    )
    .await
}

/// [`follow`] with the events of `uevents` and `rescan` for the rescan (tests).
pub(crate) async fn follow_with<F, Fut>(
    mut uevents: impl UeventSource,
    rescan: F,
    stop: impl Future<Output = ()>,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::pin!(stop);
    loop {
        // Wait for the first event of a burst.
        loop {
            tokio::select! {
                () = &mut stop => return,
                n = uevents.next() => match n {
                    Some(n) if changes_vfs(&n) => break,
                    Some(_) => continue,
                    None => {
                        tracing::warn!("uevent stream ended; VFs created or removed after start are seen on SIGHUP only");
                        return;
                    }
                },
            }
        }
        // Fold the rest of the burst into the same rescan.
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(SETTLE) => break,
                n = uevents.next() => if n.is_none() { break },
            }
        }
        rescan().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use sriov_uevent::Uevent;

    use super::*;

    fn event(msg: &str) -> Notice {
        let raw = msg.replace('|', "\0");
        Notice::Event(Uevent::parse(raw.as_bytes()).unwrap())
    }

    const VF_ADDED: &str = "add@/devices/pci0000:00/0000:00:03.0/0000:01:10.0|ACTION=add|DEVPATH=/devices/pci0000:00/0000:00:03.0/0000:01:10.0|SUBSYSTEM=pci|PCI_SLOT_NAME=0000:01:10.0";
    const VF_REMOVED: &str = "remove@/devices/pci0000:00/0000:00:03.0/0000:01:10.2|ACTION=remove|DEVPATH=/devices/pci0000:00/0000:00:03.0/0000:01:10.2|SUBSYSTEM=pci|PCI_SLOT_NAME=0000:01:10.2";
    const VF_BOUND: &str = "bind@/devices/pci0000:00/0000:00:03.0/0000:01:10.0|ACTION=bind|DEVPATH=/devices/pci0000:00/0000:00:03.0/0000:01:10.0|SUBSYSTEM=pci|DRIVER=igbvf|PCI_SLOT_NAME=0000:01:10.0";
    const NET_ADDED: &str = "add@/devices/virtual/net/veth0|ACTION=add|DEVPATH=/devices/virtual/net/veth0|SUBSYSTEM=net|INTERFACE=veth0|IFINDEX=7";

    #[test]
    fn only_pci_devices_coming_and_going_and_lost_events_change_vfs() {
        assert!(changes_vfs(&event(VF_ADDED)));
        assert!(changes_vfs(&event(VF_REMOVED)));
        assert!(changes_vfs(&Notice::Lost));
        assert!(!changes_vfs(&event(VF_BOUND)));
        assert!(!changes_vfs(&event(NET_ADDED)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_vfs_is_one_rescan_and_other_events_none() {
        let (tx, source) = futures::channel::mpsc::unbounded();
        let rescans = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let counted = rescans.clone();
        let task = tokio::spawn(follow_with(
            source,
            move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        // Binds and netdevs only: nothing to rescan.
        tx.unbounded_send(event(VF_BOUND)).unwrap();
        tx.unbounded_send(event(NET_ADDED)).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(rescans.load(Ordering::SeqCst), 0);
        // Four VFs created at once: one rescan.
        for _ in 0..4 {
            tx.unbounded_send(event(VF_ADDED)).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(rescans.load(Ordering::SeqCst), 1);
        // A VF removed later, and lost events: a rescan each.
        tx.unbounded_send(event(VF_REMOVED)).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.unbounded_send(Notice::Lost).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(rescans.load(Ordering::SeqCst), 3);
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }
}
