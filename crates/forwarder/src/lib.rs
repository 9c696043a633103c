//! The NSM SR-IOV forwarder as a library: what `forwarder-sriov` runs, so
//! that the binary, the end-to-end driver, the benches and other Rust NSM
//! components start the same thing.
//!
//! [`Forwarder::builder`] takes the environment ([`sriov_config::EnvConfig`]);
//! [`Builder::start`] prepares the configured PFs, opens the VF pool on its
//! recorded state, rolls back Requests a killed predecessor left unfinished,
//! and starts the kubelet device plugins, the pod-resources watcher, the
//! sweep (`sweep.rs`), VF health from link events and kernel uevents
//! (`health.rs`), the NSM NetworkService and monitor servers and the
//! registry registration. [`Running::shutdown`] stops them in order.
//! [`Running::reload`] (SIGHUP, and any change of the config file's
//! directory) and [`Running::rescan`] (sysfs only) change what is served
//! without a restart (`reload.rs`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let env = sriov_config::EnvConfig::from_env()?.config;
//! let running = sriov_forwarder::Forwarder::builder(env).start().await?;
//! running.ready().await;
//! tokio::signal::ctrl_c().await?;
//! running.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod config_watch;
mod entries;
mod error;
mod health;
pub mod metrics;
mod readiness;
mod reload;
pub mod secure;
mod start;
mod sweep;
mod vf_follow;
mod vfio;

pub use entries::{PoolEntries, check_transport, pool_entries};
pub use error::StartError;
pub use readiness::Readiness;
pub use reload::ReloadError;
pub use sriov_token_pool::Reconfigured;
pub use start::{Builder, Forwarder, ReloadHandle, Running};
