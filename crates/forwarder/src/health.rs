//! Per-VF health for the forwarder's device plugins, event-driven: netlink link events (the
//! PFs' carrier, their netdevs appearing and vanishing) and kernel uevents (a VF's driver
//! unbound, VFs removed or added through `sriov_numvfs`) each trigger one pass that reads
//! every pooled VF's state and hands the pool the unhealthy ones
//! ([`Pool::set_unhealthy_vfs`]); the pool turns that into what kubelet sees (see
//! `sriov-token-pool`'s `pool/health.rs` for the rule). Lost events (`ENOBUFS` on either
//! socket) cause a pass too, which re-reads everything. There is no polling loop.
//!
//! A VF is unhealthy when it is gone, when its PF is gone, when its PF's link is down or
//! without carrier (unless `NSM_SRIOV_IGNORE_CARRIER`), and, while no connection uses it,
//! when no driver is bound to it or its netdev vanished from its kernel driver. A VF a
//! connection uses is judged by the first three only: the chain rebinds it and moves its
//! netdev into the client's namespace on purpose.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use sriov_netlink::RtNetlink;
use sriov_pci::{PciAddress, Sysfs};
use sriov_token_pool::Pool;
use sriov_uevent::{Action, Notice, UeventSocket, UeventSource};

/// Where PF link states come from.
pub(crate) enum Links {
    /// This namespace's links over netlink: each PF netdev read per pass, its events between.
    Netlink(Arc<RtNetlink>),
    /// None (tests on a fake tree): carrier is not judged.
    #[cfg(test)]
    None,
}

/// Link name to healthy, from a dump; `None` when unknown (no netlink).
type LinkStates = Option<HashMap<PciAddress, PfLink>>;

/// A pooled PF's netdev as netlink sees it in our namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PfLink {
    pub(crate) name: String,
    pub(crate) healthy: bool,
}

/// Why a VF is unhealthy: the `cause` label, and the sentence logged and kept by the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ill {
    pub(crate) cause: &'static str,
    pub(crate) why: String,
}

fn ill(cause: &'static str, why: impl Into<String>) -> Option<Ill> {
    Some(Ill {
        cause,
        why: why.into(),
    })
}

/// Reads every pooled VF and returns the unhealthy ones with why.
pub(crate) fn assess(
    pool: &Pool,
    sysfs: &Sysfs,
    links: &LinkStates,
    ignore_carrier: bool,
) -> BTreeMap<PciAddress, Ill> {
    let mut out = BTreeMap::new();
    let mut pf_verdicts: HashMap<PciAddress, Option<Ill>> = HashMap::new();
    for view in pool.vf_views() {
        let pf_why = pf_verdicts
            .entry(view.pf)
            .or_insert_with(|| pf_health(sysfs, view.pf, links, ignore_carrier))
            .clone();
        let why = if let Some(why) = pf_why {
            Some(why)
        } else if !sysfs.exists(view.vf) {
            ill("device_gone", "the VF is gone")
        } else if view.state == "in_use" {
            None
        } else {
            idle_vf_health(sysfs, view.vf, pool.vf_kernel_driver(view.pf).as_deref())
        };
        if let Some(why) = why {
            out.insert(view.vf, why);
        }
    }
    out
}

fn pf_health(
    sysfs: &Sysfs,
    pf: PciAddress,
    links: &LinkStates,
    ignore_carrier: bool,
) -> Option<Ill> {
    if !sysfs.exists(pf) {
        return ill("device_gone", format!("its PF {pf} is gone"));
    }
    // A PF whose netdev sysfs names but netlink does not see is in another namespace than
    // ours (`pf_links` leaves it out): its carrier is unknown, not bad.
    match links.as_ref()?.get(&pf) {
        Some(PfLink {
            name,
            healthy: false,
        }) if !ignore_carrier => ill("link_down", format!("its PF's link {name} is down")),
        _ => None,
    }
}

