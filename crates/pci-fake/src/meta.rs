//! What the fake kernel knows that sysfs does not show: drivers' ID tables.
//!
//! Stored as `fake-kernel.json` at the tree's root so any process (the
//! demo, a test in another crate) can attach a [`crate::FakeKernel`] to a
//! tree it did not build, including trees captured from a real machine.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name of the metadata at the tree's root.
pub const META_FILE: &str = "fake-kernel.json";

/// One driver the fake kernel can bind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverSpec {
    /// `vendor:device` pairs (lower-case hex, no 0x) the driver claims on its own.
    pub ids: Vec<String>,
    /// Whether binding creates a network interface under `net/`.
    pub netdev: bool,
}

/// The fake kernel's knowledge of a tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Drivers by name.
    pub drivers: BTreeMap<String, DriverSpec>,
    /// Interface names by PCI address, for functions whose name is not
    /// the predictable `enp<bus>s<slot>[f<fn>]` one.
    #[serde(default)]
    pub ifnames: BTreeMap<String, String>,
}

impl Meta {
    pub(crate) fn load(root: &Path) -> io::Result<Self> {
        let raw = std::fs::read(root.join(META_FILE))?;
        serde_json::from_slice(&raw).map_err(io::Error::other)
    }

    pub(crate) fn store(&self, root: &Path) -> io::Result<()> {
        let raw = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        std::fs::write(root.join(META_FILE), raw)
    }

    /// The driver that claims `vendor:device` by ID table, if any.
    pub(crate) fn matching_driver(&self, vendor: u16, device: u16) -> Option<&str> {
        let id = format!("{vendor:04x}:{device:04x}");
        self.drivers
            .iter()
            .find(|(_, spec)| spec.ids.contains(&id))
            .map(|(name, _)| name.as_str())
    }
}
