//! Errors of this crate.

use std::path::PathBuf;

/// One bad environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvProblem {
    /// The value does not parse.
    BadValue {
        /// The variable, e.g. `NSM_DIAL_TIMEOUT`.
        variable: String,
        /// What it was set to.
        value: String,
        /// What was expected instead.
        expected: String,
    },
    /// Two spellings of one setting disagree.
    Conflict {
        /// One spelling.
        first: String,
        /// Its value.
        first_value: String,
        /// The other spelling.
        second: String,
        /// Its value.
        second_value: String,
    },
    /// A setting the Go forwarder honours that this build cannot act on:
    /// refused rather than silently ignored.
    Unsupported {
        /// The variable, e.g. `TELEMETRY`.
        variable: String,
        /// What it was set to.
        value: String,
        /// Why, and what to do instead.
        reason: String,
    },
}

impl std::fmt::Display for EnvProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadValue {
                variable,
                value,
                expected,
            } => write!(f, "{variable}={value:?}: expected {expected}"),
            Self::Conflict {
                first,
                first_value,
                second,
                second_value,
            } => write!(
                f,
                "{first}={first_value:?} and {second}={second_value:?} are two spellings of one \
                 setting and disagree: set only one"
            ),
            Self::Unsupported {
                variable,
                value,
                reason,
            } => write!(f, "{variable}={value:?} is not supported: {reason}"),
        }
    }
}

/// Where in the config file something is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Dotted path of the field, e.g. `physicalFunctions.0000:01:00.0.capabilities` (empty for the
    /// whole document).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more `NSM_*` variables are bad; all of them are listed.
    #[error("bad environment: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Environment {
        /// Every bad variable.
        problems: Vec<EnvProblem>,
    },
    /// The config file could not be read.
    #[error("cannot read the SR-IOV config file {file}: {cause}")]
    ReadFile {
        /// The config file.
        file: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
    /// The config file is malformed or breaks rules; each error names the file, line and field.
    #[error("{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    File {
        /// Every problem found (syntax and type errors stop at the first).
        errors: Vec<FileError>,
    },
    /// Reading or changing a PF in sysfs failed.
    #[error("PF {pf}: {cause}")]
    Sysfs {
        /// The PF being reconciled.
        pf: sriov_pci::PciAddress,
        /// What sysfs said (names the path).
        cause: sriov_pci::PciError,
    },
}
