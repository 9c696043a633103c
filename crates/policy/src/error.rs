//! What can go wrong loading policies, and what a refusal says.

use std::path::PathBuf;

/// Loading or compiling a policy failed. Each variant names the file or mask
/// it failed on.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A mask of the spec is not a valid anchored regular expression.
    #[error("policy mask {mask:?} is not a valid regular expression: {cause}")]
    BadMask {
        /// The mask as written in the spec.
        mask: String,
        /// What the regex parser said.
        cause: String,
    },
    /// A mask named no file on disk and no shipped policy. NSM silently loads
    /// nothing here; we refuse, since a typo would otherwise turn
    /// authorization off.
    #[error("policy mask {mask:?} matches no file and no shipped policy")]
    NoMatch {
        /// The mask as written in the spec.
        mask: String,
    },
    /// A policy file could not be read.
    #[error("cannot read policy file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A policy does not parse or compile; the cause carries regorus' message
    /// with the line and column.
    #[error("policy {name} does not compile: {cause}")]
    Compile {
        /// The policy's file path (or shipped name, `etc/nsm/opa/...`).
        name: String,
        /// regorus' message, which points at the line.
        cause: String,
    },
}

/// A policy refused the call. The caller answers gRPC `PermissionDenied`
/// naming [`Denied::policy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("denied by policy {policy}: {reason}")]
pub struct Denied {
    /// The refusing policy's name: its file path as the spec found it
    /// (`etc/nsm/opa/server/prev_token_signed.rego` for a shipped one).
    pub policy: String,
    /// Why: `valid` was false or undefined, was not a boolean, or evaluation
    /// failed (all of which refuse: a broken policy must not let calls through).
    pub reason: String,
}
