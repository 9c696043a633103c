#![allow(clippy::unwrap_used, clippy::expect_used)]
//! VFIO access given at kubelet's Allocate (cgroup v2): each token is bound
//! to one VF on vfio-pci, its nodes are the container's device specs, the
//! NSM Request with that token gets that VF and no other, and Deallocate
//! gives the VF back to its driver.

use std::path::Path;
use std::sync::Arc;

use sriov_deviceplugin::{AllocateError, Backend, DeviceSpec};
use sriov_pci::{PciAddress, Sysfs};
use sriov_pci_fake::{FakeSysfs, fixtures};
use sriov_token_pool::{
    DriverKind, FileStore, PfEntry, Pool, PoolError, PoolResource, TokenState, VfioAtAllocate,
    system_clock,
};
use sriov_vfio::{DeviceNodes, DeviceNumber, VfioDir};

const A: &str = "worker.domain/10G";
const PF: &str = "0000:3b:00.0";
const WHY: &str = "this node runs cgroup v2";

/// Device nodes stood in for by regular files holding `MAJ:MIN` (no mknod in tests).
#[derive(Debug)]
struct FileNodes;

impl DeviceNodes for FileNodes {
    fn device_number(&self, path: &Path) -> sriov_vfio::Result<DeviceNumber> {
        let text =
            std::fs::read_to_string(path).map_err(|cause| sriov_vfio::Error::DeviceNode {
                path: path.to_path_buf(),
                cause,
            })?;
        let (maj, min) = text.trim().split_once(':').unwrap();
        Ok(DeviceNumber::new(
            maj.parse().unwrap(),
            min.parse().unwrap(),
        ))
    }
}

struct Fixture {
    fake: FakeSysfs,
    state: tempfile::TempDir,
    dev_vfio: tempfile::TempDir,
}

impl Fixture {
    /// One X710 port (4 VFs); `/dev/vfio` with the container node and, when
    /// `groups`, a node per VF's group (major 243, minor = group).
    fn new(groups: bool) -> Self {
        let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
        let dev_vfio = tempfile::tempdir().unwrap();
        std::fs::write(dev_vfio.path().join("vfio"), "10:196").unwrap();
        if groups {
            let sysfs = fake.sysfs();
            for vf in sysfs.vfs(PF.parse().unwrap()).unwrap() {
                let g = sysfs.iommu_group(vf.address).unwrap().unwrap();
                std::fs::write(dev_vfio.path().join(g.to_string()), format!("243:{g}")).unwrap();
            }
        }
        Self {
            fake,
            state: tempfile::tempdir().unwrap(),
            dev_vfio,
        }
    }

    fn sysfs(&self) -> Sysfs {
        self.fake.sysfs()
    }

    fn pool(&self) -> Arc<Pool> {
        let sysfs = self.sysfs();
        let entries = vec![PfEntry {
            pf: sysfs.physical_function(PF.parse().unwrap()).unwrap(),
            names: vec![A.into()],
            vf_kernel_driver: "iavf".into(),
        }];
        let (pool, _) = Pool::open(
            entries,
            FileStore::in_dir(self.state.path()).unwrap(),
            &sysfs,
            system_clock(),
        )
        .unwrap();
        Arc::new(pool.with_vfio_only_at_allocate(WHY))
    }

    fn resource(&self, pool: &Arc<Pool>) -> PoolResource {
        PoolResource::new(pool.clone(), A)
            .unwrap()
            .with_vfio_at_allocate(VfioAtAllocate {
                sysfs: self.sysfs(),
                vfio: VfioDir::with_device_nodes(self.dev_vfio.path(), Arc::new(FileNodes)),
            })
    }

    fn driver(&self, vf: PciAddress) -> Option<String> {
        self.sysfs().driver(vf).unwrap()
    }

    fn group(&self, vf: PciAddress) -> u32 {
        self.sysfs().iommu_group(vf).unwrap().unwrap()
    }
}

fn ids(r: &PoolResource) -> Vec<String> {
    r.devices().borrow().iter().map(|d| d.id.clone()).collect()
}

