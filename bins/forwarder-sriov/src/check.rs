//! `check-config`: validates the environment and the SR-IOV config file
//! against sysfs without changing anything, and says what would be served
//! and which configured PFs would not be, and why.

use anyhow::Result;
use sriov_config::EnvConfig;

/// `allow_missing`: configured PFs absent from this node do not fail the
/// check (a staged roll-out). Other skipped PFs never fail it: the daemon
/// starts without them too, and each is printed with its reason.
pub(crate) fn run(allow_missing: bool) -> Result<()> {
    let loaded = EnvConfig::from_env()?;
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    let env = loaded.config;
    if let Err(e) = sriov_forwarder::check_transport(&env) {
        println!("warning: {e}");
    }
    // The daemon refuses to start on these, so the check fails on them.
    crate::ops::Addrs::new(&env, None)?;
    let sysfs = crate::cli::sysfs_at(&env.pci_devices_path, &env.pci_drivers_path, false)?;
    let found = sriov_forwarder::pool_entries(&env.sriov_config_file, &sysfs, false)?;
    for w in &found.warnings {
        println!("warning: {w}");
    }
    let file = env.sriov_config_file.display();
    if found.skipped.is_empty() {
        println!("config file {file}: OK");
    } else {
        println!(
            "config file {file}: {} of {} configured PFs skipped",
            found.skipped.len(),
            found.skipped.len() + found.entries.len()
        );
    }
    for e in &found.entries {
        println!(
            "  PF {} ({}): {} VFs, VF driver {}, serves {}",
            e.pf.device.address,
            e.pf.device.driver.as_deref().unwrap_or("no driver"),
            e.pf.vfs.len(),
            e.vf_kernel_driver,
            e.names.join(", ")
        );
    }
    for s in &found.skipped {
        println!("  {s}");
    }
    print!("{}", crate::inventory::render_resources(&found.entries));

    let missing: Vec<String> = found
        .skipped
        .iter()
        .filter(|s| s.reason.is_absent())
        .map(|s| match s.line {
            Some(line) => format!("{} (line {line})", s.pf),
            None => s.pf.to_string(),
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if allow_missing {
        println!(
            "not on this node, allowed by --allow-missing: {}",
            missing.join(", ")
        );
        return Ok(());
    }
    anyhow::bail!(
        "{file}: configured PF{} not on this node: {}; pass --allow-missing if the config \
         names PFs this node does not have (a staged roll-out)",
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", ")
    )
}
