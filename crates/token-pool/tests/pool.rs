#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Token states, capacity accounting, VF selection and crash recovery.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sriov_pci::{PciAddress, Sysfs};
use sriov_pci_fake::{FakeSysfs, FunctionSpec, SriovSpec, TreeBuilder, fixtures};
use sriov_token_pool::{
    Clock, DriverKind, FileStore, PfEntry, Pool, PoolError, STATE_FILE, TokenState, system_clock,
};

const A: &str = "worker.domain/10G";
const B: &str = "worker.domain/fast";

/// A pool over one X710 port (4 VFs) serving two names, with its state dir.
struct Fixture {
    fake: FakeSysfs,
    state: tempfile::TempDir,
    names: Vec<String>,
    pfs: Vec<PciAddress>,
}

impl Fixture {
    fn x710(names: &[&str]) -> Self {
        Self {
            fake: fixtures::x710_2port(FakeSysfs::builder()).build().unwrap(),
            state: tempfile::tempdir().unwrap(),
            names: names.iter().map(|s| s.to_string()).collect(),
            pfs: vec!["0000:3b:00.0".parse().unwrap()],
        }
    }

    fn sysfs(&self) -> Sysfs {
        self.fake.sysfs()
    }

    fn open_with(&self, clock: Clock) -> (Pool, Vec<String>) {
        self.try_open(FileStore::in_dir(self.state.path()).unwrap(), clock)
            .unwrap()
    }

    fn try_open(
        &self,
        store: FileStore,
        clock: Clock,
    ) -> Result<(Pool, Vec<String>), sriov_token_pool::PoolError> {
        let sysfs = self.sysfs();
        let entries = self
            .pfs
            .iter()
            .map(|pf| PfEntry {
                pf: sysfs.physical_function(*pf).unwrap(),
                names: self.names.clone(),
                vf_kernel_driver: "iavf".into(),
            })
            .collect();
        Pool::open(entries, store, &sysfs, clock)
    }

    fn open(&self) -> Pool {
        self.open_with(system_clock()).0
    }
}

fn ids_of(pool: &Pool, name: &str) -> Vec<String> {
    pool.tokens()
        .unwrap()
        .into_iter()
        .filter(|t| t.name == name)
        .map(|t| t.id)
        .collect()
}

