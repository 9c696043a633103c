//! Matching one device against one selector object, in SRDP's order, with the reason a
//! device was refused (for `--dry-run`).

use std::fmt;

use crate::config::{DeviceType, PfSelector, Selectors};
use crate::host::HostDevice;

/// Why a selector object refused a device: the first selector (in SRDP's order) it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The selector's config key (`vendors`, `pfNames`, ...).
    pub selector: &'static str,
    /// What the device has instead.
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.selector, self.reason)
    }
}

fn reject(selector: &'static str, reason: impl Into<String>) -> Result<(), Rejection> {
    Err(Rejection {
        selector,
        reason: reason.into(),
    })
}

fn shown(v: Option<&str>) -> &str {
    v.unwrap_or("none")
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    let v: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    format!("[{}]", v.join(", "))
}

fn one_of(
    selector: &'static str,
    wanted: &[String],
    have: Option<&str>,
    what: &str,
) -> Result<(), Rejection> {
    if wanted.is_empty() || have.is_some_and(|h| wanted.iter().any(|w| w == h)) {
        return Ok(());
    }
    reject(
        selector,
        format!("{what} {} is not in {}", shown(have), list(wanted)),
    )
}

/// `pfNames` and `rootDevices`: the PF must be listed (case-insensitively), and when the entry
/// has `#` ranges the VF index must be in one. SRDP consults only the first entry naming the
/// PF; here every entry naming it counts, so `pf#0-1` and `pf#4` in one list take 0, 1 and 4.
fn pf_match(
    selector: &'static str,
    entries: &[PfSelector],
    pf: Option<&str>,
    index: Option<u32>,
) -> Result<(), Rejection> {
    if entries.is_empty() {
        return Ok(());
    }
    let Some(pf) = pf else {
        return reject(selector, "it has no PF (not a VF)");
    };
    let named: Vec<&PfSelector> = entries
        .iter()
        .filter(|e| e.pf.eq_ignore_ascii_case(pf))
        .collect();
    if named.is_empty() {
        let raws: Vec<&str> = entries.iter().map(|e| e.raw.as_str()).collect();
        return reject(selector, format!("PF {pf} is not in {}", list(&raws)));
    }
    if named.iter().any(|e| e.takes(index)) {
        return Ok(());
    }
    let raws: Vec<&str> = named.iter().map(|e| e.raw.as_str()).collect();
    reject(
        selector,
        format!(
            "VF index {} of {pf} is outside {}",
            index.map_or("none".to_string(), |i| i.to_string()),
            list(&raws)
        ),
    )
}

/// Whether `sel` takes `dev`, checking in SRDP's order: vendors, devices, drivers,
/// pciAddresses, acpiIndexes, pfNames, rootDevices, linkTypes, ddpProfiles, pKeys, isRdma,
/// vdpaType; for auxNetDevice vendors, devices, drivers, auxTypes, pfNames, rootDevices,
/// linkTypes, isRdma. `needVhostNet` selects nothing; it adds devices.
pub fn matches(
    sel: &Selectors,
    dev: &HostDevice,
    device_type: DeviceType,
) -> Result<(), Rejection> {
    if !sel.vendors.is_empty() && !sel.vendors.iter().any(|v| v.value == dev.vendor) {
        let raws: Vec<&str> = sel.vendors.iter().map(|v| v.raw.as_str()).collect();
        return reject(
            "vendors",
            format!("vendor {:04x} is not in {}", dev.vendor, list(&raws)),
        );
    }
    if !sel.devices.is_empty() && !sel.devices.iter().any(|v| v.value == dev.device) {
        let raws: Vec<&str> = sel.devices.iter().map(|v| v.raw.as_str()).collect();
        return reject(
            "devices",
            format!("device {:04x} is not in {}", dev.device, list(&raws)),
        );
    }
    one_of("drivers", &sel.drivers, dev.driver.as_deref(), "driver")?;
    if !sel.pci_addresses.is_empty() && !sel.pci_addresses.contains(&dev.address) {
        return reject(
            "pciAddresses",
            format!(
                "address {} is not in {}",
                dev.address,
                list(&sel.pci_addresses)
            ),
        );
    }
    match device_type {
        DeviceType::Accelerator => return Ok(()),
        DeviceType::AuxNetDevice => return matches_aux(sel, dev),
        DeviceType::NetDevice => {}
    }
    one_of(
        "acpiIndexes",
        &sel.acpi_indexes,
        dev.acpi_index.as_deref(),
        "ACPI index",
    )?;
    pf_and_link(sel, dev)?;
    one_of(
        "ddpProfiles",
        &sel.ddp_profiles,
        dev.ddp_profile.as_deref(),
        "DDP profile",
    )?;
    one_of("pKeys", &sel.pkeys, dev.pkey.as_deref(), "partition key")?;
    rdma(sel, dev)?;
    if let Some(want) = &sel.vdpa_type {
        match &dev.vdpa {
            Some(v) if &v.kind == want => {}
            Some(v) => {
                return reject(
                    "vdpaType",
                    format!("its vDPA device {} is {}", v.name, v.kind),
                );
            }
            None => return reject("vdpaType", "it has no vDPA device"),
        }
    }
    Ok(())
}

/// pfNames, rootDevices and linkTypes, in SRDP's order (shared by
/// netDevice and auxNetDevice pools).
fn pf_and_link(sel: &Selectors, dev: &HostDevice) -> Result<(), Rejection> {
    pf_match(
        "pfNames",
        &sel.pf_names,
        dev.pf_name.as_deref(),
        dev.vf_index,
    )?;
    let pf_addr = dev.pf.map(|a| a.to_string());
    pf_match(
        "rootDevices",
        &sel.root_devices,
        pf_addr.as_deref(),
        dev.vf_index,
    )?;
    one_of(
        "linkTypes",
        &sel.link_types,
        dev.link_type.as_deref(),
        "link type",
    )?;
    Ok(())
}

/// isRdma: the device must have an RDMA device, or devlink's `enable_rdma` on (exclusive
/// RDMA mode), as SRDP's `IsRdma`.
fn rdma(sel: &Selectors, dev: &HostDevice) -> Result<(), Rejection> {
    if sel.is_rdma && dev.rdma.names.is_empty() && !dev.rdma.exclusive {
        return reject(
            "isRdma",
            "it has no RDMA device (are the RDMA modules loaded?)",
        );
    }
    Ok(())
}

/// The auxNetDevice part after vendors, devices and drivers (pciAddresses is not an aux key).
fn matches_aux(sel: &Selectors, dev: &HostDevice) -> Result<(), Rejection> {
    let kind = dev.aux.as_ref().map(|a| a.kind.as_str());
    one_of("auxTypes", &sel.aux_types, kind, "auxiliary type")?;
    pf_and_link(sel, dev)?;
    rdma(sel, dev)?;
    Ok(())
}
