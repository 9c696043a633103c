//! From the config file to the pool's entries, and the transport check:
//! shared by the daemon and the read-only commands (`check-config`,
//! `pci set-numvfs`) so they judge a node the same way.

use std::path::Path;

use sriov_config::{
    EnvConfig, LoadedConfig, ReconcileOptions, SkippedPf, SriovConfig, Warning, reconcile,
};
use sriov_pci::{KnownVf, Sysfs, VirtFn};
use sriov_token_pool::PfEntry;

use crate::StartError;

/// Refuses to run with neither plaintext (`NSM_INSECURE=true`) nor a
/// SPIFFE Workload API (`SPIFFE_ENDPOINT_SOCKET`) to get an SVID from.
pub fn check_transport(env: &EnvConfig) -> Result<(), StartError> {
    if env.insecure || env.spiffe_endpoint_socket.is_some() {
        return Ok(());
    }
    Err(StartError::Transport(
        "secure mode needs the SPIFFE Workload API: set SPIFFE_ENDPOINT_SOCKET to the SPIRE \
         agent's socket (unix:///run/spire/sockets/agent.sock), or NSM_INSECURE=true to serve \
         and dial plaintext over unix sockets (development only)"
            .into(),
    ))
}

/// What [`pool_entries`] found. The caller reports `skipped` and `warnings`:
/// the daemon logs them, `check-config` prints them and judges `skipped`.
#[derive(Debug, Clone)]
pub struct PoolEntries {
    /// The usable PFs, each with the VFs the config allows.
    pub entries: Vec<PfEntry>,
    /// Configured PFs left out, each with its config line and the reason.
    pub skipped: Vec<SkippedPf>,
    /// Findings in the config file and on the node that change nothing served.
    pub warnings: Vec<Warning>,
    /// The config they come from (a reload's rescan reuses it).
    pub config: SriovConfig,
}

/// The pool's view of the configured PFs: each PF with exactly the VFs the
/// config file allows (all of them, or its `virtualFunctions`). With
/// `create_vfs`, PFs with fewer VFs than configured get them created.
pub fn pool_entries(
    config_file: &Path,
    sysfs: &Sysfs,
    create_vfs: bool,
) -> Result<PoolEntries, StartError> {
    let loaded = load_config(config_file)?;
    entries_of(
        config_file,
        &loaded.config,
        loaded.warnings,
        sysfs,
        create_vfs,
    )
}

/// Reads and parses the config file, with the errors `check-config` prints.
pub(crate) fn load_config(config_file: &Path) -> Result<LoadedConfig, StartError> {
    SriovConfig::load(config_file).map_err(|source| StartError::Config {
        path: config_file.to_owned(),
        source,
    })
}

/// [`pool_entries`] of a config already parsed (a reload's rescan of sysfs
/// under the config running); `warnings` are the parser's.
pub(crate) fn entries_of(
    config_file: &Path,
    config: &SriovConfig,
    mut warnings: Vec<Warning>,
    sysfs: &Sysfs,
    create_vfs: bool,
) -> Result<PoolEntries, StartError> {
    let ready = reconcile(config, sysfs, ReconcileOptions { create_vfs }).map_err(|source| {
        StartError::Reconcile {
            path: config_file.to_owned(),
            source,
        }
    })?;
    warnings.extend(ready.warnings);
    // Reconciling read each VF's virtfn link and IOMMU group, all the pool
    // keeps of a VF: its driver and netdevs are read when a Request acts on
    // it, so of 4096 VFs nothing more is read here.
    let mut entries = Vec::with_capacity(ready.physical_functions.len());
    for pf in &ready.physical_functions {
        let known: Vec<KnownVf> = pf
            .vfs
            .iter()
            .map(|v| KnownVf {
                vf: VirtFn {
                    index: v.index,
                    address: v.address,
                },
                iommu_group: v.iommu_group,
            })
            .collect();
        let phys = sysfs
            .physical_function_known(pf.address, &known)
            .map_err(|source| StartError::Sysfs {
                pf: pf.address.to_string(),
                source,
            })?;
        entries.push(PfEntry {
            names: pf.resource_names(),
            vf_kernel_driver: pf.config.vf_kernel_driver.clone(),
            pf: phys,
        });
    }
    Ok(PoolEntries {
        entries,
        skipped: ready.skipped,
        warnings,
        config: config.clone(),
    })
}