fn idle_vf_health(sysfs: &Sysfs, vf: PciAddress, kernel_driver: Option<&str>) -> Option<Ill> {
    let driver = match sysfs.driver(vf) {
        Ok(d) => d,
        // Unreadable now (being removed or probed): the next event says more.
        Err(_) => return None,
    };
    let Some(driver) = driver else {
        return ill("driver_unbound", "no driver is bound to it");
    };
    if Some(driver.as_str()) == kernel_driver && sysfs.netdevs(vf).is_ok_and(|n| n.is_empty()) {
        return ill(
            "netdev_gone",
            format!("its netdev is gone (still on {driver})"),
        );
    }
    None
}

/// Whether a uevent can change a pooled VF's health. A VF a connection uses is judged by its
/// presence only, so its driver changing and its netdev leaving or coming home (the chain's own
/// doing, at every Request and Close) are not worth a pass; `in_use` asks the pool.
fn relevant(n: &Notice, in_use: impl Fn(PciAddress) -> bool) -> bool {
    match n {
        Notice::Lost => true,
        Notice::Event(ev) => match ev.subsystem.as_deref() {
            Some("pci") => match ev.action {
                Action::Add | Action::Remove => true,
                Action::Bind | Action::Unbind => !device_of(&ev.devpath).is_some_and(&in_use),
                _ => false,
            },
            Some("net") => {
                matches!(ev.action, Action::Add | Action::Remove | Action::Move)
                    && !device_of(&ev.devpath).is_some_and(&in_use)
            }
            _ => false,
        },
    }
}

/// The PCI device a uevent's `DEVPATH` is (`.../0000:3b:02.0`) or is under
/// (`.../0000:3b:02.0/net/enp59s2`).
fn device_of(devpath: &str) -> Option<PciAddress> {
    let mut parts = devpath.rsplit('/');
    if let Ok(device) = parts.next()?.parse() {
        return Some(device);
    }
    match parts.next() {
        Some("net") => parts.next()?.parse().ok(),
        _ => None,
    }
}

/// Each pooled PF's netdev in our namespace, as a pass reads them: only these links' events
/// matter (the PF's carrier), not the VF netdevs the chain moves at every Request and Close.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Watched {
    names: std::collections::HashSet<String>,
    indexes: std::collections::HashSet<u32>,
}

impl Watched {
    fn concerns(&self, event: &sriov_netlink::LinkEvent) -> bool {
        match event {
            sriov_netlink::LinkEvent::Changed(l) => {
                self.indexes.contains(&l.index) || self.names.contains(&l.name)
            }
            sriov_netlink::LinkEvent::Removed { index, name } => {
                self.indexes.contains(index) || self.names.contains(name)
            }
            _ => true,
        }
    }
}

/// The link state of each pooled PF's netdev (one small request each, not a dump of every
/// link in the namespace, which on a node with hundreds of VF netdevs is large and would be
/// read at every Request and Close), and the links whose events should cause a pass.
async fn pf_links(nl: &RtNetlink, pool: &Pool, sysfs: &Sysfs) -> (LinkStates, Watched) {
    let mut pfs: Vec<PciAddress> = pool.vf_counts().into_iter().map(|c| c.pf).collect();
    pfs.sort();
    pfs.dedup();
    let named: Vec<(PciAddress, String)> = pfs
        .into_iter()
        .filter_map(|pf| {
            let name = sysfs.netdevs(pf).ok()?.into_iter().next()?;
            Some((pf, name))
        })
        .collect();
    // All asked before any answer is read: one wakeup for the lot.
    let refs: Vec<sriov_netlink::LinkRef> = named
        .iter()
        .map(|(_, n)| sriov_netlink::LinkRef::Name(n.clone()))
        .collect();
    let read = futures::future::join_all(refs.iter().map(|r| nl.link(r))).await;
    let mut states = HashMap::new();
    let mut watched = Watched {
        names: named.iter().map(|(_, n)| n.clone()).collect(),
        ..Watched::default()
    };
    for ((pf, name), link) in named.into_iter().zip(read) {
        match link {
            Ok(Some(l)) => {
                watched.indexes.insert(l.index);
                let healthy = l.is_healthy();
                states.insert(pf, PfLink { name, healthy });
            }
            // Not in our namespace: its carrier is unknown, not bad (see `pf_health`).
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("cannot read PF link {name}, its carrier not judged this pass: {e}");
                return (None, watched);
            }
        }
    }
    (Some(states), watched)
}

