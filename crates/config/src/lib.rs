//! The forwarder's configuration: the `NSM_*` environment and the SR-IOV config file.
//!
//! # Model
//!
//! [`EnvConfig`] holds every `NSM_*` setting ([`VARIABLES`] lists names, defaults and help, so
//! `--help` and the README cannot drift from the code). Durations use Go's syntax
//! ([`parse_go_duration`]) because existing NSM manifests are written in it. A bad value is an
//! error naming the variable, its value and what was expected; all bad values are reported at once.
//! Unknown `NSM_` variables are not errors but [`Warning`]s the caller logs.
//!
//! The SR-IOV config file is handled in two steps, so `check-config` can run both and report
//! precisely. [`SriovConfig::parse`] is pure: YAML syntax, types, unknown keys and the file's rules
//! (non-empty lists, PCI addresses, unique PFs and VFs, names valid as Kubernetes resource names),
//! each error naming the file, line and field. [`reconcile()`] then checks the parsed file against
//! sysfs through `sriov_pci::Sysfs`: PFs that are missing, lack SR-IOV or show no VFs are skipped
//! and reported as [`SkippedPf`]s with their line and [`SkipReason`], PFs with no VFs get
//! `sriov_totalvfs` of them, and listed VFs must match sysfs exactly ([`reconcile()`] documents
//! each decision).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use sriov_config::{EnvConfig, Warning};
//!
//! let loaded = EnvConfig::from_vars([
//!     ("NSM_DIAL_TIMEOUT", "1h30m"),
//!     ("NSM_LABELS", "p2p:true,zone:a"),
//!     ("NSM_DAIL_TIMEOUT", "5s"),
//! ])?;
//! assert_eq!(loaded.config.dial_timeout, Duration::from_secs(5400));
//! assert_eq!(loaded.config.ns_name, "forwarder");
//! assert_eq!(loaded.config.labels["zone"], "a");
//! assert_eq!(
//!     loaded.warnings,
//!     [Warning::UnknownVariable { name: "NSM_DAIL_TIMEOUT".into(), did_you_mean: Some("NSM_DIAL_TIMEOUT") }]
//! );
//!
//! let err = EnvConfig::from_vars([("NSM_MAX_TOKEN_LIFETIME", "10")]).unwrap_err();
//! assert!(err.to_string().contains("NSM_MAX_TOKEN_LIFETIME=\"10\": expected a Go duration"));
//!
//! let file = std::path::Path::new("pci.config");
//! let yaml = "physicalFunctions:\n  0000:01:00.0:\n    pfKernelDriver: i40e\n    vfKernelDriver: iavf\n    capabilities: []\n    serviceDomains: [sd]\n";
//! let err = sriov_config::SriovConfig::parse(file, yaml).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "pci.config:5: physicalFunctions.0000:01:00.0.capabilities: must not be empty"
//! );
//! # Ok::<(), sriov_config::Error>(())
//! ```

// This crate reads client, kubelet or file input: a panic here is a denial
// of service of a node agent, so the panicking shortcuts are refused.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod duration;
mod env;
mod error;
mod file;
mod locate;
mod reconcile;
mod url;
mod warning;

pub use duration::{DurationProblem, format_go_duration, parse_go_duration};
pub use env::{DEFAULT_STATE_DIR, EnvConfig, EnvVar, LoadedEnv, LogLevel, PREFIX, VARIABLES};
pub use error::{EnvProblem, Error, FileError};
pub use file::{LoadedConfig, PfConfig, SriovConfig, VfConfig};
pub use reconcile::{
    ReadyPf, ReadyVf, ReconcileOptions, Reconciled, SkipReason, SkippedPf, reconcile,
};
pub use url::{NsmUrl, UrlError};
pub use warning::Warning;
