//! One fixture for every pool test: the shipped `node` sysfs tree (X710 with 2x4 iavf VFs,
//! ConnectX-5 with 2 VFs, an 82576 without VFs, an e1000e, an unclaimed device) plus a
//! route table, a /dev, device-info and CDI dirs, all in temp dirs.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sriov_pci::PciAddress;
use sriov_pci_fake::{FakeSysfs, FunctionSpec, TreeBuilder, fixtures};
use sriov_selector_pools::{
    CdiDir, Config, DeviceInfoDir, ExtraFacts, Host, HostDevice, HostPaths, LinkHealth,
    NoLinkHealth, PoolManager, PoolSettings,
};
use tempfile::TempDir;

pub struct Lab {
    pub fake: FakeSysfs,
    pub tmp: TempDir,
    pub ddp: HashMap<PciAddress, String>,
}

pub fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

struct Ddp(HashMap<PciAddress, String>);

impl ExtraFacts for Ddp {
    fn ddp_profile(&self, device: &HostDevice) -> Option<String> {
        self.0.get(&device.address).cloned()
    }
}

/// An accelerator (class 0x12, like an Intel QAT VF) and userspace drivers, on top of `node`.
pub fn lab_tree() -> TreeBuilder {
    fixtures::node()
        .driver("igb_uio", &[], false)
        .driver("qat_4xxx", &["8086:4940"], false)
        .function(
            FunctionSpec::ethernet("0000:6b:00.0", 0x8086, 0x4940)
                .class(0x120000)
                .driver("qat_4xxx")
                .numa(1),
        )
}

