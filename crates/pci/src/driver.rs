//! Binding functions to drivers, unbinding them, and restoring the original driver.

use crate::failpoint::failpoint;
use crate::{PciAddress, PciError, Sysfs};

impl Sysfs {
    /// Binds `address` to `driver`, unbinding it from another driver first.
    ///
    /// Uses `driver_override` + `drivers_probe` rather than the driver's
    /// `bind` file: `bind` only works when the driver's ID table matches,
    /// which vfio-pci's does not for arbitrary VFs. The override stays set
    /// so a later reprobe (module reload, rescan) keeps the device with
    /// this driver; [`Sysfs::restore_driver`] clears it. Returns the driver
    /// the device had before, so callers can restore it.
    ///
    /// ```
    /// # let fake = sriov_pci_fake::fixtures::x710_2port(sriov_pci_fake::FakeSysfs::builder()).build()?;
    /// # let sysfs = fake.sysfs();
    /// let vf = "0000:3b:02.0".parse()?;
    /// let previous = sysfs.bind(vf, "vfio-pci")?;
    /// assert_eq!(previous.as_deref(), Some("iavf"));
    /// assert_eq!(sysfs.driver(vf)?.as_deref(), Some("vfio-pci"));
    /// assert!(sysfs.netdevs(vf)?.is_empty()); // vfio-pci makes no interface
    ///
    /// sysfs.restore_driver(vf, previous.as_deref())?;
    /// assert_eq!(sysfs.driver(vf)?.as_deref(), Some("iavf"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bind(&self, address: PciAddress, driver: &str) -> Result<Option<String>, PciError> {
        self.require(address)?;
        let driver_dir = self.driver_dir(driver)?;
        self.count(1);
        if !driver_dir.is_dir() {
            return Err(PciError::NoDriver {
                driver: driver.to_string(),
                path: driver_dir,
            });
        }
        let previous = self.driver(address)?;
        if previous.as_deref() == Some(driver) {
            return Ok(previous);
        }
        if previous.is_some() {
            self.unbind(address)?;
            failpoint!("pci.bind.after-unbind");
        }
        let dir = self.device_dir(address);
        self.write_attr(&dir.join("driver_override"), driver)?;
        failpoint!("pci.bind.after-override");
        self.write_attr(&self.drivers_probe_path(), &address.to_string())?;
        self.wait_driver(address, Some(driver))?;
        Ok(previous)
    }

    /// Unbinds `address` from its driver; a no-op when it has none.
    /// Returns the driver it had.
    pub fn unbind(&self, address: PciAddress) -> Result<Option<String>, PciError> {
        self.require(address)?;
        let Some(current) = self.driver(address)? else {
            return Ok(None);
        };
        let unbind = self.driver_dir(&current)?.join("unbind");
        self.write_attr(&unbind, &address.to_string())?;
        self.wait_driver(address, None)?;
        Ok(Some(current))
    }

    /// Puts the device back with `original` (or with no driver), and clears
    /// `driver_override` so the kernel's normal matching applies again.
    pub fn restore_driver(
        &self,
        address: PciAddress,
        original: Option<&str>,
    ) -> Result<(), PciError> {
        match original {
            Some(driver) => {
                self.bind(address, driver)?;
            }
            None => {
                self.unbind(address)?;
            }
        }
        // An empty write clears the override ("\n" is what the kernel documents).
        self.write_attr(&self.device_dir(address).join("driver_override"), "\n")
    }

    /// `drivers_probe` sits beside the drivers directory (`/sys/bus/pci/drivers_probe`).
    fn drivers_probe_path(&self) -> std::path::PathBuf {
        self.drivers_dir()
            .parent()
            .unwrap_or(self.drivers_dir())
            .join("drivers_probe")
    }

    fn wait_driver(&self, address: PciAddress, want: Option<&str>) -> Result<(), PciError> {
        let link = self.device_dir(address).join("driver");
        let expected = match want {
            Some(d) => format!("driver {d}"),
            None => "no driver".to_string(),
        };
        self.wait_for(address, &link, &expected, || {
            let now = self.driver(address)?;
            let saw = match &now {
                Some(d) => format!("driver {d}"),
                None => "no driver".to_string(),
            };
            Ok((now.as_deref() == want, saw))
        })
    }
}
