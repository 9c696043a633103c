//! What one rescan costs (the plugin rescans every 10 s by default): a full
//! `PoolManager::refresh` on generated trees of N PFs x M VFs, with the sysfs reads it makes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use sriov_pci_fake::fixtures;
use sriov_selector_pools::{
    CdiDir, Config, DeviceInfoDir, Host, HostPaths, NoLinkHealth, PoolManager, PoolSettings,
};

fn main() {
    let config = Config::parse(
        r#"{"resourceList":[
            {"resourceName":"even","selectors":{"rootDevices":["0000:10:00.0","0000:14:00.0"]}},
            {"resourceName":"rest","selectors":{"vendors":["8086"],"drivers":["iavf"]}}]}"#,
        "intel.com",
    )
    .unwrap();
    println!(
        "{:>4} PFs x {:>3} VFs  {:>10}  {:>12}",
        "", "", "refresh", "sriov-pci reads"
    );
    for (pfs, vfs) in [(2, 8), (4, 64), (8, 128)] {
        let fake = fixtures::generated(pfs, vfs).build().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let sysfs = fake.sysfs();
        let host = Host::new(HostPaths {
            sysfs: sysfs.clone(),
            proc_net_route: tmp.path().join("route"),
            dev_dir: tmp.path().join("dev"),
        });
        let settings = PoolSettings {
            default_prefix: "intel.com".into(),
            use_cdi: false,
            cdi_field: false,
            devinfo: DeviceInfoDir::new(tmp.path().join("devinfo")),
            cdi: CdiDir::new(tmp.path().join("cdi")),
        };
        let m = PoolManager::new(&config, host, settings, Arc::new(NoLinkHealth));
        m.refresh().unwrap();
        let rounds = 5;
        let reads_before = sysfs.files_read();
        let start = Instant::now();
        for _ in 0..rounds {
            m.refresh().unwrap();
        }
        let per = start.elapsed() / rounds;
        let reads = (sysfs.files_read() - reads_before) / u64::from(rounds);
        let members: usize = m.pools().iter().map(|p| p.members().len()).sum();
        println!(
            "{pfs:>4} PFs x {vfs:>3} VFs  {:>8.2?}  {reads:>12}  ({members} devices pooled)",
            per
        );
    }
}
