//! DDP profiles the way SRDP finds them: devlink's `fw.app.name` (for the device, then its
//! PF), else Intel's `ddptool`. Both are external commands, run only when a selector uses
//! `ddpProfiles`, and their answers are kept per device and driver (a profile changes only
//! with a driver reload).

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

impl ExtraFacts for DdpTools {
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
