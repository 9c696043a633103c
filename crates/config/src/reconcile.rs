//! Checking a parsed config against sysfs, and creating VFs where a PF has none.

use std::path::PathBuf;

use sriov_pci::{PciAddress, PciError, Sysfs};

use crate::error::{Error, FileError};
use crate::file::{PfConfig, SriovConfig};
use crate::warning::{Warning, at};

/// How [`reconcile`] may change the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileOptions {
    /// Create `sriov_totalvfs` VFs on PFs that have none (the forwarder: yes; `check-config`: no).
    pub create_vfs: bool,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        Self { create_vfs: true }
    }
}

/// A PF that is present, has SR-IOV, and whose VFs are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyPf {
    /// The PF.
    pub address: PciAddress,
    /// Its settings from the file.
    pub config: PfConfig,
    /// The VFs to use, in VF-index order.
    pub vfs: Vec<ReadyVf>,
    /// How many VFs [`reconcile`] created on it (0 when it already had some).
    pub created_vfs: u32,
}

impl ReadyPf {
    /// The resource names it serves: every `serviceDomain/capability` pair.
    pub fn resource_names(&self) -> Vec<String> {
        self.config.resource_names()
    }
}

/// A VF as sysfs shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyVf {
    /// Its address.
    pub address: PciAddress,
    /// The `N` of the PF's `virtfnN` link.
    pub index: u32,
    /// Its IOMMU group, when the system has an IOMMU.
    pub iommu_group: Option<u32>,
}

/// A configured PF that [`reconcile`] leaves out: it contributes no VF to any resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPf {
    /// The PF.
    pub pf: PciAddress,
    /// The config file.
    pub file: PathBuf,
    /// Line of the PF in it.
    pub line: Option<usize>,
    /// The resources it would have served (`serviceDomain/capability`).
    pub resource_names: Vec<String>,
    /// Why it is left out.
    pub reason: SkipReason,
}

/// Why [`reconcile`] left a configured PF out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// sysfs has no such device: the PF is not on this node.
    Absent {
        /// Where sysfs would have it.
        path: PathBuf,
    },
    /// The device has no SR-IOV capability: it is not a PF.
    NotSriov {
        /// The `sriov_totalvfs` attribute that is missing.
        path: PathBuf,
    },
    /// `sriov_totalvfs` is 0: the device can have no VFs.
    NoVfsPossible,
    /// VFs are enabled, but sysfs links none of them to the PF.
    NoVfs {
        /// `sriov_numvfs`.
        num_vfs: u32,
    },
}

impl SkipReason {
    /// Whether the PF is not on this node at all (rather than present but unusable).
    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Absent { .. })
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Absent { path } => write!(f, "not on this node ({} missing)", path.display()),
            Self::NotSriov { path } => {
                write!(f, "not an SR-IOV PF ({} missing)", path.display())
            }
            // Firmware or BIOS settings are the usual cause, and the operator's next step.
            Self::NoVfsPossible => write!(
                f,
                "sriov_totalvfs is 0, so it can have no VFs (is SR-IOV off in its firmware or BIOS?)"
            ),
            Self::NoVfs { num_vfs } => write!(
                f,
                "sriov_numvfs is {num_vfs}, but sysfs shows none of its VFs (no virtfnN links)"
            ),
        }
    }
}

impl std::fmt::Display for SkippedPf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: PF {} skipped: {}",
            at(&self.file, self.line),
            self.pf,
            self.reason
        )?;
        if !self.resource_names.is_empty() {
            write!(f, "; it would serve {}", self.resource_names.join(", "))?;
        }
        Ok(())
    }
}

/// The outcome of [`reconcile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// The usable PFs, by address.
    pub physical_functions: Vec<ReadyPf>,
    /// The configured PFs left out, by address, each with the reason.
    pub skipped: Vec<SkippedPf>,
    /// What is odd but changes nothing served.
    pub warnings: Vec<Warning>,
}