/// Runs passes until `stop` resolves: one now, then one after each relevant event.
pub(crate) async fn follow(
    pool: Arc<Pool>,
    sysfs: Sysfs,
    links: Links,
    ignore_carrier: bool,
    stop: impl Future<Output = ()>,
) {
    let uevents: Box<dyn UeventSource> = match UeventSocket::open() {
        Ok(s) => Box::new(s),
        Err(e) => {
            tracing::warn!("{e}; VF driver and presence changes are not followed");
            Box::new(futures::stream::pending())
        }
    };
    follow_with(pool, sysfs, links, ignore_carrier, uevents, stop).await
}

/// [`follow`] with the uevents from `uevents` (a test's channel where the fake tree emits none).
pub(crate) async fn follow_with(
    pool: Arc<Pool>,
    sysfs: Sysfs,
    links: Links,
    ignore_carrier: bool,
    mut uevents: impl UeventSource,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let names = names_by_pf(&pool);
    let pf_of: HashMap<PciAddress, PciAddress> =
        pool.vf_views().into_iter().map(|v| (v.vf, v.pf)).collect();
    let resources = |vf: &PciAddress| pf_of.get(vf).and_then(|pf| names.get(pf));
    let mut link_events = subscribe(&links);
    let mut uevents_open = true;
    let mut before: BTreeMap<PciAddress, Ill> = BTreeMap::new();
    let in_use = |vf: PciAddress| {
        pool.uses()
            .is_ok_and(|uses| uses.iter().any(|(_, lease)| lease.vf == vf))
    };
    loop {
        let (states, watched) = match &links {
            Links::Netlink(nl) => pf_links(nl, &pool, &sysfs).await,
            #[cfg(test)]
            Links::None => (None, Watched::default()),
        };
        let (p, s) = (pool.clone(), sysfs.clone());
        let now = match tokio::task::spawn_blocking(move || assess(&p, &s, &states, ignore_carrier))
            .await
        {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!("VF health pass failed: {e}");
                before.clone()
            }
        };
        for (vf, ill) in &now {
            if before.get(vf).is_none_or(|b| b.cause != ill.cause) {
                tracing::warn!(%vf, "VF unhealthy: {}", ill.why);
                crate::metrics::vf_health_flip(resources(vf), false, ill.cause);
            }
        }
        for (vf, was) in &before {
            if !now.contains_key(vf) {
                tracing::info!(%vf, "VF healthy again");
                crate::metrics::vf_health_flip(resources(vf), true, was.cause);
            }
        }
        let reasons = now.iter().map(|(vf, i)| (*vf, i.why.clone())).collect();
        if let Err(e) = pool.set_unhealthy_vfs(reasons) {
            tracing::warn!("recording VF health: {e}");
        }
        before = now;
        // Wait for something that matters, then take whatever else is already queued, so a
        // burst (64 VFs created) costs one pass.
        loop {
            tokio::select! {
                () = &mut stop => return,
                n = uevents.next(), if uevents_open => match n {
                    Some(n) if relevant(&n, in_use) => break,
                    Some(_) => continue,
                    None => {
                        tracing::warn!("uevent stream ended; VF driver and presence changes are not followed");
                        uevents_open = false;
                        continue;
                    }
                },
                e = next_link_event(&mut link_events) => match e {
                    Some(e) if !watched.concerns(&e) => continue,
                    Some(_) => break,
                    None => {
                        // Resubscribe after a pause, then re-read everything.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        link_events = subscribe(&links);
                        break;
                    }
                },
            }
        }
        while uevents_open && matches!(uevents.next().now_or_never(), Some(Some(_))) {}
        while let Some(Some(_)) = next_link_event(&mut link_events).now_or_never() {}
    }
}