fn token(pool: &Pool, id: &str) -> sriov_token_pool::Token {
    pool.tokens()
        .unwrap()
        .into_iter()
        .find(|t| t.id == id)
        .unwrap()
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
fn every_pf_and_name_gets_one_token_per_vf_in_the_go_format() {
    let f = Fixture::x710(&[A, B]);
    let pool = f.open();
    assert_eq!(pool.names(), [A, B]);
    let toks = pool.tokens().unwrap();
    assert_eq!(toks.len(), 8);
    for t in &toks {
        let uuid = t.id.strip_prefix("sriov-").unwrap();
        assert_eq!(uuid.len(), 36, "{}", t.id);
        assert_eq!(t.state, TokenState::Free);
    }
    let devs = pool.devices(A).unwrap().borrow().clone();
    assert_eq!(devs.len(), 4);
    assert!(devs.iter().all(|d| d.healthy && d.numa_node == Some(0)));
    assert!(
        devs.iter()
            .all(|d| d.group.as_deref() == Some("0000:3b:00.0"))
    );
}

#[test]
fn allocating_under_one_name_leaves_fewer_for_every_name() {
    let f = Fixture::x710(&[A, B]);
    let pool = f.open();
    let a = ids_of(&pool, A);
    pool.allocate(A, &a[..3]).unwrap();
    assert_eq!(healthy(&pool, A), 4, "3 allocated (healthy) + 1 free");
    assert_eq!(healthy(&pool, B), 1, "only one VF left for B");
    let b = ids_of(&pool, B);
    pool.allocate(B, &b[..1]).unwrap();
    // The PF is full: any further free token is refused, under either name.
    let err = pool.allocate(A, &a[3..]).unwrap_err();
    assert!(matches!(err, PoolError::Exhausted { .. }), "{err}");
    assert!(err.to_string().contains("4 of 4 VFs reserved"), "{err}");
    assert!(pool.allocate(B, &b[1..2]).is_err());
    assert_eq!(
        healthy(&pool, B),
        1,
        "only B's allocated token stays healthy"
    );
}

#[test]
fn allocate_is_all_or_nothing() {
    let f = Fixture::x710(&[A]);
    let pool = f.open();
    let a = ids_of(&pool, A);
    let err = pool
        .allocate(A, &[a[0].clone(), "sriov-nope".into()])
        .unwrap_err();
    assert!(matches!(err, PoolError::UnknownToken(_)));
    assert!(pool.allocated(A).unwrap().is_empty());
    let before = std::fs::read(f.state.path().join(STATE_FILE)).unwrap();
    assert!(
        pool.allocate(B, &a[..1]).is_err(),
        "a token of another name"
    );
    assert_eq!(
        before,
        std::fs::read(f.state.path().join(STATE_FILE)).unwrap()
    );
}

#[test]
fn request_uses_a_vf_and_close_returns_it() {
    let f = Fixture::x710(&[A]);
    let pool = f.open();
    let a = ids_of(&pool, A);
    assert!(matches!(
        pool.use_token(&a[0], DriverKind::Kernel, "c1", u64::MAX),
        Err(PoolError::NotAllocated(_))
    ));
    pool.allocate(A, &a[..2]).unwrap();
    let l1 = pool
        .use_token(&a[0], DriverKind::Kernel, "c1", u64::MAX)
        .unwrap();
    let l2 = pool
        .use_token(&a[1], DriverKind::Kernel, "c2", u64::MAX)
        .unwrap();
    assert_eq!(l1.vf.to_string(), "0000:3b:02.0");
    assert_eq!(l2.vf.to_string(), "0000:3b:02.1");
    // The same connection again is a refresh: same VF.
    assert_eq!(
        pool.use_token(&a[0], DriverKind::Kernel, "c1", u64::MAX)
            .unwrap(),
        l1
    );
    // Another connection cannot take an in-use token.
    assert!(matches!(
        pool.use_token(&a[0], DriverKind::Kernel, "c9", u64::MAX),
        Err(PoolError::InUse { .. })
    ));
    assert_eq!(pool.unuse("c1").unwrap().unwrap().vf, l1.vf);
    assert_eq!(pool.unuse("c1").unwrap(), None, "close is idempotent");
    let t = token(&pool, &a[0]);
    assert_eq!(t.state, TokenState::Allocated);
}

#[test]
fn release_frees_allocated_tokens_idempotently_but_not_in_use_ones() {
    let f = Fixture::x710(&[A]);
    let pool = f.open();
    let a = ids_of(&pool, A);
    pool.allocate(A, &a[..2]).unwrap();
    pool.use_token(&a[1], DriverKind::Vfio, "c", u64::MAX)
        .unwrap();
    pool.release(&a[..2]).unwrap();
    pool.release(&a[..2]).unwrap();
    pool.release(&["sriov-unknown".to_string()]).unwrap();
    assert_eq!(pool.allocated(A).unwrap(), vec![a[1].clone()]);
    // The in-use one's connection is the forwarder's to close, until it ends.
    assert_eq!(pool.abandoned(), vec!["c".to_string()]);
    pool.unuse("c").unwrap();
    assert!(pool.abandoned().is_empty());
}

#[test]
fn kernel_and_vfio_never_share_an_iommu_group() {
    // Two VFs per IOMMU group, as behind a switch without ACS.
    let fake = TreeBuilder::new()
        .driver("ice", &["8086:1592"], true)
        .driver("iavf", &["8086:1889"], true)
        .function(
            FunctionSpec::ethernet("0000:10:00.0", 0x8086, 0x1592)
                .driver("ice")
                .sriov(SriovSpec {
                    total_vfs: 4,
                    num_vfs: 4,
                    offset: 8,
                    stride: 1,
                    vf_device: 0x1889,
                }),
        )
        .build()
        .unwrap();
    let sysfs = fake.sysfs();
    let mut pf = sysfs
        .physical_function("0000:10:00.0".parse().unwrap())
        .unwrap();
    for (i, vf) in pf.vfs.iter_mut().enumerate() {
        vf.iommu_group = Some(100 + i as u32 / 2);
    }
    let state = tempfile::tempdir().unwrap();
    let (pool, _) = Pool::open(
        vec![PfEntry {
            pf,
            names: vec![A.into()],
            vf_kernel_driver: "iavf".into(),
        }],
        FileStore::in_dir(state.path()).unwrap(),
        &sysfs,
        system_clock(),
    )
    .unwrap();
    let a = ids_of(&pool, A);
    pool.allocate(A, &a).unwrap();
    let k = pool
        .use_token(&a[0], DriverKind::Kernel, "k", u64::MAX)
        .unwrap();
    let v = pool
        .use_token(&a[1], DriverKind::Vfio, "v", u64::MAX)
        .unwrap();
    assert_ne!(k.iommu_group, v.iommu_group);
    // The second kernel use packs into the kernel group; then only vfio fits.
    let k2 = pool
        .use_token(&a[2], DriverKind::Kernel, "k2", u64::MAX)
        .unwrap();
    assert_eq!(k2.iommu_group, k.iommu_group);
    let v2 = pool
        .use_token(&a[3], DriverKind::Vfio, "v2", u64::MAX)
        .unwrap();
    assert_eq!(v2.iommu_group, v.iommu_group);
}

#[test]
fn using_every_vf_leaves_no_healthy_token_for_other_names() {
    let f = Fixture::x710(&[A, B]);
    let pool = f.open();
    let a = ids_of(&pool, A);
    pool.allocate(A, &a).unwrap();
    for (i, t) in a.iter().enumerate() {
        pool.use_token(t, DriverKind::Kernel, &format!("c{i}"), u64::MAX)
            .unwrap();
    }
    assert_eq!(healthy(&pool, B), 0);
}

#[test]
fn restart_keeps_token_ids_and_states() {
    let f = Fixture::x710(&[A]);
    let (ids, lease) = {
        let pool = f.open();
        let a = ids_of(&pool, A);
        pool.allocate(A, &a[..1]).unwrap();
        let lease = pool
            .use_token(&a[0], DriverKind::Vfio, "c1", u64::MAX)
            .unwrap();
        f.sysfs().bind(lease.vf, "vfio-pci").unwrap();
        (a, lease)
        // dropped without any shutdown step: as after kill -9
    };
    let pool = f.open();
    assert_eq!(ids_of(&pool, A), ids);
    let t = token(&pool, &ids[0]);
    match t.state {
        TokenState::InUse(u) => assert_eq!((u.vf, u.connection.as_str()), (lease.vf, "c1")),
        other => panic!("lost the in-use VF: {other:?}"),
    }
}

#[test]
fn crash_before_anything_was_recorded_keeps_the_use_for_the_forwarder_to_roll_back() {
    // The pool recorded the use, then the forwarder died before it recorded
    // any host change (perhaps half-way through a bind): the VF looks idle,
    // but only the forwarder's roll-back may free it, after putting it back
    // on its driver. So the pool keeps it, and says so through `uses`.
    let f = Fixture::x710(&[A]);
    let a = {
        let pool = f.open();
        let a = ids_of(&pool, A);
        pool.allocate(A, &a[..1]).unwrap();
        pool.use_token(&a[0], DriverKind::Kernel, "c1", u64::MAX)
            .unwrap();
        a
    };
    let (pool, warnings) = f.open_with(system_clock());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(matches!(token(&pool, &a[0]).state, TokenState::InUse(_)));
    let uses = pool.uses().unwrap();
    assert_eq!(uses.len(), 1);
    assert_eq!((uses[0].0.as_str(), &uses[0].1.undo), ("c1", &None));
    pool.unuse("c1").unwrap();
    assert_eq!(
        token(&pool, &a[0]).state,
        TokenState::Allocated,
        "the pod still holds the token"
    );
}

#[test]
fn crash_after_the_vf_was_moved_keeps_it_in_use() {
    let f = Fixture::x710(&[A]);
    let (a, vf) = {
        let pool = f.open();
        let a = ids_of(&pool, A);
        pool.allocate(A, &a[..1]).unwrap();
        let l = pool
            .use_token(&a[0], DriverKind::Kernel, "c1", u64::MAX)
            .unwrap();
        (a, l.vf)
    };
    // The netdev left our namespace: sysfs no longer lists it.
    let dir = f.sysfs().device_dir(vf).join("net");
    std::fs::remove_dir_all(dir).unwrap();
    let pool = f.open();
    let t = token(&pool, &a[0]);
    assert!(matches!(t.state, TokenState::InUse(_)));
}

#[test]
fn expired_uses_are_listed_and_released_only_once_their_vf_is_back() {
    let f = Fixture::x710(&[A]);
    let now = Arc::new(AtomicU64::new(1_000));
    let n = now.clone();
    let clock: Clock = Arc::new(move || n.load(Ordering::SeqCst));
    let a = {
        let (pool, _) = f.open_with(clock.clone());
        let a = ids_of(&pool, A);
        pool.allocate(A, &a[..1]).unwrap();
        let l = pool
            .use_token(&a[0], DriverKind::Vfio, "c1", 1_100)
            .unwrap();
        f.sysfs().bind(l.vf, "vfio-pci").unwrap();
        assert!(pool.expired().unwrap().is_empty());
        now.store(1_100, Ordering::SeqCst);
        assert_eq!(pool.expired().unwrap()[0].0, "c1");
        assert!(pool.refresh("c1", 1_200).unwrap());
        assert!(pool.expired().unwrap().is_empty());
        a
    };
    now.store(1_300, Ordering::SeqCst);
    // Still on vfio-pci: released now, the VF would reach the next tenant
    // unrestored. It stays in use, listed for the forwarder to undo.
    let (pool, warnings) = f.open_with(clock);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(pool.holds("c1"));
    let expired = pool.expired().unwrap();
    assert_eq!(expired[0].0, "c1");
    // Once the VF is back on its kernel driver, the sweep releases it.
    f.sysfs().bind(expired[0].1.vf, "iavf").unwrap();
    let released = pool.sweep(&f.sysfs(), &|_| false).unwrap();
    assert!(
        released.iter().any(|w| w.contains("expired")),
        "{released:?}"
    );
    assert!(!pool.holds("c1"));
    assert_eq!(pool.allocated(A).unwrap(), vec![a[0].clone()]);
}

#[test]
fn a_use_whose_netdev_was_recorded_moving_is_left_to_the_forwarder() {
    let f = Fixture::x710(&[A]);
    let (pool, _) = f.open_with(system_clock());
    let a = ids_of(&pool, A);
    pool.allocate(A, &a[..1]).unwrap();
    pool.use_token(&a[0], DriverKind::Kernel, "c1", u64::MAX)
        .unwrap();
    pool.record_undo("c1", Some(serde_json::json!({"moved": true})))
        .unwrap();
    drop(pool);
    // The fake kernel still lists the netdev under the VF, as sysfs mounted
    // in another namespace would: no proof it came back.
    let (pool, warnings) = f.open_with(system_clock());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(pool.holds("c1"));
    assert!(pool.sweep(&f.sysfs(), &|_| false).unwrap().is_empty());
    assert!(pool.lease_of("c1").unwrap().unwrap().undo.is_some());
}

#[test]
fn a_corrupt_state_file_refuses_to_start_naming_the_file_and_the_error() {
    let f = Fixture::x710(&[A]);
    let file = f.state.path().join(STATE_FILE);
    std::fs::write(&file, b"{\"version\": 1, \"tok").unwrap();
    let store = FileStore::in_dir(f.state.path()).unwrap();
    let e = f.try_open(store, system_clock()).err().unwrap().to_string();
    assert!(e.contains(&file.display().to_string()), "{e}");
    assert!(e.contains("EOF while parsing"), "{e}");
    assert!(e.contains("--reset-state"), "{e}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"{\"version\": 1, \"tok",
        "the file is left for the operator"
    );
}

#[test]
fn a_reset_moves_the_corrupt_state_aside_and_starts_empty() {
    let f = Fixture::x710(&[A]);
    std::fs::write(f.state.path().join(STATE_FILE), b"[]").unwrap();
    let store = FileStore::in_dir(f.state.path()).unwrap().with_reset();
    let (pool, warnings) = f.try_open(store, system_clock()).unwrap();
    assert_eq!(pool.tokens().unwrap().len(), 4);
    assert!(warnings[0].contains("reset as asked"), "{warnings:?}");
    let aside = std::fs::read_dir(f.state.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("sriov-pool.json.corrupt-")
        })
        .count();
    assert_eq!(aside, 1);
}

#[test]
fn a_symlinked_state_file_is_not_followed() {
    let f = Fixture::x710(&[A]);
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("victim");
    std::fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, f.state.path().join(STATE_FILE)).unwrap();
    let store = FileStore::in_dir(f.state.path()).unwrap();
    let e = f.try_open(store, system_clock()).err().unwrap().to_string();
    assert!(e.contains("symlink"), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
}

#[test]
fn a_symlink_planted_at_the_old_temp_name_is_never_written_through() {
    let f = Fixture::x710(&[A]);
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("victim");
    std::fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, f.state.path().join("sriov-pool.json.tmp")).unwrap();
    let pool = f.open();
    pool.allocate(A, &ids_of(&pool, A)[..1]).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
}