/// Checks `config` against `sysfs`.
///
/// Decisions, documented here because the Go original leaves them implicit:
/// - A PF the config names that sysfs lacks, that has no SR-IOV (no `sriov_totalvfs`, or a total
///   of 0), or whose enabled VFs sysfs does not show, is **skipped** and reported in
///   [`Reconciled::skipped`] with its line and a [`SkipReason`]: one ConfigMap usually serves a
///   whole DaemonSet, and nodes differ. The forwarder serves the PFs that exist; the caller decides
///   whether a missing one is acceptable (`check-config --allow-missing`).
/// - A PF bound to another driver than `pfKernelDriver` (or to none) is a warning: its VFs still work.
/// - A PF with 0 VFs gets `sriov_totalvfs` of them (through `sriov_pci::Sysfs::set_num_vfs`), as the
///   Go original does; with [`ReconcileOptions::create_vfs`] off (`check-config`) it is a warning.
/// - `virtualFunctions`, when present, is the exact set of VFs to use. Each must be a VF of that PF
///   in sysfs, in the IOMMU group the file says; a disagreement is an **error** naming the file and
///   line, since handing out a device the file did not mean is worse than not starting. VFs sysfs
///   has but the list omits are left unused, with a warning. (The Go original appends the VFs it
///   discovers to the listed ones, counting listed VFs twice.)
///
/// Every listed-VF disagreement is reported at once, each with its line; a sysfs read or write
/// failure stops at once with [`Error::Sysfs`].
pub fn reconcile(
    config: &SriovConfig,
    sysfs: &Sysfs,
    options: ReconcileOptions,
) -> Result<Reconciled, Error> {
    let mut ready = Vec::new();
    let mut skipped = Vec::new();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    let sys_err = |pf: PciAddress| move |source: PciError| Error::Sysfs { pf, cause: source };

    // First each PF's own facts, one PF after the other: a few reads each,
    // and VFs are created here, in the file's order, before anything else.
    let mut firsts = Vec::with_capacity(config.physical_functions.len());
    for (&pf, pf_config) in &config.physical_functions {
        firsts.push(first_pass(pf, pf_config, sysfs, options)?);
    }
    // Then the VFs, PFs side by side: two reads per VF (its `virtfnN` link
    // and its IOMMU group), thousands on a big node, independent of each
    // other and the kernel's work, which the cores share.
    let vfs_read = sriov_pci::in_parallel(&firsts, |first| read_vfs(first, sysfs))?;

    for (first, vfs_read) in firsts.into_iter().zip(vfs_read) {
        let FirstPass {
            pf,
            config: pf_config,
            outcome,
            warnings: found,
        } = first;
        warnings.extend(found);
        let mut skip = |reason: SkipReason| {
            skipped.push(SkippedPf {
                pf,
                file: config.file.clone(),
                line: pf_config.line,
                resource_names: pf_config.resource_names(),
                reason,
            })
        };
        let (created_vfs, num_vfs, would_create) = match outcome {
            Outcome::Skip(reason) => {
                skip(reason);
                continue;
            }
            Outcome::Go {
                created_vfs,
                num_vfs,
                would_create,
            } => (created_vfs, num_vfs, would_create),
        };
        let Some(VfsRead { in_sysfs, groups }) = vfs_read else {
            continue;
        };
        // One reason for the PF says more than an error for each VF it lists.
        if in_sysfs.is_empty() && !would_create {
            skip(SkipReason::NoVfs { num_vfs });
            continue;
        }
        let mut vfs = Vec::new();
        match &pf_config.virtual_functions {
            None => {
                vfs.extend(in_sysfs.iter().zip(groups).map(|(vf, group)| ReadyVf {
                    address: vf.address,
                    index: vf.index,
                    iommu_group: group,
                }));
            }
            Some(listed) => {
                let field = |i: usize| format!("physicalFunctions.{pf}.virtualFunctions[{i}]");
                for (i, want) in listed.iter().enumerate() {
                    let mut problem = |message: String| {
                        errors.push(FileError {
                            file: config.file.clone(),
                            line: want.line,
                            column: None,
                            field: field(i),
                            message,
                        })
                    };
                    let Some(found) = in_sysfs.iter().find(|v| v.address == want.address) else {
                        let message = if !sysfs.exists(want.address) {
                            format!(
                                "VF {} does not exist in sysfs ({})",
                                want.address,
                                sysfs.device_dir(want.address).display()
                            )
                        } else {
                            match sysfs.physfn(want.address).map_err(sys_err(pf))? {
                                Some(owner) => format!(
                                    "VF {} is listed under PF {pf}, but sysfs says its PF is {owner}",
                                    want.address
                                ),
                                None => format!(
                                    "{} is listed as a VF of {pf}, but sysfs shows no physfn link: \
                                     it is not a VF",
                                    want.address
                                ),
                            }
                        };
                        problem(message);
                        continue;
                    };
                    let group = sysfs.iommu_group(found.address).map_err(sys_err(pf))?;
                    if group != Some(want.iommu_group) {
                        let saw = group.map_or("none".to_string(), |g| g.to_string());
                        problem(format!(
                            "VF {} is listed with iommuGroup {}, but sysfs says {saw}",
                            want.address, want.iommu_group
                        ));
                        continue;
                    }
                    vfs.push(ReadyVf {
                        address: found.address,
                        index: found.index,
                        iommu_group: group,
                    });
                }
                let unlisted: Vec<PciAddress> = in_sysfs
                    .iter()
                    .map(|v| v.address)
                    .filter(|a| !listed.iter().any(|l| l.address == *a))
                    .collect();
                if !unlisted.is_empty() {
                    warnings.push(Warning::VfsNotListed { pf, vfs: unlisted });
                }
            }
        }
        vfs.sort_by_key(|v| v.index);
        ready.push(ReadyPf {
            address: pf,
            config: pf_config.clone(),
            vfs,
            created_vfs,
        });
    }
    if !errors.is_empty() {
        return Err(Error::File { errors });
    }
    Ok(Reconciled {
        physical_functions: ready,
        skipped,
        warnings,
    })
}