fn spec(path: &str) -> DeviceSpec {
    DeviceSpec {
        container_path: path.into(),
        host_path: path.into(),
        permissions: "rw".into(),
    }
}

#[test]
fn allocate_binds_each_token_to_a_vf_on_vfio_pci_and_returns_its_nodes() {
    let f = Fixture::new(true);
    let pool = f.pool();
    let r = f.resource(&pool);
    let ids = ids(&r);
    let resp = r
        .allocate(&[vec![ids[0].clone()], vec![ids[1].clone(), ids[2].clone()]])
        .unwrap();

    let vf = |id: &str| pool.binding(id).unwrap().unwrap().vf;
    let (v0, v1, v2) = (vf(&ids[0]), vf(&ids[1]), vf(&ids[2]));
    assert!(v0 != v1 && v1 != v2 && v0 != v2, "one VF per token");
    for v in [v0, v1, v2] {
        assert_eq!(
            f.driver(v).as_deref(),
            Some("vfio-pci"),
            "{v} bound at Allocate"
        );
    }
    let group = |v| format!("/dev/vfio/{}", f.group(v));
    assert_eq!(
        resp[0].devices,
        [spec("/dev/vfio/vfio"), spec(&group(v0))],
        "the container node and that token's VF's group, nothing else"
    );
    assert_eq!(
        resp[1].devices,
        [spec("/dev/vfio/vfio"), spec(&group(v1)), spec(&group(v2))],
        "the container node once, then each token's group"
    );
    assert_eq!(
        pool.binding(&ids[0])
            .unwrap()
            .unwrap()
            .previous_driver
            .as_deref(),
        Some("iavf")
    );
    assert_eq!(
        resp[0].envs.get("NSM_SRIOV_TOKENS_worker.domain/10G"),
        Some(&ids[0])
    );
}

#[test]
fn a_request_with_a_token_bound_at_allocate_gets_that_vf_and_no_other() {
    let f = Fixture::new(true);
    let pool = f.pool();
    let r = f.resource(&pool);
    let ids = ids(&r);
    // The second token is bound first, so the lowest VF is not its own.
    r.allocate(&[vec![ids[1].clone()]]).unwrap();
    r.allocate(&[vec![ids[0].clone()]]).unwrap();
    let bound0 = pool.binding(&ids[0]).unwrap().unwrap().vf;
    let bound1 = pool.binding(&ids[1]).unwrap().unwrap().vf;

    let lease = pool
        .use_token(&ids[0], DriverKind::Vfio, "conn-0", u64::MAX)
        .unwrap();
    assert_eq!(lease.vf, bound0);
    assert!(lease.bound_at_allocate);
    let lease = pool
        .use_token(&ids[1], DriverKind::Vfio, "conn-1", u64::MAX)
        .unwrap();
    assert_eq!(lease.vf, bound1);

    // Close keeps the binding: the pod still holds the token and its devices.
    pool.unuse("conn-0").unwrap();
    assert_eq!(pool.binding(&ids[0]).unwrap().unwrap().vf, bound0);
    assert_eq!(f.driver(bound0).as_deref(), Some("vfio-pci"));
    let again = pool
        .use_token(&ids[0], DriverKind::Vfio, "conn-2", u64::MAX)
        .unwrap();
    assert_eq!(again.vf, bound0, "a later Request gets the same VF");

    // A token bound to nothing may not take a VF bound to another token.
    let ids_left: Vec<String> = ids[2..].to_vec();
    pool.allocate(A, &ids_left[..1]).unwrap();
    let other = pool
        .use_token(&ids_left[0], DriverKind::Kernel, "conn-3", u64::MAX)
        .unwrap();
    assert!(other.vf != bound0 && other.vf != bound1);
}

