//! The standalone plugin's readiness and `/debug/state` (issue #17).

use std::fmt;

use futures::FutureExt;
use sriov_deviceplugin::Device;
use tokio::sync::watch;

use crate::PoolManager;

/// Whether every pool with devices is registered with kubelet, and if not,
/// which are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// What is missing, one line each; empty when ready.
    pub missing: Vec<String>,
}

impl Readiness {
    /// Ready: nothing is missing.
    pub fn is_ready(&self) -> bool {
        self.missing.is_empty()
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ready() {
            return f.write_str("ready");
        }
        write!(f, "not ready: {}", self.missing.join("; "))
    }
}

/// One resource's device plugin as readiness sees it.
#[derive(Debug, Clone)]
pub struct PluginStatus {
    /// The resource name.
    pub resource: String,
    /// Whether kubelet knows the plugin ([`sriov_deviceplugin::DevicePlugin::registered`]).
    pub registered: watch::Receiver<bool>,
    /// The pool's devices ([`sriov_deviceplugin::Backend::devices`]): a pool with none is not
    /// offered to kubelet, and is not waited for.
    pub devices: watch::Receiver<Vec<Device>>,
}

fn assess(plugins: &[PluginStatus]) -> Readiness {
    let missing = plugins
        .iter()
        .filter(|p| !p.devices.borrow().is_empty() && !*p.registered.borrow())
        .map(|p| format!("kubelet has not registered {}", p.resource))
        .collect();
    Readiness { missing }
}

/// Follows `plugins` (discovery is done before they start, so the pools are
/// loaded): ready while every pool with devices is registered with kubelet.
/// Spawns the follower on the current tokio runtime; it ends when every
/// plugin's senders are gone.
pub fn follow_readiness(plugins: Vec<PluginStatus>) -> watch::Receiver<Readiness> {
    let (tx, rx) = watch::channel(assess(&plugins));
    let mut plugins = plugins;
    tokio::spawn(async move {
        loop {
            for p in &mut plugins {
                p.registered.borrow_and_update();
                p.devices.borrow_and_update();
            }
            let now = assess(&plugins);
            tx.send_if_modified(|r| {
                let changed = *r != now;
                *r = now;
                changed
            });
            if plugins.is_empty() {
                return;
            }
            let changes = plugins
                .iter_mut()
                .flat_map(|p| [p.registered.changed().boxed(), p.devices.changed().boxed()]);
            let (result, _, _) = futures::future::select_all(changes).await;
            if result.is_err() || tx.is_closed() {
                return;
            }
        }
    });
    rx
}

impl PoolManager {
    /// The pools for `/debug/state`: per resource, every member (address, PF, driver,
    /// netdevs, why unhealthy) and the device IDs kubelet allocated. Device IDs are PCI
    /// addresses or auxiliary device names: nothing secret.
    pub fn debug_state(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for pool in self.pools() {
            let members: Vec<serde_json::Value> = pool
                .members()
                .into_iter()
                .map(|m| {
                    serde_json::json!({
                        "id": m.device.id(),
                        "address": m.device.address,
                        "pf": m.device.pf,
                        "driver": m.device.driver,
                        "netdevs": m.device.netdevs,
                        "healthy": m.unhealthy.is_none(),
                        "unhealthy": m.unhealthy,
                        "selector": m.selector,
                    })
                })
                .collect();
            out.insert(
                pool.resource_name().to_string(),
                serde_json::json!({
                    "devices": members,
                    "allocated": sriov_deviceplugin::Backend::allocated(pool.as_ref()),
                }),
            );
        }
        serde_json::Value::Object(out)
    }
}
