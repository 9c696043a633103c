//! `check-config`: validates the environment and the SR-IOV config file
//! against sysfs without changing anything, and says what would be served.

use anyhow::Result;
use sriov_config::EnvConfig;

pub(crate) fn run() -> Result<()> {
    let loaded = EnvConfig::from_env()?;
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    let env = loaded.config;
    if let Err(e) = sriov_forwarder::check_transport(&env) {
        println!("warning: {e}");
    }
    let sysfs = crate::cli::sysfs_at(&env.pci_devices_path, &env.pci_drivers_path, false)?;
    let entries = sriov_forwarder::pool_entries(&env.sriov_config_file, &sysfs, false)?;
    println!("config file {}: OK", env.sriov_config_file.display());
    for e in &entries {
        println!(
            "  PF {} ({}): {} VFs, VF driver {}, serves {}",
            e.pf.device.address,
            e.pf.device.driver.as_deref().unwrap_or("no driver"),
            e.pf.vfs.len(),
            e.vf_kernel_driver,
            e.names.join(", ")
        );
    }
    print!("{}", crate::inventory::render_resources(&entries));
    Ok(())
}