#[test]
fn an_unbound_token_is_refused_for_vfio_with_the_reason_and_the_remedy() {
    let f = Fixture::new(true);
    let pool = f.pool();
    let r = f.resource(&pool);
    let ids = ids(&r);
    // Allocated, but not through the resource that binds (say, before the
    // node moved to cgroup v2).
    pool.allocate(A, &ids[..1]).unwrap();
    let err = pool
        .use_token(&ids[0], DriverKind::Vfio, "conn-0", u64::MAX)
        .unwrap_err();
    assert!(matches!(err, PoolError::NotBoundAtAllocate { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("was not bound to a VF at kubelet's Allocate")
            && msg.contains(WHY)
            && msg.contains("recreate the pod"),
        "{msg}"
    );
    assert!(!msg.contains(&ids[0]), "token IDs are redacted: {msg}");
    // KERNEL needs no device access: an unbound token still works for it.
    pool.use_token(&ids[0], DriverKind::Kernel, "conn-0", u64::MAX)
        .unwrap();
}

#[test]
fn deallocate_gives_the_vf_back_to_its_driver_and_frees_the_token() {
    let f = Fixture::new(true);
    let pool = f.pool();
    let r = f.resource(&pool);
    let ids = ids(&r);
    r.allocate(&[vec![ids[0].clone()]]).unwrap();
    let vf = pool.binding(&ids[0]).unwrap().unwrap().vf;
    pool.use_token(&ids[0], DriverKind::Vfio, "conn-0", u64::MAX)
        .unwrap();

    // The pod is gone while its connection is open: the VF stays until it closes.
    r.release(std::slice::from_ref(&ids[0]));
    assert_eq!(f.driver(vf).as_deref(), Some("vfio-pci"));
    assert_eq!(pool.abandoned(), ["conn-0"]);
    pool.unuse("conn-0").unwrap();

    r.release(std::slice::from_ref(&ids[0]));
    assert_eq!(f.driver(vf).as_deref(), Some("iavf"));
    assert_eq!(pool.binding(&ids[0]).unwrap(), None);
    let tok = pool
        .tokens()
        .unwrap()
        .into_iter()
        .find(|t| t.id == ids[0])
        .unwrap();
    assert_eq!(tok.state, TokenState::Free);
    assert!(r.allocated().is_empty());
}

#[test]
fn a_binding_is_recorded_before_the_bind_and_survives_a_restart() {
    let f = Fixture::new(true);
    let pool = f.pool();
    let r = f.resource(&pool);
    let ids = ids(&r);
    r.allocate(&[vec![ids[0].clone()]]).unwrap();
    let vf = pool.binding(&ids[0]).unwrap().unwrap().vf;
    drop(r);
    drop(pool);

    // A new process on the same state: the record says which VF to give back.
    let pool = f.pool();
    let r = f.resource(&pool);
    assert_eq!(pool.binding(&ids[0]).unwrap().unwrap().vf, vf);
    assert_eq!(r.allocated(), [ids[0].clone()]);
    let lease = pool
        .use_token(&ids[0], DriverKind::Vfio, "conn-0", u64::MAX)
        .unwrap();
    assert_eq!(lease.vf, vf);
    pool.unuse("conn-0").unwrap();
    r.release(std::slice::from_ref(&ids[0]));
    assert_eq!(f.driver(vf).as_deref(), Some("iavf"));
}

#[test]
fn a_failed_allocate_undoes_its_bindings_and_allocations() {
    // No group nodes: the VF binds, but its nodes cannot be read.
    let f = Fixture::new(false);
    let pool = f.pool();
    let r = f.resource(&pool);
    let ids = ids(&r);
    let err = r.allocate(&[vec![ids[0].clone()]]).unwrap_err();
    assert!(
        matches!(&err, AllocateError::Internal { message, .. } if message.contains("/dev") || message.contains("stat")),
        "{err}"
    );
    assert!(r.allocated().is_empty(), "nothing stays allocated");
    assert_eq!(pool.binding(&ids[0]).unwrap(), None);
    for vf in f.sysfs().vfs(PF.parse().unwrap()).unwrap() {
        assert_eq!(f.driver(vf.address).as_deref(), Some("iavf"));
    }
}
