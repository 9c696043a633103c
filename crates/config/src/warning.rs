//! Things worth a log line that do not stop the forwarder.

use std::path::PathBuf;

/// A non-fatal finding. The binary logs these; `check-config` prints them.
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
        }
    }
}