impl Lab {
    pub fn new() -> Self {
        let fake = lab_tree().build().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("dev/net")).unwrap();
        std::fs::write(tmp.path().join("dev/vhost-net"), "").unwrap();
        std::fs::write(tmp.path().join("dev/net/tun"), "").unwrap();
        std::fs::write(tmp.path().join("route"), ROUTE_HEADER).unwrap();
        Self {
            fake,
            tmp,
            ddp: HashMap::new(),
        }
    }

    pub fn host(&self) -> Host {
        Host::new(HostPaths {
            sysfs: self.fake.sysfs(),
            proc_net_route: self.tmp.path().join("route"),
            dev_dir: self.tmp.path().join("dev"),
        })
        .with_extra_facts(Arc::new(Ddp(self.ddp.clone())))
    }

    pub fn devinfo_dir(&self) -> PathBuf {
        self.tmp.path().join("devinfo")
    }

    pub fn cdi_dir(&self) -> PathBuf {
        self.tmp.path().join("cdi")
    }

    pub fn settings(&self, use_cdi: bool) -> PoolSettings {
        PoolSettings {
            default_prefix: "intel.com".into(),
            use_cdi,
            cdi_field: false,
            devinfo: DeviceInfoDir::new(self.devinfo_dir()),
            cdi: CdiDir::new(self.cdi_dir()),
        }
    }

    pub fn manager_with(
        &self,
        json: &str,
        use_cdi: bool,
        links: Arc<dyn LinkHealth>,
    ) -> PoolManager {
        let config = Config::parse(json, "intel.com").unwrap();
        let m = PoolManager::new(&config, self.host(), self.settings(use_cdi), links);
        m.refresh().unwrap();
        m
    }

    pub fn manager(&self, json: &str) -> PoolManager {
        self.manager_with(json, false, Arc::new(NoLinkHealth))
    }

    /// Addresses in the one pool of a single-resource config with these selectors.
    pub fn select(&self, selectors: &str) -> Vec<String> {
        self.select_typed(selectors, "netDevice")
    }

    pub fn select_typed(&self, selectors: &str, device_type: &str) -> Vec<String> {
        let json = format!(
            r#"{{"resourceList":[{{"resourceName":"p","deviceType":"{device_type}","selectors":{selectors}}}]}}"#
        );
        let m = self.manager(&json);
        m.pools()[0]
            .members()
            .iter()
            .map(|m| m.device.address.to_string())
            .collect()
    }

    pub fn dev_dir(&self, a: &str) -> PathBuf {
        self.fake.sysfs().device_dir(addr(a))
    }

    pub fn write(&self, a: &str, rel: &str, content: &str) {
        let p = self.dev_dir(a).join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn mkdir(&self, a: &str, rel: &str) {
        std::fs::create_dir_all(self.dev_dir(a).join(rel)).unwrap();
    }

    pub fn default_route(&self, ifname: &str) {
        let mut text = ROUTE_HEADER.to_string();
        text.push_str(&format!(
            "{ifname}\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        ));
        text.push_str(&format!(
            "{ifname}\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
        ));
        std::fs::write(self.tmp.path().join("route"), text).unwrap();
    }

    /// Makes a function an mlx5-style RDMA device with uverbs/umad/issm nodes.
    pub fn make_rdma(&self, a: &str, name: &str, n: u32) {
        self.mkdir(a, &format!("infiniband/{name}/ports/1/pkeys"));
        self.write(a, &format!("infiniband/{name}/ports/1/pkeys/0"), "0xffff\n");
        self.mkdir(a, &format!("infiniband_verbs/uverbs{n}"));
        self.mkdir(a, &format!("infiniband_mad/umad{n}"));
        self.mkdir(a, &format!("infiniband_mad/issm{n}"));
    }

    /// RDMA resources under a sub-directory of a function (an auxiliary device).
    pub fn make_rdma_under(&self, a: &str, sub: &str, name: &str, n: u32) {
        self.mkdir(a, &format!("{sub}/infiniband/{name}"));
        self.mkdir(a, &format!("{sub}/infiniband_verbs/uverbs{n}"));
    }

    /// Makes every netdev of a function an InfiniBand link (ARPHRD 32).
    pub fn make_infiniband(&self, a: &str) {
        let sysfs = self.fake.sysfs();
        for n in sysfs.netdevs(addr(a)).unwrap() {
            self.write(a, &format!("net/{n}/type"), "32\n");
        }
    }

    pub fn make_vdpa(&self, a: &str, driver: &str, index: u32) {
        self.make_vdpa_under(a, "", driver, index);
    }

    /// A vDPA device under `sub` (an auxiliary device like `mlx5_core.vnet.2`, or "" for none).
    pub fn make_vdpa_under(&self, a: &str, sub: &str, driver: &str, index: u32) {
        let vdir = self.dev_dir(a).join(sub).join(format!("vdpa{index}"));
        std::fs::create_dir_all(&vdir).unwrap();
        std::os::unix::fs::symlink(
            format!("../../../bus/vdpa/drivers/{driver}"),
            vdir.join("driver"),
        )
        .unwrap();
        if driver == "vhost_vdpa" {
            std::fs::create_dir_all(vdir.join(format!("vhost-vdpa/vhost-vdpa-{index}"))).unwrap();
        }
    }

    /// Adds an mlx5-style sub-function `name` (sfnum `n`, netdev `ifname`) under PCI function `a`.
    pub fn make_sf(&self, a: &str, name: &str, n: u32, ifname: &str) {
        self.write(a, &format!("{name}/sfnum"), &format!("{n}\n"));
        self.write(a, &format!("{name}/net/{ifname}/type"), "1\n");
    }

    pub fn bind(&self, a: &str, driver: &str) {
        self.fake.sysfs().bind(addr(a), driver).unwrap();
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

pub const ROUTE_HEADER: &str =
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

/// The X710's VFs: port 0 at 3b:02.0-3, port 1 at 3b:0a.0-3 (ens785f0 / ens785f1).
pub const X710_PORT0_VFS: [&str; 4] = [
    "0000:3b:02.0",
    "0000:3b:02.1",
    "0000:3b:02.2",
    "0000:3b:02.3",
];
pub const X710_PORT1_VFS: [&str; 4] = [
    "0000:3b:0a.0",
    "0000:3b:0a.1",
    "0000:3b:0a.2",
    "0000:3b:0a.3",
];
pub const CX5_VFS: [&str; 2] = ["0000:5e:00.2", "0000:5e:00.3"];

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