#[test]
fn state_is_private_to_the_daemon() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("state");
    let f = Fixture::x710(&[A]);
    let store = FileStore::in_dir(&dir).unwrap();
    let (pool, _) = f.try_open(store, system_clock()).unwrap();
    pool.allocate(A, &ids_of(&pool, A)[..1]).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(STATE_FILE)), 0o600);

    for (bad, rule) in [
        (0o777, "writable by group or others"),
        (0o770, "writable by group or others"),
    ] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(bad)).unwrap();
        let e = FileStore::in_dir(&dir).err().unwrap().to_string();
        assert!(
            e.contains(rule) && e.contains(&dir.display().to_string()),
            "{e}"
        );
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    FileStore::in_dir(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700, "a readable directory of ours is closed");
    let link = parent.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let e = FileStore::in_dir(&link).err().unwrap().to_string();
    assert!(e.contains("symlink"), "{e}");
}

#[test]
fn a_torn_temp_file_from_a_crash_mid_write_is_ignored() {
    let f = Fixture::x710(&[A]);
    let ids = ids_of(&f.open(), A);
    std::fs::write(f.state.path().join("sriov-pool.json.tmp"), b"{\"vers").unwrap();
    assert_eq!(ids_of(&f.open(), A), ids);
}

#[test]
fn fewer_vfs_after_restart_drops_free_tokens_first() {
    let f = Fixture::x710(&[A]);
    let held = {
        let pool = f.open();
        let a = ids_of(&pool, A);
        pool.allocate(A, &a[3..]).unwrap();
        a[3].clone()
    };
    f.sysfs()
        .set_num_vfs("0000:3b:00.0".parse().unwrap(), 0)
        .unwrap();
    f.sysfs()
        .set_num_vfs("0000:3b:00.0".parse().unwrap(), 2)
        .unwrap();
    let pool = f.open();
    let ids = ids_of(&pool, A);
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&held), "a token held by a pod survives");
}

