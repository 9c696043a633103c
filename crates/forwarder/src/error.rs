//! Why the forwarder did not start: one variant per stage, each naming what
//! it was working on; the cause is the error's source.

use std::path::PathBuf;

/// A start-up failure. Nothing the stage before it changed on the host is
/// left half-done: each stage either completes or changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Neither plaintext nor an implemented secure transport is configured.
    #[error("{0}")]
    Transport(String),
    /// No SVID came from the SPIFFE Workload API (secure mode).
    #[error("getting our SVID from the SPIFFE Workload API")]
    Identity(#[source] sriov_identity::Error),
    /// A policy set could not be loaded (secure mode).
    #[error("loading the {what} policies")]
    Policy {
        /// Which set: `server`, `monitor` or `NSM_REGISTRY_CLIENT_POLICIES`.
        what: &'static str,
        /// What was wrong with a file or mask.
        #[source]
        source: sriov_policy::PolicyError,
    },
    /// The config file could not be read or is invalid.
    #[error("loading the config file {path}")]
    Config {
        /// The file named by `NSM_SRIOV_CONFIG_FILE`.
        path: PathBuf,
        /// What was wrong with it.
        #[source]
        source: sriov_config::Error,
    },
    /// The configured PFs do not agree with sysfs, or preparing them failed.
    #[error("reconciling the config file {path} with sysfs")]
    Reconcile {
        /// The config file.
        path: PathBuf,
        /// What disagreed or failed.
        #[source]
        source: sriov_config::Error,
    },
    /// A configured PF could not be read back from sysfs.
    #[error("reading PF {pf} from sysfs")]
    Sysfs {
        /// The PF's PCI address.
        pf: String,
        /// The sysfs failure.
        #[source]
        source: sriov_pci::PciError,
    },
    /// The pool's state in `NSM_STATE_DIR` could not be opened or replayed.
    #[error("opening the VF pool's state in {dir}")]
    Pool {
        /// The state directory.
        dir: PathBuf,
        /// The store's failure.
        #[source]
        source: sriov_token_pool::PoolError,
    },
    /// The chain's elements are composed out of order (a build defect).
    #[error("composing the forwarder chain")]
    Chain(#[source] sriov_chain::contract::ContractError),
    /// The route netlink socket could not be opened.
    #[error("opening the netlink socket")]
    Netlink(#[source] sriov_netlink::Error),
    /// A socket URL, a client or the NSM socket could not be set up.
    #[error("{what}")]
    Nsm {
        /// Which URL, client or socket.
        what: String,
        /// The failure.
        #[source]
        source: sriov_nsm::Error,
    },
}
