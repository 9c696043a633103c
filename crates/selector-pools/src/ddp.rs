//! DDP profiles the way SRDP finds them: devlink's `fw.app.name` (for the device, then its
//! PF), else Intel's `ddptool`. Both are external commands, run only when a selector uses
//! `ddpProfiles`, and their answers are kept per device and driver (a profile changes only
//! with a driver reload). The same devlink answers whether RDMA is enabled on a device whose
//! RDMA files are gone (exclusive RDMA mode), only when a selector uses `isRdma`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde_json::Value;
use sriov_pci::PciAddress;

use crate::host::{ExtraFacts, HostDevice};

/// Answers per (device, driver).
type Cache = HashMap<(PciAddress, Option<String>), Option<String>>;

/// [`ExtraFacts`] from `devlink -j dev info` and `ddptool -l -a -j -s`.
#[derive(Debug)]
pub struct DdpTools {
    devlink: PathBuf,
    ddptool: PathBuf,
    cache: Mutex<Cache>,
    rdma: Mutex<HashMap<(PciAddress, Option<String>), bool>>,
}

impl Default for DdpTools {
    fn default() -> Self {
        Self::with_commands("devlink", "ddptool")
    }
}

impl DdpTools {
    /// The tools found on `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Specific commands (tests use scripts).
    pub fn with_commands(devlink: impl Into<PathBuf>, ddptool: impl Into<PathBuf>) -> Self {
        Self {
            devlink: devlink.into(),
            ddptool: ddptool.into(),
            cache: Mutex::new(HashMap::new()),
            rdma: Mutex::new(HashMap::new()),
        }
    }

    fn run(&self, program: &PathBuf, args: &[&str]) -> Option<Value> {
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `devlink -j dev info pci/<addr>`: `info.<handle>.versions.running."fw.app.name"`.
    fn devlink(&self, address: PciAddress) -> Option<String> {
        let handle = format!("pci/{address}");
        let v = self.run(&self.devlink, &["-j", "dev", "info", &handle])?;
        let info = v.get("info")?.as_object()?.values().next()?;
        let name = info.get("versions")?.get("running")?.get("fw.app.name")?;
        name.as_str().filter(|s| !s.is_empty()).map(str::to_string)
    }

    /// `ddptool -l -a -j -s <addr>`: `DDPInventory.DDPpackage.name`.
    fn ddptool(&self, address: PciAddress) -> Option<String> {
        let v = self.run(
            &self.ddptool,
            &["-l", "-a", "-j", "-s", &address.to_string()],
        )?;
        let name = v.get("DDPInventory")?.get("DDPpackage")?.get("name")?;
        name.as_str().filter(|s| !s.is_empty()).map(str::to_string)
    }
}

impl DdpTools {
    /// `devlink -j dev param show pci/<addr> name enable_rdma`: the first value.
    fn enable_rdma(&self, address: PciAddress) -> Option<bool> {
        let handle = format!("pci/{address}");
        let v = self.run(
            &self.devlink,
            &["-j", "dev", "param", "show", &handle, "name", "enable_rdma"],
        )?;
        enable_rdma_of(&v)
    }
}

/// The first `value` of the `enable_rdma` parameter in devlink's JSON:
/// `{"param":{"pci/…":[{"name":"enable_rdma","values":[{"cmode":…,"value":true}]}]}}`.
pub(crate) fn enable_rdma_of(v: &serde_json::Value) -> Option<bool> {
    let params = v.get("param")?.as_object()?.values().next()?.as_array()?;
    params
        .iter()
        .find(|p| p.get("name").and_then(|n| n.as_str()) == Some("enable_rdma"))?
        .get("values")?
        .as_array()?
        .first()?
        .get("value")?
        .as_bool()
}

impl ExtraFacts for DdpTools {
    fn rdma_enabled(&self, device: &HostDevice) -> bool {
        let key = (device.address, device.driver.clone());
        if let Some(known) = self.rdma.lock().ok().and_then(|c| c.get(&key).copied()) {
            return known;
        }
        let found = self.enable_rdma(device.address).unwrap_or(false);
        if let Ok(mut c) = self.rdma.lock() {
            c.insert(key, found);
        }
        found
    }

    fn ddp_profile(&self, device: &HostDevice) -> Option<String> {
        let key = (device.address, device.driver.clone());
        if let Ok(cache) = self.cache.lock()
            && let Some(known) = cache.get(&key)
        {
            return known.clone();
        }
        let found = self
            .devlink(device.address)
            .or_else(|| device.pf.and_then(|pf| self.devlink(pf)))
            .or_else(|| self.ddptool(device.address));
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, found.clone());
        }
        found
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::enable_rdma_of;

    #[test]
    fn devlinks_enable_rdma_json_is_read() {
        let v = |value: &str| -> serde_json::Value {
            serde_json::from_str(&format!(
                r#"{{"param":{{"pci/0000:5e:00.3":[{{"name":"enable_rdma","type":"generic",
                    "values":[{{"cmode":"driverinit","value":{value}}}]}}]}}}}"#
            ))
            .unwrap()
        };
        assert_eq!(enable_rdma_of(&v("true")), Some(true));
        assert_eq!(enable_rdma_of(&v("false")), Some(false));
        assert_eq!(enable_rdma_of(&serde_json::json!({"param": {}})), None);
    }
}