#[test]
fn unconfigured_names_keep_the_tokens_pods_hold_with_a_warning() {
    let f = Fixture::x710(&[A, B]);
    {
        let pool = f.open();
        let b = ids_of(&pool, B);
        pool.allocate(B, &b[..1]).unwrap();
    }
    let g = Fixture {
        names: vec![A.into()],
        ..f
    };
    let (pool, warnings) = g.open_with(system_clock());
    assert_eq!(pool.names(), [A]);
    assert!(
        warnings.iter().any(|w| w.contains("no longer configured")),
        "{warnings:?}"
    );
    // Kept until its pod releases it (a reload may have removed B while the
    // pod ran), the free ones of B gone.
    assert_eq!(pool.allocated(B).unwrap().len(), 1);
    assert_eq!(ids_of(&pool, B).len(), 1);
}

#[test]
fn racing_threads_never_double_allocate_or_lose_a_vf() {
    let f = Fixture::x710(&[A, B]);
    let pool = Arc::new(f.open());
    let a = ids_of(&pool, A);
    let b = ids_of(&pool, B);
    let all: Vec<(String, String)> = a
        .iter()
        .map(|t| (A.to_string(), t.clone()))
        .chain(b.iter().map(|t| (B.to_string(), t.clone())))
        .collect();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let pool = pool.clone();
            let all = all.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for round in 0..20 {
                    let (name, tok) = &all[(i + round) % all.len()];
                    if pool.allocate(name, std::slice::from_ref(tok)).is_ok() {
                        let conn = format!("t{i}-{round}");
                        if let Ok(l) = pool.use_token(tok, DriverKind::Kernel, &conn, u64::MAX) {
                            got.push(l.vf);
                            assert!(pool.unuse(&conn).unwrap().is_some());
                        }
                        pool.release(std::slice::from_ref(tok)).unwrap();
                    }
                }
                got
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().unwrap().len();
    }
    assert!(total > 0);
    // Everything went back: all tokens free and all 4 VFs available again.
    assert!(
        pool.tokens()
            .unwrap()
            .iter()
            .all(|t| t.state == TokenState::Free)
    );
    assert_eq!(healthy(&pool, A), 4);
    assert_eq!(healthy(&pool, B), 4);
}

