//! A PF's e-switch in switchdev mode, as mlx5 shows it in sysfs: the PF's
//! netdev becomes the uplink representor (`phys_port_name` `p<port>`), and
//! one representor netdev per VF (`pf<port>vf<index>`) or sub-function
//! (`pf<port>sf<number>`) appears beside it under the PF's `net/`, every one
//! with the e-switch's `phys_switch_id`. Code that lists a PF's interfaces
//! sees them all; only these two attributes tell them apart.

use std::io;
use std::path::Path;

use sriov_pci::PciAddress;

use crate::builder::FakeSysfs;
use crate::layout::write;

impl FakeSysfs {
    /// Puts `pf`'s e-switch in switchdev mode: its first interface becomes
    /// the uplink of port `port`, and each of its VFs gets a representor
    /// named `<uplink>_<index>`. Returns the representors' names.
    ///
    /// ```
    /// use sriov_pci_fake::{FakeSysfs, fixtures};
    ///
    /// let fake = fixtures::connectx5(FakeSysfs::builder()).build()?;
    /// let pf = "0000:5e:00.0".parse()?;
    /// let reps = fake.switchdev(pf, 0)?;
    /// assert_eq!(reps, ["ens1f0np0_0", "ens1f0np0_1"]);
    /// assert_eq!(fake.sysfs().netdevs(pf)?, ["ens1f0np0", "ens1f0np0_0", "ens1f0np0_1"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn switchdev(&self, pf: PciAddress, port: u32) -> io::Result<Vec<String>> {
        let sysfs = self.sysfs();
        let net = sysfs.device_dir(pf).join("net");
        let uplink = sysfs
            .netdevs(pf)
            .map_err(io::Error::other)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{pf} has no netdev to make the uplink"),
                )
            })?;
        mark(&net.join(&uplink), pf, &format!("p{port}"))?;
        let mut reps = Vec::new();
        for vf in sysfs.vfs(pf).map_err(io::Error::other)? {
            let name = format!("{uplink}_{}", vf.index);
            self.add_representor(pf, &name, &format!("pf{port}vf{}", vf.index))?;
            reps.push(name);
        }
        Ok(reps)
    }

    /// Adds one representor netdev `name` with `phys_port_name` under `pf`'s
    /// `net/` (for a sub-function's, `pf<port>sf<number>`; on a DPU, the host
    /// PF's, `pf<port>`, or with a controller, `c1pf0vf2`).
    pub fn add_representor(
        &self,
        pf: PciAddress,
        name: &str,
        phys_port_name: &str,
    ) -> io::Result<()> {
        let dir = self.sysfs().device_dir(pf).join("net").join(name);
        write(dir.join("type"), "1\n")?;
        write(dir.join("operstate"), "up\n")?;
        write(dir.join("carrier"), "1\n")?;
        mark(&dir, pf, phys_port_name)
    }
}

/// The attributes that make `netdev_dir` a port of `pf`'s e-switch.
fn mark(netdev_dir: &Path, pf: PciAddress, phys_port_name: &str) -> io::Result<()> {
    write(
        netdev_dir.join("phys_port_name"),
        format!("{phys_port_name}\n"),
    )?;
    // One switch ID per PF's e-switch, as the kernel gives each its own.
    let id = u64::from(pf.routing_id()) | u64::from(pf.domain()) << 16;
    write(netdev_dir.join("phys_switch_id"), format!("{id:016x}\n"))
}
