//! The standalone plugin's selector-defined resource pools, compatible with
//! k8snetworkplumbingwg/sriov-network-device-plugin (SRDP) configs. (The
//! forwarder's token pool is `sriov-token-pool`.)
//!
//! # Model
//!
//! A [`Config`] is SRDP's `{"resourceList": [...]}` read as Go's `encoding/json` reads it
//! (keys case-insensitive, `null` as absent) and then validated strictly: every error names
//! its field (`resourceList[1].selectors[0].pfNames[2]`), unknown keys become
//! [`ConfigWarning`]s instead of being ignored silently.
//!
//! A [`Host`] discovers PCI functions of class 0x02 (network) and 0x12 (accelerator) through
//! `sriov-pci`'s [`Sysfs`](sriov_pci::Sysfs), leaving out, as SRDP does, network functions whose
//! interface carries the default route and PFs with VFs enabled. Each device is described
//! with what selectors and info providers need ([`HostDevice`]); auxiliary devices
//! (sub-functions such as `mlx5_core.sf.2`) under network functions are described too, for
//! `auxNetDevice` pools, with their name as device ID.
//!
//! A [`PoolManager`] holds one [`ResourcePool`] per resource. On every
//! [`refresh`](PoolManager::refresh) it rediscovers the host and hands each device to the first
//! pool, and within it the first selector object, that takes it ([`selector::matches`], in
//! SRDP's selector order); so devices that appear later join their pool without a restart.
//! Health comes from a [`LinkHealth`] ([`follow_links`] feeds a [`LinkTable`] from netlink):
//! a PF link down or gone (down is ignored under [`IgnoreCarrier`]), or a VF netdev vanishing
//! while no pod holds the VF, makes the device unhealthy; so does a member whose driver is
//! unbound or that vanished (a VF after `sriov_numvfs` was lowered): it stays in its pool,
//! unhealthy, until it comes back. Refreshes are event-driven: [`follow_links`] and
//! [`follow_uevents`] (kernel uevents: driver bind/unbind, device add/remove) call back on
//! every change that matters, and on lost events.
//!
//! A [`ResourcePool`] is a `sriov-deviceplugin` [`Backend`](sriov_deviceplugin::Backend):
//! devices with NUMA node (none with `excludeTopology`) and PF as group, for
//! `GetPreferredAllocation` under the resource's `allocationPolicy` (`packed`, `spread` or
//! `numa`; absent, kubelet chooses, as with SRDP), and Allocate returning SRDP's env (`PCIDEVICE_<PREFIX>_<NAME>` and `_INFO`),
//! device specs by driver (or CDI names with `--use-cdi`), and a device-info file per device.
//! A [`Reloader`] runs a new config without a restart: device plugins serve one [`PoolSlot`] per
//! resource, which a reload fills with a successor pool (same ListAndWatch channel, same
//! allocations); a device a pod holds is offered only by the pool that handed it out, or by
//! none ([`RetiredPool`]) once its resource is gone, until released. [`ConfigWatch`] follows
//! the config file's directory (ConfigMap `..data` swaps included).
//!
//! [`PoolManager::explain`] says for every device which pool took it and why the others did
//! not (`--dry-run`); [`PoolManager::report`] (`explain`) boils that down to one reason per
//! device (the nearest miss: the refusal that came latest in SRDP's selector order) and says
//! for every pool why it has the count it has (members, unhealthy, devices an earlier pool
//! took, devices discovery left out), as a table or as JSON.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use sriov_selector_pools::{Config, Host, HostPaths, NoLinkHealth, PoolManager, PoolSettings};
//!
//! let config = Config::parse(
//!     r#"{"resourceList": [{"resourceName": "intel_sriov_netdevice",
//!         "selectors": {"vendors": ["8086"], "drivers": ["iavf"]}}]}"#,
//!     "intel.com",
//! )?;
//! let manager = PoolManager::new(
//!     &config,
//!     Host::new(HostPaths::default()),
//!     PoolSettings::new("intel.com"),
//!     Arc::new(NoLinkHealth),
//! );
//! manager.refresh()?;
//! println!("{}", manager.explain()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
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

mod config;
mod ddp;
mod error;
mod files;
mod health;
mod host;
mod info;
pub mod metrics;
mod netlink_health;
mod policy;
mod pool;
mod reload;
mod report;
pub mod selector;
mod status;
mod switchdev;

pub use config::{
    AdditionalInfo, Config, ConfigWarning, DEFAULT_CONFIG_FILE, DEFAULT_RESOURCE_PREFIX,
    DeviceType, HexId, PfSelector, ResourceConfig, Selectors, Strictness, VDPA_TYPES,
};
pub use ddp::DdpTools;
pub use error::{ConfigError, PoolError};
pub use files::{
    CDI_SPEC_PREFIX, CDI_VERSION, CdiDeviceEntry, CdiDeviceNode, CdiDir, CdiEdits, CdiSpec,
    DEFAULT_CDI_DIR, DEFAULT_DEVINFO_DIR, DeviceInfoDir, device_info_file_name,
};
pub use health::{HealthCause, IgnoreCarrier, LinkHealth, LinkState, LinkTable, NoLinkHealth};
pub use host::{
    AuxDevice, Discovery, ExtraFacts, Host, HostDevice, HostPaths, NoExtraFacts, RdmaDevice,
    SkipReason, VdpaDevice, default_route_interfaces,
};
pub use info::{
    DEVICE_INFO_VERSION, DeviceInfo, DeviceInfoFile, PciInfo, VFIO_CONTAINER, VdpaInfo,
    device_info, device_info_file, env_name,
};
pub use netlink_health::{affects_pools, follow_links, follow_uevents};
pub use pool::{
    Explanation, PoolManager, PoolMember, PoolSettings, Refusal, ResourcePool, Verdict,
};
pub use reload::{ConfigDiff, ConfigWatch, PoolSlot, ReloadError, Reloaded, Reloader, RetiredPool};
pub use report::{DeviceNote, DeviceReport, Outcome, PoolRefusal, PoolReport, Report};
/// A resource's `allocationPolicy` ([`ResourceConfig::allocation_policy`]).
pub use sriov_deviceplugin::AllocationPolicy;
pub use status::{PluginStatus, Readiness, follow_readiness};
