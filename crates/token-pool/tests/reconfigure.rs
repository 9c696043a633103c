#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Run-time reconfiguration: PFs and names added and removed, VF counts
//! changed, with in-use and pod-held tokens kept and never handed twice,
//! across a restart too.

use std::collections::BTreeSet;

use sriov_pci::{PciAddress, Sysfs};
use sriov_pci_fake::{FakeSysfs, fixtures};
use sriov_token_pool::{DriverKind, FileStore, PfEntry, Pool, PoolError, TokenState, system_clock};

const A: &str = "worker.domain/10G";
const B: &str = "worker.domain/fast";

fn pf0() -> PciAddress {
    "0000:3b:00.0".parse().unwrap()
}

fn pf1() -> PciAddress {
    "0000:3b:00.1".parse().unwrap()
}

struct Node {
    fake: FakeSysfs,
    state: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        Self {
            fake: fixtures::x710_2port(FakeSysfs::builder()).build().unwrap(),
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn sysfs(&self) -> Sysfs {
        self.fake.sysfs()
    }

    /// The entries of a config naming `pfs`, each with its names, and
    /// every VF sysfs shows now.
    fn entries(&self, pfs: &[(PciAddress, &[&str])]) -> Vec<PfEntry> {
        let sysfs = self.sysfs();
        pfs.iter()
            .map(|(pf, names)| PfEntry {
                pf: sysfs.physical_function(*pf).unwrap(),
                names: names.iter().map(|s| s.to_string()).collect(),
                vf_kernel_driver: "iavf".into(),
            })
            .collect()
    }

    fn open(&self, pfs: &[(PciAddress, &[&str])]) -> Pool {
        let (pool, _) = Pool::open(
            self.entries(pfs),
            FileStore::in_dir(self.state.path()).unwrap(),
            &self.sysfs(),
            system_clock(),
        )
        .unwrap();
        pool
    }
}

fn tokens_of(pool: &Pool, name: &str, pf: PciAddress) -> Vec<String> {
    pool.tokens()
        .unwrap()
        .into_iter()
        .filter(|t| t.name == name && t.pf == pf)
        .map(|t| t.id)
        .collect()
}

fn healthy(pool: &Pool, name: &str) -> usize {
    pool.devices(name)
        .unwrap()
        .borrow()
        .iter()
        .filter(|d| d.healthy)
        .count()
}

#[test]
fn names_and_pfs_added_get_devices_and_existing_tokens_stay() {
    let node = Node::new();
    let pool = node.open(&[(pf0(), &[A])]);
    let before: BTreeSet<String> = tokens_of(&pool, A, pf0()).into_iter().collect();
    let mut a_list = pool.devices(A).unwrap();
    a_list.borrow_and_update();

    let r = pool
        .reconfigure(
            node.entries(&[(pf0(), &[A, B]), (pf1(), &[A])]),
            &node.sysfs(),
        )
        .unwrap();

    assert_eq!(r.added, [B]);
    assert!(r.removed.is_empty());
    assert_eq!(r.changed, [A]);
    assert_eq!(pool.names(), [A, B]);
    let after: BTreeSet<String> = tokens_of(&pool, A, pf0()).into_iter().collect();
    assert_eq!(before, after, "pods hold token IDs: they are kept");
    assert!(a_list.has_changed().unwrap(), "ListAndWatch of A is told");
    assert_eq!(pool.devices(A).unwrap().borrow().len(), 8);
    assert_eq!(healthy(&pool, B), 4);
    assert_eq!(tokens_of(&pool, A, pf1()).len(), 4);

    // The same config again changes nothing.
    let again = pool
        .reconfigure(
            node.entries(&[(pf0(), &[A, B]), (pf1(), &[A])]),
            &node.sysfs(),
        )
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn a_removed_pf_keeps_its_in_use_vf_until_closed_and_never_hands_it_out() {
    let node = Node::new();
    let pool = node.open(&[(pf0(), &[A]), (pf1(), &[A])]);
    let on_pf1 = tokens_of(&pool, A, pf1());
    pool.allocate(A, &on_pf1[..2]).unwrap();
    let lease = pool
        .use_token(&on_pf1[0], DriverKind::Kernel, "conn-1", u64::MAX)
        .unwrap();
    assert_eq!(lease.pf, pf1());

    let r = pool
        .reconfigure(node.entries(&[(pf0(), &[A])]), &node.sysfs())
        .unwrap();

    assert_eq!(r.changed, [A]);
    let listed: Vec<String> = pool
        .devices(A)
        .unwrap()
        .borrow()
        .iter()
        .map(|d| d.id.clone())
        .collect();
    assert_eq!(listed.len(), 4, "only PF0's tokens are advertised");
    assert!(!listed.contains(&on_pf1[0]));
    // The connection keeps its VF, and Close still knows where it goes home.
    assert_eq!(pool.lease_of("conn-1").unwrap().unwrap().vf, lease.vf);
    assert_eq!(pool.vf_kernel_driver(pf1()).as_deref(), Some("iavf"));
    // The pod's other token stays until it releases it, but takes no VF.
    let kept = pool.use_token(&on_pf1[1], DriverKind::Kernel, "conn-3", u64::MAX);
    assert!(matches!(kept, Err(PoolError::Exhausted { .. })), "{kept:?}");
    assert!(pool.allocated(A).unwrap().contains(&on_pf1[1]));
    assert!(
        r.notes.iter().any(|n| n.contains("no longer configured")),
        "{:?}",
        r.notes
    );
    // The sweep keeps a live use of a removed PF.
    assert!(
        pool.sweep(&node.sysfs(), &|c| c == "conn-1")
            .unwrap()
            .is_empty()
    );
    assert!(pool.holds("conn-1"));

    // Closed: the token cannot take a VF of the removed PF again, and the
    // sweep drops it.
    pool.unuse("conn-1").unwrap();
    let again = pool.use_token(&on_pf1[0], DriverKind::Kernel, "conn-2", u64::MAX);
    assert!(
        matches!(again, Err(PoolError::Exhausted { .. })),
        "{again:?}"
    );
    pool.sweep(&node.sysfs(), &|_| false).unwrap();
    assert_eq!(
        pool.tokens()
            .unwrap()
            .iter()
            .filter(|t| t.pf == pf1())
            .count(),
        2,
        "the pod still holds both"
    );
    pool.release(&on_pf1[..2]).unwrap();
    let dropped = pool.sweep(&node.sysfs(), &|_| false).unwrap();
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert!(pool.tokens().unwrap().iter().all(|t| t.pf == pf0()));
}

#[test]
fn a_restart_after_a_reload_keeps_the_in_use_vf_of_a_removed_pf() {
    let node = Node::new();
    let vf = {
        let pool = node.open(&[(pf0(), &[A]), (pf1(), &[A])]);
        let id = tokens_of(&pool, A, pf1())[0].clone();
        pool.allocate(A, std::slice::from_ref(&id)).unwrap();
        let lease = pool
            .use_token(&id, DriverKind::Kernel, "conn-1", u64::MAX)
            .unwrap();
        pool.record_undo("conn-1", Some(serde_json::json!({"moved": true})))
            .unwrap();
        pool.reconfigure(node.entries(&[(pf0(), &[A])]), &node.sysfs())
            .unwrap();
        lease.vf
    };

    // Reopened on the new config only.
    let pool = node.open(&[(pf0(), &[A])]);
    let lease = pool.lease_of("conn-1").unwrap().expect("the use survives");
    assert_eq!(lease.vf, vf);
    assert!(lease.undo.is_some(), "its undo record too");
    assert_eq!(
        pool.vf_kernel_driver(pf1()).as_deref(),
        Some("iavf"),
        "recorded with the use, so the undo can rebind the VF"
    );
    assert_eq!(pool.devices(A).unwrap().borrow().len(), 4);
    assert!(pool.sweep(&node.sysfs(), &|_| false).unwrap().is_empty());
    assert!(pool.holds("conn-1"), "a moved VF waits for its undo");
}

#[test]
fn numvfs_raised_adds_tokens_and_lowered_removes_free_ones() {
    let node = Node::new();
    let sysfs = node.sysfs();
    let pool = node.open(&[(pf0(), &[A])]);
    sysfs.set_num_vfs(pf0(), 6).unwrap();
    let r = pool
        .reconfigure(node.entries(&[(pf0(), &[A])]), &sysfs)
        .unwrap();
    assert_eq!(r.changed, [A]);
    assert_eq!(healthy(&pool, A), 6);

    let ids = tokens_of(&pool, A, pf0());
    pool.allocate(A, &ids[..1]).unwrap();
    let lease = pool
        .use_token(&ids[0], DriverKind::Kernel, "conn-1", u64::MAX)
        .unwrap();
    assert_eq!(lease.vf.to_string(), "0000:3b:02.0");

    sysfs.set_num_vfs(pf0(), 2).unwrap();
    pool.reconfigure(node.entries(&[(pf0(), &[A])]), &sysfs)
        .unwrap();
    let tokens = pool.tokens().unwrap();
    assert_eq!(tokens.len(), 2, "free tokens leave with their VFs");
    assert!(matches!(
        tokens.iter().find(|t| t.id == ids[0]).unwrap().state,
        TokenState::InUse(_)
    ));
    assert_eq!(healthy(&pool, A), 2);
    // One VF left for a new pod, and it is not the one in use.
    let other = tokens.iter().find(|t| t.id != ids[0]).unwrap().id.clone();
    pool.allocate(A, std::slice::from_ref(&other)).unwrap();
    let second = pool
        .use_token(&other, DriverKind::Kernel, "conn-2", u64::MAX)
        .unwrap();
    assert_eq!(second.vf.to_string(), "0000:3b:02.1");
}

#[test]
fn a_removed_name_keeps_its_in_use_vf_out_of_the_names_that_remain() {
    let node = Node::new();
    let pool = node.open(&[(pf0(), &[A, B])]);
    let a = tokens_of(&pool, A, pf0())[0].clone();
    pool.allocate(A, std::slice::from_ref(&a)).unwrap();
    let held = pool
        .use_token(&a, DriverKind::Kernel, "conn-a", u64::MAX)
        .unwrap()
        .vf;
    let mut b_list = pool.devices(B).unwrap();

    let r = pool
        .reconfigure(node.entries(&[(pf0(), &[B])]), &node.sysfs())
        .unwrap();
    assert_eq!(r.removed, [A]);
    assert!(r.changed.is_empty(), "{r:?}");
    assert!(pool.devices(A).is_none());
    assert!(pool.names() == [B]);
    assert_eq!(
        healthy(&pool, B),
        3,
        "the VF connection conn-a holds is not advertised to B"
    );
    assert!(
        b_list
            .borrow_and_update()
            .iter()
            .filter(|d| d.healthy)
            .count()
            == 3
    );

    // Every VF B can get is another one; the fourth pod is refused.
    let bs = tokens_of(&pool, B, pf0());
    let healthy_ids: Vec<String> = pool
        .devices(B)
        .unwrap()
        .borrow()
        .iter()
        .filter(|d| d.healthy)
        .map(|d| d.id.clone())
        .collect();
    for (i, id) in healthy_ids.iter().enumerate() {
        pool.allocate(B, std::slice::from_ref(id)).unwrap();
        let vf = pool
            .use_token(id, DriverKind::Kernel, &format!("conn-b{i}"), u64::MAX)
            .unwrap()
            .vf;
        assert_ne!(vf, held);
    }
    let last = bs.iter().find(|id| !healthy_ids.contains(id)).unwrap();
    assert!(matches!(
        pool.allocate(B, std::slice::from_ref(last)),
        Err(PoolError::Exhausted { .. })
    ));
    // conn-a closes and its pod goes: its token goes, its VF is B's.
    pool.unuse("conn-a").unwrap();
    assert_eq!(
        healthy(&pool, B),
        3,
        "B's free token stays unhealthy while the pod holds A's"
    );
    pool.release(std::slice::from_ref(&a)).unwrap();
    pool.sweep(&node.sysfs(), &|c| c != "conn-a").unwrap();
    assert!(pool.tokens().unwrap().iter().all(|t| t.name == B));
    assert_eq!(healthy(&pool, B), 4);
}