type LinkStream = Option<std::pin::Pin<Box<dyn Stream<Item = sriov_netlink::LinkEvent> + Send>>>;

fn subscribe(links: &Links) -> LinkStream {
    match links {
        Links::Netlink(nl) => match nl.link_events() {
            Ok(ev) => Some(Box::pin(ev)),
            Err(e) => {
                tracing::warn!("cannot subscribe to link events: {e}");
                None
            }
        },
        #[cfg(test)]
        Links::None => None,
    }
}

/// The next link event; never resolves without a stream.
async fn next_link_event(events: &mut LinkStream) -> Option<sriov_netlink::LinkEvent> {
    match events {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Each PF's resource names, for the metric's `resource` label.
fn names_by_pf(pool: &Pool) -> HashMap<PciAddress, Vec<String>> {
    let mut out: HashMap<PciAddress, Vec<String>> = HashMap::new();
    for c in pool.vf_counts() {
        out.entry(c.pf).or_default().push(c.resource);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sriov_pci_fake::{FakeSysfs, fixtures};
    use sriov_token_pool::{DriverKind, FileStore, PfEntry, system_clock};

    use super::*;

    const NAME: &str = "worker.domain/10G";
    const PF: &str = "0000:3b:00.0";
    const VFS: [&str; 4] = [
        "0000:3b:02.0",
        "0000:3b:02.1",
        "0000:3b:02.2",
        "0000:3b:02.3",
    ];

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    /// The X710's port 0 (netdev `ens785f0`, four iavf VFs) pooled under one name.
    fn pool(fake: &FakeSysfs, state: &std::path::Path) -> Arc<Pool> {
        let sysfs = fake.sysfs();
        let entries = vec![PfEntry {
            pf: sysfs.physical_function(a(PF)).unwrap(),
            names: vec![NAME.into()],
            vf_kernel_driver: "iavf".into(),
        }];
        let store = FileStore::in_dir(state).unwrap();
        Arc::new(
            Pool::open(entries, store, &sysfs, system_clock())
                .unwrap()
                .0,
        )
    }

    fn causes(found: &BTreeMap<PciAddress, Ill>) -> Vec<(String, &'static str)> {
        found
            .iter()
            .map(|(vf, i)| (vf.to_string(), i.cause))
            .collect()
    }

    fn links(up: bool) -> LinkStates {
        Some(HashMap::from([(
            a(PF),
            PfLink {
                name: "ens785f0".to_string(),
                healthy: up,
            },
        )]))
    }

    #[test]
    fn each_cause_is_found_and_a_vf_in_use_is_judged_by_its_pf_and_presence_only() {
        let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
        let state = tempfile::tempdir().unwrap();
        let pool = pool(&fake, state.path());
        let sysfs = fake.sysfs();
        assert!(assess(&pool, &sysfs, &links(true), false).is_empty());
        assert!(assess(&pool, &sysfs, &None, false).is_empty());

        // The PF's carrier: every VF, unless carrier is ignored.
        let down = assess(&pool, &sysfs, &links(false), false);
        assert_eq!(down.len(), 4);
        assert!(
            down.values()
                .all(|i| i.cause == "link_down" && i.why == "its PF's link ens785f0 is down")
        );
        assert!(assess(&pool, &sysfs, &links(false), true).is_empty());

        // A free VF's driver unbound; a VF in use unbound too (the chain does that).
        let token = pool.tokens().unwrap()[0].id.clone();
        pool.allocate(NAME, std::slice::from_ref(&token)).unwrap();
        let lease = pool
            .use_token(&token, DriverKind::Kernel, "c1", u64::MAX)
            .unwrap();
        assert_eq!(lease.vf, a(VFS[0]));
        sysfs.unbind(a(VFS[0])).unwrap();
        sysfs.unbind(a(VFS[1])).unwrap();
        assert_eq!(
            causes(&assess(&pool, &sysfs, &links(true), false)),
            vec![(VFS[1].to_string(), "driver_unbound")]
        );
        sysfs.bind(a(VFS[0]), "iavf").unwrap();
        sysfs.bind(a(VFS[1]), "iavf").unwrap();

        // A free VF on its kernel driver whose netdev vanished.
        let netdev = sysfs.netdevs(a(VFS[2])).unwrap().remove(0);
        std::fs::remove_dir_all(sysfs.device_dir(a(VFS[2])).join("net").join(netdev)).unwrap();
        assert_eq!(
            causes(&assess(&pool, &sysfs, &links(true), false)),
            vec![(VFS[2].to_string(), "netdev_gone")]
        );

        // sriov_numvfs lowered: the VFs past the new count are gone, in use or not.
        sysfs.set_num_vfs(a(PF), 2).unwrap();
        assert_eq!(
            causes(&assess(&pool, &sysfs, &links(true), false)),
            vec![
                (VFS[2].to_string(), "device_gone"),
                (VFS[3].to_string(), "device_gone")
            ]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn uevents_drive_the_lists_kubelet_sees() {
        let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
        let state = tempfile::tempdir().unwrap();
        let pool = pool(&fake, state.path());
        let sysfs = fake.sysfs();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(follow_with(
            pool.clone(),
            sysfs.clone(),
            Links::None,
            false,
            rx,
            async move {
                let _ = stop_rx.await;
            },
        ));
        let mut list = pool.devices(NAME).unwrap();
        let healthy = |list: &tokio::sync::watch::Receiver<Vec<sriov_deviceplugin::Device>>| {
            list.borrow().iter().filter(|d| d.healthy).count()
        };
        let event = |action: &str, vf: &str| {
            let raw = format!("{action}@/devices/pci0000:3a/{vf}\0SUBSYSTEM=pci\0");
            Notice::Event(sriov_uevent::Uevent::parse(raw.as_bytes()).unwrap())
        };
        let wait = |list: &mut tokio::sync::watch::Receiver<Vec<sriov_deviceplugin::Device>>,
                    want: usize| {
            let mut list = list.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(20),
                    list.wait_for(|l| l.iter().filter(|d| d.healthy).count() == want),
                )
                .await
                .expect("the list never changed")
                .unwrap();
            }
        };
        assert_eq!(healthy(&list), 4);

        sysfs.unbind(a(VFS[1])).unwrap();
        tx.unbounded_send(event("unbind", VFS[1])).unwrap();
        wait(&mut list, 3).await;
        assert_eq!(
            pool.unhealthy_vfs().get(&a(VFS[1])).map(String::as_str),
            Some("no driver is bound to it")
        );

        sysfs.bind(a(VFS[1]), "iavf").unwrap();
        tx.unbounded_send(event("bind", VFS[1])).unwrap();
        wait(&mut list, 4).await;

        // Lowered sriov_numvfs, seen after lost events.
        sysfs.set_num_vfs(a(PF), 1).unwrap();
        tx.unbounded_send(Notice::Lost).unwrap();
        wait(&mut list, 1).await;
        sysfs.set_num_vfs(a(PF), 4).unwrap();
        tx.unbounded_send(event("add", VFS[3])).unwrap();
        wait(&mut list, 4).await;
        list.borrow_and_update();

        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }

    /// The chain's own changes at every Request and Close (a VF in use rebound, its netdev
    /// moved out and back) cause no pass; the same on an idle VF, or a VF removed, do.
    #[test]
    fn the_chains_own_changes_to_a_vf_in_use_cause_no_pass() {
        let ev = |raw: &str| Notice::Event(sriov_uevent::Uevent::parse(raw.as_bytes()).unwrap());
        let used = |vf: PciAddress| vf == a(VFS[0]);
        let net = |action: &str, vf: &str| {
            ev(&format!(
                "{action}@/devices/pci0000:3a/0000:3a:00.0/{vf}/net/enp59s2\0SUBSYSTEM=net\0"
            ))
        };
        let pci = |action: &str, vf: &str| {
            ev(&format!(
                "{action}@/devices/pci0000:3a/0000:3a:00.0/{vf}\0SUBSYSTEM=pci\0"
            ))
        };
        for action in ["add", "remove", "move"] {
            assert!(
                !relevant(&net(action, VFS[0]), used),
                "{action} of a used VF's netdev"
            );
            assert!(
                relevant(&net(action, VFS[1]), used),
                "{action} of an idle VF's netdev"
            );
        }
        for action in ["bind", "unbind"] {
            assert!(
                !relevant(&pci(action, VFS[0]), used),
                "{action} of a used VF"
            );
            assert!(
                relevant(&pci(action, VFS[1]), used),
                "{action} of an idle VF"
            );
        }
        assert!(relevant(&pci("remove", VFS[0]), used), "a used VF removed");
        assert!(relevant(&Notice::Lost, used));
        assert_eq!(
            device_of("/devices/pci0000:3a/0000:3b:02.0/net/x"),
            Some(a(VFS[0]))
        );
        assert_eq!(device_of("/devices/virtual/net/veth0"), None);
    }

    #[test]
    fn only_the_pfs_links_events_cause_a_pass() {
        use sriov_netlink::LinkEvent;
        let watched = Watched {
            names: ["ens785f0".to_string()].into(),
            indexes: [7].into(),
        };
        let removed = |index: u32, name: &str| LinkEvent::Removed {
            index,
            name: name.into(),
        };
        assert!(watched.concerns(&removed(7, "renamed")));
        assert!(watched.concerns(&removed(9, "ens785f0")));
        assert!(
            !watched.concerns(&removed(12, "enp59s2")),
            "a VF netdev leaving"
        );
        assert!(watched.concerns(&LinkEvent::Lost));
    }

    #[test]
    fn pf_carrier_seen_over_netlink_in_a_private_namespace() {
        use sriov_netlink::rtnetlink::LinkUnspec;
        sriov_netlink::testing::in_private_netns(
            "pf_carrier_seen_over_netlink_in_a_private_namespace",
            |nl| async move {
                let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
                let state = tempfile::tempdir().unwrap();
                let pool = pool(&fake, state.path());
                // The PF's netdev, as the fixture names it, played by a veth whose far end
                // decides its carrier.
                sriov_netlink::testing::add_veth(nl.handle(), "ens785f0", "peer0")
                    .await
                    .unwrap();
                let nl = Arc::new(nl);
                let pf = nl.link(&"ens785f0".into()).await.unwrap().unwrap();
                let peer = nl.link(&"peer0".into()).await.unwrap().unwrap();
                let set = |index: u32, up: bool| {
                    let msg = if up {
                        LinkUnspec::new_with_index(index).up().build()
                    } else {
                        LinkUnspec::new_with_index(index).down().build()
                    };
                    nl.handle().link().change(msg).execute()
                };
                set(pf.index, true).await.unwrap();
                set(peer.index, true).await.unwrap();
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(follow_with(
                    pool.clone(),
                    fake.sysfs(),
                    Links::Netlink(nl.clone()),
                    false,
                    futures::stream::pending(),
                    async move {
                        let _ = stop_rx.await;
                    },
                ));
                let list = pool.devices(NAME).unwrap();
                let wait = |want: usize| {
                    let mut list = list.clone();
                    async move {
                        tokio::time::timeout(
                            Duration::from_secs(20),
                            list.wait_for(|l| l.iter().filter(|d| d.healthy).count() == want),
                        )
                        .await
                        .unwrap_or_else(|_| panic!("never {want} healthy"))
                        .unwrap();
                    }
                };
                wait(4).await;
                set(peer.index, false).await.unwrap();
                wait(0).await;
                assert!(
                    pool.unhealthy_vfs()
                        .values()
                        .all(|w| w == "its PF's link ens785f0 is down")
                );
                set(peer.index, true).await.unwrap();
                wait(4).await;
                stop_tx.send(()).unwrap();
                task.await.unwrap();
            },
        );
    }
}
