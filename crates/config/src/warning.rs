//! Things worth a log line that do not stop the forwarder.

use std::path::PathBuf;

use sriov_pci::PciAddress;

/// A non-fatal finding. The binary logs these; `check-config` prints them. Configured PFs that
/// are left out are not warnings but [`crate::SkippedPf`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// An `NSM_` variable this forwarder does not read (often a typo).
    UnknownVariable {
        /// The variable's name.
        name: String,
        /// A known variable within two edits of it.
        did_you_mean: Option<&'static str>,
    },
    /// The config file names no physical functions, so no VF will be offered.
    NoPhysicalFunctions {
        /// The config file.
        file: PathBuf,
    },
    /// The PF is bound to another driver than `pfKernelDriver` says (or to none).
    PfDriverMismatch {
        /// The PF.
        pf: PciAddress,
        /// `pfKernelDriver`.
        expected: String,
        /// What sysfs shows.
        found: Option<String>,
    },
    /// The PF has no VFs and creating them was not allowed (a dry run).
    VfsNotCreated {
        /// The PF.
        pf: PciAddress,
        /// How many would be created (`sriov_totalvfs`).
        total: u32,
    },
    /// `virtualFunctions` leaves out VFs sysfs has; they stay unused.
    VfsNotListed {
        /// The PF.
        pf: PciAddress,
        /// The unlisted VFs.
        vfs: Vec<PciAddress>,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownVariable { name, did_you_mean } => {
                write!(f, "unknown environment variable {name} is ignored")?;
                if let Some(known) = did_you_mean {
                    write!(f, " (did you mean {known}?)")?;
                }
                Ok(())
            }
            Self::NoPhysicalFunctions { file } => write!(
                f,
                "{}: no physicalFunctions configured; no VF will be offered",
                file.display()
            ),
            Self::PfDriverMismatch {
                pf,
                expected,
                found,
            } => write!(
                f,
                "PF {pf} is bound to {}, not to pfKernelDriver {expected:?}",
                found
                    .as_deref()
                    .map_or("no driver".to_string(), |d| format!("{d:?}"))
            ),
            Self::VfsNotCreated { pf, total } => write!(
                f,
                "PF {pf} has no VFs; the forwarder would create {total} (sriov_totalvfs)"
            ),
            Self::VfsNotListed { pf, vfs } => write!(
                f,
                "PF {pf}: {} not listed in virtualFunctions, left unused: {}",
                if vfs.len() == 1 { "VF" } else { "VFs" },
                vfs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

pub(crate) fn at(file: &std::path::Path, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{l}", file.display()),
        None => file.display().to_string(),
    }
}
