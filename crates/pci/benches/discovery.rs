//! Discovery of a 16 PF x 256 VF tree (4096 VFs): time and files read,
//! next to one `cat` process reading the same files.

use std::process::Command;
use std::time::{Duration, Instant};

use sriov_pci_fake::fixtures;

fn main() -> std::io::Result<()> {
    let fake = fixtures::generated(16, 256).build()?;
    let sysfs = fake.sysfs();
    // Warm the page cache and dentries as a daemon on a live node would be.
    let inv = sysfs.discover_all().map_err(std::io::Error::other)?;
    let vfs: usize = inv.physical_functions.iter().map(|p| p.vfs.len()).sum();

    let mut times = Vec::new();
    let mut reads = 0;
    for _ in 0..15 {
        let s = fake.sysfs();
        let t = Instant::now();
        let inv = s.discover_all().map_err(std::io::Error::other)?;
        times.push(t.elapsed());
        reads = s.files_read();
        std::hint::black_box(inv);
    }
    times.sort();
    let median = times[times.len() / 2];

    // The same attribute files as one `cat` (links and dirs are not files
    // cat can read; it gets the regular files discovery opens).
    let mut files = Vec::new();
    for pf in &inv.physical_functions {
        let d = sysfs.device_dir(pf.device.address);
        for a in [
            "vendor",
            "device",
            "class",
            "subsystem_vendor",
            "subsystem_device",
            "numa_node",
            "sriov_totalvfs",
            "sriov_numvfs",
            "sriov_vf_device",
        ] {
            files.push(d.join(a));
        }
        for vf in &pf.vfs {
            let d = sysfs.device_dir(vf.address);
            files.push(d.join("driver/bind"));
            files.push(d.join("iommu_group/type"));
            for n in &vf.netdevs {
                files.push(d.join("net").join(n).join("type"));
            }
        }
    }
    let mut cat_times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = Command::new("cat").args(&files).output()?;
        cat_times.push(t.elapsed());
        std::hint::black_box(out);
    }
    cat_times.sort();
    let cat = cat_times[cat_times.len() / 2];
    println!(
        "discovery of 16 PFs x 256 VFs ({vfs} VFs): median {:.2} ms over 15 runs, {reads} files/links/dirs read",
        ms(median)
    );
    println!(
        "one `cat` over {} of the same files: median {:.2} ms",
        files.len(),
        ms(cat)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
