//! Command line: subcommands and the sysfs location options they share.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use sriov_pci::{PciAddress, Sysfs};

/// NSM SR-IOV forwarder.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print PFs, VFs, drivers and IOMMU groups as discovery sees them.
    Inventory {
        #[command(flatten)]
        sysfs: SysfsArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Operator actions on PCI functions (the same code paths the daemon uses).
    Pci {
        #[command(flatten)]
        sysfs: SysfsArgs,
        #[command(subcommand)]
        action: PciAction,
    },
}

#[derive(Debug, Subcommand)]
enum PciAction {
    /// Set the number of VFs of a PF (through 0 when changing a non-zero count).
    SetNumvfs {
        /// The PF's PCI address.
        pf: PciAddress,
        /// The VF count.
        count: u32,
    },
    /// Bind a function to a driver (driver_override + drivers_probe).
    Bind {
        /// The function's PCI address.
        address: PciAddress,
        /// The driver, e.g. vfio-pci.
        driver: String,
    },
    /// Unbind a function from its driver.
    Unbind {
        /// The function's PCI address.
        address: PciAddress,
    },
    /// Bind back to a driver and clear driver_override.
    Restore {
        /// The function's PCI address.
        address: PciAddress,
        /// The original driver; omit to leave it unbound.
        driver: Option<String>,
    },
}

/// Where sysfs is.
#[derive(Debug, Args)]
pub(crate) struct SysfsArgs {
    /// A sysfs root (a real /sys, or a fixture tree such as testdata/sysfs/node);
    /// overrides the two paths below.
    #[arg(long, value_name = "DIR")]
    sysfs_root: Option<PathBuf>,
    /// PCI devices directory.
    #[arg(long, env = "NSM_PCI_DEVICES_PATH", default_value = sriov_pci::DEFAULT_DEVICES_DIR)]
    pci_devices_path: PathBuf,
    /// PCI drivers directory.
    #[arg(long, env = "NSM_PCI_DRIVERS_PATH", default_value = sriov_pci::DEFAULT_DRIVERS_DIR)]
    pci_drivers_path: PathBuf,
}

impl SysfsArgs {
    /// The sysfs view; a fixture root (it carries `fake-kernel.json`) gets
    /// the fake kernel so writes react as on a real node.
    pub(crate) fn sysfs(&self) -> Result<Sysfs> {
        let Some(root) = &self.sysfs_root else {
            return Ok(Sysfs::new(&self.pci_devices_path, &self.pci_drivers_path));
        };
        if root.join(sriov_pci_fake::META_FILE).exists() {
            let fake = sriov_pci_fake::FakeKernel::attach(root)
                .with_context(|| format!("attaching the fake kernel to {}", root.display()))?;
            eprintln!(
                "note: {} is a fixture tree; writes go through the fake kernel",
                root.display()
            );
            return Ok(Sysfs::under_root(root).with_writer(Arc::new(fake)));
        }
        Ok(Sysfs::under_root(root))
    }
}

impl Cli {
    pub(crate) fn run(self) -> Result<()> {
        match self.command {
            Command::Inventory { sysfs, json } => {
                let inv = sysfs.sysfs()?.discover_all()?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&inv)?);
                } else {
                    print!("{}", crate::inventory::render(&inv));
                }
                Ok(())
            }
            Command::Pci { sysfs, action } => {
                let sysfs = sysfs.sysfs()?;
                match action {
                    PciAction::SetNumvfs { pf, count } => {
                        let vfs = sysfs.set_num_vfs(pf, count)?;
                        println!("{pf}: {} VFs", vfs.len());
                        for vf in vfs {
                            println!("  virtfn{} {}", vf.index, vf.address);
                        }
                    }
                    PciAction::Bind { address, driver } => {
                        let prev = sysfs.bind(address, &driver)?;
                        println!(
                            "{address}: bound to {driver} (was {})",
                            prev.as_deref().unwrap_or("unbound")
                        );
                    }
                    PciAction::Unbind { address } => {
                        let prev = sysfs.unbind(address)?;
                        println!(
                            "{address}: unbound (was {})",
                            prev.as_deref().unwrap_or("unbound")
                        );
                    }
                    PciAction::Restore { address, driver } => {
                        sysfs.restore_driver(address, driver.as_deref())?;
                        println!(
                            "{address}: restored to {}",
                            driver.as_deref().unwrap_or("no driver")
                        );
                    }
                }
                Ok(())
            }
        }
    }
}