/// A configured PF after [`first_pass`]: left out, or to be read further.
struct FirstPass<'a> {
    pf: PciAddress,
    config: &'a PfConfig,
    outcome: Outcome,
    /// Its warnings, said in the file's order with the PF's later ones.
    warnings: Vec<Warning>,
}

enum Outcome {
    Skip(SkipReason),
    Go {
        created_vfs: u32,
        num_vfs: u32,
        /// A dry run's PF without VFs, served since the daemon would create them.
        would_create: bool,
    },
}

/// A PF's own facts: present, SR-IOV, its driver (a warning when not the
/// configured one) and its VF count, creating `sriov_totalvfs` VFs when it
/// has none and `options` allow.
fn first_pass<'a>(
    pf: PciAddress,
    pf_config: &'a PfConfig,
    sysfs: &Sysfs,
    options: ReconcileOptions,
) -> Result<FirstPass<'a>, Error> {
    let sys_err = |source: PciError| Error::Sysfs { pf, cause: source };
    let mut warnings = Vec::new();
    let done = |outcome, warnings| {
        Ok(FirstPass {
            pf,
            config: pf_config,
            outcome,
            warnings,
        })
    };
    if !sysfs.exists(pf) {
        return done(
            Outcome::Skip(SkipReason::Absent {
                path: sysfs.device_dir(pf),
            }),
            warnings,
        );
    }
    let total = match sysfs.total_vfs(pf) {
        Ok(0) => return done(Outcome::Skip(SkipReason::NoVfsPossible), warnings),
        Err(PciError::NotSriov { path, .. }) => {
            return done(Outcome::Skip(SkipReason::NotSriov { path }), warnings);
        }
        Ok(n) => n,
        Err(e) => return Err(sys_err(e)),
    };
    let driver = sysfs.driver(pf).map_err(sys_err)?;
    if driver.as_deref() != Some(pf_config.pf_kernel_driver.as_str()) {
        warnings.push(Warning::PfDriverMismatch {
            pf,
            expected: pf_config.pf_kernel_driver.clone(),
            found: driver,
        });
    }
    let mut created_vfs = 0;
    let mut num_vfs = sysfs.num_vfs(pf).map_err(sys_err)?;
    // In a dry run a PF without VFs is still served: the daemon would create them.
    let mut would_create = false;
    if num_vfs == 0 {
        if options.create_vfs {
            sysfs.set_num_vfs(pf, total).map_err(sys_err)?;
            created_vfs = total;
            num_vfs = total;
            tracing::info!(%pf, count = total, "created VFs on a PF that had none");
        } else {
            warnings.push(Warning::VfsNotCreated { pf, total });
            would_create = true;
        }
    }
    done(
        Outcome::Go {
            created_vfs,
            num_vfs,
            would_create,
        },
        warnings,
    )
}

/// A PF's VFs as sysfs links them, and, when the config lists none (all
/// are used), each one's IOMMU group in the same order.
struct VfsRead {
    in_sysfs: Vec<sriov_pci::VirtFn>,
    groups: Vec<Option<u32>>,
}

/// The reads of [`reconcile`] that grow with the VFs, for one PF; `None`
/// for a PF already left out.
fn read_vfs(first: &FirstPass<'_>, sysfs: &Sysfs) -> Result<Option<VfsRead>, Error> {
    let pf = first.pf;
    let sys_err = |source: PciError| Error::Sysfs { pf, cause: source };
    let Outcome::Go { would_create, .. } = first.outcome else {
        return Ok(None);
    };
    let in_sysfs = sysfs.vfs(pf).map_err(sys_err)?;
    // Listed VFs are checked one by one against the file; an empty PF is skipped.
    let groups =
        if first.config.virtual_functions.is_some() || (in_sysfs.is_empty() && !would_create) {
            Vec::new()
        } else {
            in_sysfs
                .iter()
                .map(|vf| sysfs.iommu_group(vf.address))
                .collect::<Result<_, _>>()
                .map_err(sys_err)?
        };
    Ok(Some(VfsRead { in_sysfs, groups }))
}