#[test]
fn concurrent_uses_get_distinct_vfs() {
    let f = Fixture::x710(&[A]);
    let pool = Arc::new(f.open());
    let a = ids_of(&pool, A);
    pool.allocate(A, &a).unwrap();
    let handles: Vec<_> = a
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, t)| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.use_token(&t, DriverKind::Kernel, &format!("c{i}"), u64::MAX)
                    .unwrap()
                    .vf
            })
        })
        .collect();
    let vfs: HashSet<PciAddress> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(vfs.len(), 4);
}

#[test]
fn sweep_releases_an_expired_use_once_its_vf_is_home_but_never_a_live_or_unexpired_one() {
    let f = Fixture::x710(&[A]);
    let (a, vf) = {
        let pool = f.open();
        let a = ids_of(&pool, A);
        pool.allocate(A, &a[..2]).unwrap();
        // c1's lease ran out long ago; c2's runs for ever.
        let l = pool.use_token(&a[0], DriverKind::Kernel, "c1", 1).unwrap();
        pool.use_token(&a[1], DriverKind::Kernel, "c2", u64::MAX)
            .unwrap();
        (a, l.vf)
    };
    // Both netdevs are with clients while the forwarder restarts.
    let sysfs = f.sysfs();
    let dirs: Vec<_> = sysfs
        .vfs("0000:3b:00.0".parse().unwrap())
        .unwrap()
        .into_iter()
        .take(2)
        .map(|v| sysfs.device_dir(v.address).join("net"))
        .collect();
    let backup = tempfile::tempdir().unwrap();
    for (i, d) in dirs.iter().enumerate() {
        sriov_pci_fake::copy_tree(d, &backup.path().join(i.to_string())).unwrap();
        std::fs::remove_dir_all(d).unwrap();
    }
    let pool = f.open();
    assert_eq!(
        pool.sweep(&sysfs, &|_| false).unwrap().len(),
        0,
        "both still with clients"
    );
    // Both netdevs come home: c1's namespace died; c2 may be a Request in
    // flight that has taken its token and not moved its VF yet.
    for (i, d) in dirs.iter().enumerate() {
        sriov_pci_fake::copy_tree(&backup.path().join(i.to_string()), d).unwrap();
    }
    assert!(
        pool.sweep(&sysfs, &|c| c == "c1").unwrap().is_empty(),
        "a live connection is never swept"
    );
    let released = pool.sweep(&sysfs, &|_| false).unwrap();
    assert_eq!(released.len(), 1, "{released:?}");
    assert!(released[0].contains(&vf.to_string()));
    assert!(released[0].contains("expired"), "{released:?}");
    let t = token(&pool, &a[0]);
    assert_eq!(t.state, TokenState::Allocated);
    let t = token(&pool, &a[1]);
    assert!(
        matches!(t.state, TokenState::InUse(_)),
        "an unexpired use is never released while serving"
    );
}

/// The error text of opening `f`'s pool over `store`.
fn open_error(f: &Fixture, store: FileStore) -> String {
    f.try_open(store, system_clock()).err().unwrap().to_string()
}

#[test]
fn a_state_of_another_version_refuses_to_start() {
    let f = Fixture::x710(&[A]);
    drop(f.open());
    let file = f.state.path().join(STATE_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    v["version"] = 99.into();
    std::fs::write(&file, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = open_error(&f, FileStore::in_dir(f.state.path()).unwrap());
    assert!(e.contains(&file.display().to_string()), "{e}");
    assert!(e.contains("unsupported state version 99"), "{e}");
}

#[test]
fn a_state_file_that_is_not_a_regular_file_refuses_to_start() {
    let f = Fixture::x710(&[A]);
    let file = f.state.path().join(STATE_FILE);
    std::fs::create_dir(&file).unwrap();
    let e = open_error(&f, FileStore::in_dir(f.state.path()).unwrap());
    assert!(
        e.contains(&file.display().to_string()) && e.contains("not a regular file"),
        "{e}"
    );
    std::fs::remove_dir(&file).unwrap();

    // A FIFO with no writer would block a plain open forever.
    nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = open_error(&f, FileStore::in_dir(f.state.path()).unwrap());
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn a_state_dir_that_is_a_file_or_belongs_to_another_user_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("state");
    std::fs::write(&file, b"").unwrap();
    let e = FileStore::in_dir(&file).err().unwrap();
    assert!(matches!(e, PoolError::UnsafeStateDir { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains(&file.display().to_string()) && e.contains("not a directory"),
        "{e}"
    );

    // Only root can hand a directory to someone else.
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let dir = parent.path().join("foreign");
    std::fs::create_dir(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let e = FileStore::in_dir(&dir).err().unwrap().to_string();
    assert!(
        e.contains(&dir.display().to_string()) && e.contains("owned by another user"),
        "{e}"
    );
}

#[test]
fn a_reset_keeps_the_bad_file_byte_for_byte_under_a_dated_name() {
    let f = Fixture::x710(&[A]);
    let file = f.state.path().join(STATE_FILE);
    std::fs::write(&file, b"not json").unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let store = FileStore::in_dir(f.state.path()).unwrap().with_reset();
    let (_pool, warnings) = f.try_open(store, system_clock()).unwrap();
    let aside: Vec<_> = std::fs::read_dir(f.state.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != &file && !p.ends_with(sriov_token_pool::JOURNAL_FILE))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let name = aside[0].file_name().unwrap().to_string_lossy().into_owned();
    let secs: u64 = name
        .strip_prefix("sriov-pool.json.corrupt-")
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs >= before && secs <= before + 60, "{name}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), b"not json");
    // The warning names both files and what was wrong, for the operator.
    let w = &warnings[0];
    assert!(
        w.contains(&file.display().to_string())
            && w.contains(&aside[0].display().to_string())
            && w.contains("expected ident"),
        "{w}"
    );
}

#[test]
fn a_reset_moves_a_symlinked_state_aside_without_touching_its_target() {
    let f = Fixture::x710(&[A]);
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("victim");
    std::fs::write(&target, b"precious").unwrap();
    let file = f.state.path().join(STATE_FILE);
    std::os::unix::fs::symlink(&target, &file).unwrap();
    let store = FileStore::in_dir(f.state.path()).unwrap().with_reset();
    let (pool, _) = f.try_open(store, system_clock()).unwrap();
    pool.allocate(A, &ids_of(&pool, A)[..1]).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    let meta = std::fs::symlink_metadata(&file).unwrap();
    assert!(meta.is_file(), "the state is a file of ours again");
}

#[test]
fn changes_survive_a_crash_through_the_journal_and_fold_into_the_snapshot_at_start() {
    // Every change after start is a journal line: a process killed with no
    // snapshot written since still comes back with all of them.
    let f = Fixture::x710(&[A]);
    let (a, vf) = {
        let pool = f.open();
        let a = ids_of(&pool, A);
        pool.allocate(A, &a[..2]).unwrap();
        let l = pool
            .use_token(&a[0], DriverKind::Kernel, "c1", u64::MAX)
            .unwrap();
        pool.record_undo("c1", Some(serde_json::json!({"established": true})))
            .unwrap();
        (a, l.vf)
    };
    let journal = f.state.path().join(sriov_token_pool::JOURNAL_FILE);
    assert!(std::fs::metadata(&journal).unwrap().len() > 0);
    let pool = f.open();
    match token(&pool, &a[0]).state {
        TokenState::InUse(u) => {
            assert_eq!((u.vf, u.connection.as_str()), (vf, "c1"));
            assert_eq!(
                u.undo.as_deref(),
                Some(&serde_json::json!({"established": true}))
            );
        }
        other => panic!("lost the use: {other:?}"),
    }
    assert_eq!(token(&pool, &a[1]).state, TokenState::Allocated);
    // Folded into the snapshot at start: the journal is empty again.
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
    // A torn last line (a write the crash cut short) is ignored.
    drop(pool);
    let pool = f.open();
    pool.unuse("c1").unwrap();
    drop(pool);
    let mut raw = std::fs::read(&journal).unwrap();
    raw.extend_from_slice(b"{\"s\":9,\"t\":{\"");
    std::fs::write(&journal, raw).unwrap();
    let pool = f.open();
    assert_eq!(token(&pool, &a[0]).state, TokenState::Allocated);
}

#[test]
fn a_reboot_drops_the_recorded_uses_and_reads_a_journal_up_to_what_power_loss_garbled() {
    let f = Fixture::x710(&[A]);
    let open_in = |boot: &str| {
        let store = FileStore::in_dir(f.state.path()).unwrap().with_boot(boot);
        f.try_open(store, system_clock())
    };
    let journal = f.state.path().join(sriov_token_pool::JOURNAL_FILE);
    let undo = serde_json::json!({"established": true});
    let a = {
        let (pool, _) = open_in("boot-1").unwrap();
        let a = ids_of(&pool, A);
        pool.allocate(A, &a[..2]).unwrap();
        pool.use_token(&a[0], DriverKind::Kernel, "c1", u64::MAX)
            .unwrap();
        pool.record_undo("c1", Some(undo.clone())).unwrap();
        a
    };
    // Killed and started again in the same boot: the use is kept for the
    // forwarder to adopt or undo.
    drop(open_in("boot-1").unwrap());
    let (pool, warnings) = open_in("boot-1").unwrap();
    assert!(matches!(token(&pool, &a[0]).state, TokenState::InUse(_)));
    assert!(
        warnings.iter().all(|w| !w.contains("rebooted")),
        "{warnings:?}"
    );
    drop(pool);

    // After a reboot its record names namespaces and ifindexes that are gone
    // or someone else's: the use is dropped, the token stays the pod's.
    let (pool, warnings) = open_in("boot-2").unwrap();
    assert_eq!(token(&pool, &a[0]).state, TokenState::Allocated);
    assert_eq!(token(&pool, &a[1]).state, TokenState::Allocated);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("before the node rebooted") && w.contains("the 1 connection uses")),
        "{warnings:?}"
    );
    let snapshot = std::fs::read_to_string(f.state.path().join(STATE_FILE)).unwrap();
    assert!(snapshot.contains("\"boot\": \"boot-2\""), "{snapshot}");
    pool.use_token(&a[1], DriverKind::Kernel, "c2", u64::MAX)
        .unwrap();
    pool.record_undo("c2", Some(undo)).unwrap();
    drop(pool);

    // Power lost before the journal's lines reached the disk: its first line
    // reads back as zeros, the next one whole.
    let raw = std::fs::read(&journal).unwrap();
    let first = raw.iter().position(|b| *b == b'\n').unwrap();
    let mut garbled = vec![0u8; first];
    garbled.extend_from_slice(&raw[first..]);
    std::fs::write(&journal, &garbled).unwrap();
    // In the same boot that cannot happen: it is corruption, and refused.
    let e = open_in("boot-2").unwrap_err();
    assert!(
        matches!(&e, sriov_token_pool::PoolError::CorruptState { reason, .. } if reason.contains("journal line 1")),
        "{e}"
    );
    // After the reboot it is where the journal ends.
    let (pool, warnings) = open_in("boot-3").unwrap();
    assert_eq!(token(&pool, &a[1]).state, TokenState::Allocated);
    assert!(
        warnings.iter().any(|w| w.contains("ended at line 1")),
        "{warnings:?}"
    );
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
}
