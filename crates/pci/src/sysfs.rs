//! The sysfs handle: where the PCI tree is, and how attributes are read and written.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{PciAddress, PciError};

/// Default location of the PCI devices directory.
pub const DEFAULT_DEVICES_DIR: &str = "/sys/bus/pci/devices";
/// Default location of the PCI drivers directory.
pub const DEFAULT_DRIVERS_DIR: &str = "/sys/bus/pci/drivers";
/// How long actions wait for the kernel to reach the requested state.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes sysfs attributes.
///
/// The real kernel reacts to writes (creating VFs, moving `driver` links)
/// and may refuse them with an errno. [`KernelWriter`] just writes the
/// file; the fake tree in `sriov-pci-fake` implements this trait to apply
/// the same reactions and refusals to a temp dir, so the logic above it is
/// tested against kernel-like behaviour rather than against plain files.
pub trait AttrWriter: Send + Sync + fmt::Debug {
    /// Writes `value` to the attribute at `path`, as one `write(2)`.
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
}

/// Writes attributes of the real sysfs.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelWriter;

impl AttrWriter for KernelWriter {
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        use std::io::Write;
        // No O_CREAT and no O_TRUNC: sysfs attributes exist or the write is wrong.
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(value.as_bytes())
    }
}

/// A view of the PCI bus in sysfs, rooted at configurable directories.
///
/// Cheap to clone; clones share the writer and the read counter.
#[derive(Clone)]
pub struct Sysfs {
    devices: PathBuf,
    drivers: PathBuf,
    writer: Arc<dyn AttrWriter>,
    timeout: Duration,
    reads: Arc<AtomicU64>,
}

impl fmt::Debug for Sysfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sysfs")
            .field("devices", &self.devices)
            .field("drivers", &self.drivers)
            .field("writer", &self.writer)
            .finish()
    }
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::new(DEFAULT_DEVICES_DIR, DEFAULT_DRIVERS_DIR)
    }
}

impl Sysfs {
    /// A view of the given devices and drivers directories, writing through the kernel.
    pub fn new(devices: impl Into<PathBuf>, drivers: impl Into<PathBuf>) -> Self {
        Self {
            devices: devices.into(),
            drivers: drivers.into(),
            writer: Arc::new(KernelWriter),
            timeout: DEFAULT_TIMEOUT,
            reads: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A view of a whole sysfs mount (or a copy of one) at `root`:
    /// `root/bus/pci/devices` and `root/bus/pci/drivers`.
    ///
    /// ```
    /// use std::path::Path;
    /// use sriov_pci::Sysfs;
    ///
    /// let sysfs = Sysfs::under_root("/sys");
    /// assert_eq!(sysfs.devices_dir(), Path::new("/sys/bus/pci/devices"));
    /// assert_eq!(sysfs.drivers_dir(), Path::new("/sys/bus/pci/drivers"));
    /// ```
    pub fn under_root(root: impl AsRef<Path>) -> Self {
        let pci = root.as_ref().join("bus/pci");
        Self::new(pci.join("devices"), pci.join("drivers"))
    }

    /// Replaces the attribute writer (the fake kernel uses this).
    pub fn with_writer(mut self, writer: Arc<dyn AttrWriter>) -> Self {
        self.writer = writer;
        self
    }

    /// Sets how long actions wait for the kernel's result.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The devices directory (`/sys/bus/pci/devices` by default).
    pub fn devices_dir(&self) -> &Path {
        &self.devices
    }

    /// The drivers directory (`/sys/bus/pci/drivers` by default).
    pub fn drivers_dir(&self) -> &Path {
        &self.drivers
    }

    /// How many files, links and directories this view (and its clones) has read.
    pub fn files_read(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The directory of one device.
    pub fn device_dir(&self, address: PciAddress) -> PathBuf {
        self.devices.join(address.to_string())
    }

    /// The directory of one driver; rejects names that would leave the drivers dir.
    pub fn driver_dir(&self, driver: &str) -> Result<PathBuf, PciError> {
        if driver.is_empty()
            || driver == "."
            || driver == ".."
            || driver.len() > 255
            || driver
                .bytes()
                .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
        {
            return Err(PciError::InvalidDriverName(driver.to_string()));
        }
        Ok(self.drivers.join(driver))
    }

    pub(crate) fn count(&self, n: u64) {
        self.reads.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a small attribute, trimmed of the trailing newline.
    pub(crate) fn read_attr(&self, path: &Path) -> Result<String, PciError> {
        self.try_read_attr(path)?
            .ok_or_else(|| PciError::read(path, io::ErrorKind::NotFound.into()))
    }

    /// Reads a small attribute; `None` when it does not exist.
    pub(crate) fn try_read_attr(&self, path: &Path) -> Result<Option<String>, PciError> {
        self.count(1);
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(PciError::read(path, e)),
        };
        // sysfs attributes are at most a page; most of ours are a few bytes.
        let mut raw = Vec::with_capacity(128);
        f.read_to_end(&mut raw)
            .map_err(|e| PciError::read(path, e))?;
        Ok(Some(String::from_utf8_lossy(&raw).trim_end().to_string()))
    }

    /// The last component of a symlink's target (`driver`, `iommu_group`,
    /// `physfn`, `virtfnN`); `None` when the link does not exist.
    pub(crate) fn link_name(&self, path: &Path) -> Result<Option<String>, PciError> {
        self.count(1);
        match std::fs::read_link(path) {
            Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PciError::read(path, e)),
        }
    }

    /// Names in a directory; `None` when it does not exist.
    pub(crate) fn list_dir(&self, path: &Path) -> Result<Option<Vec<String>>, PciError> {
        self.count(1);
        let rd = match std::fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(PciError::read(path, e)),
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| PciError::read(path, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(Some(names))
    }

    pub(crate) fn write_attr(&self, path: &Path, value: &str) -> Result<(), PciError> {
        tracing::debug!(path = %path.display(), value, "sysfs write");
        self.writer
            .write(path, value)
            .map_err(|source| PciError::Write {
                path: path.to_path_buf(),
                value: value.to_string(),
                cause: source,
            })
    }

    /// Polls `check` until it reports the expected state or the timeout passes.
    /// `check` returns whether the state is reached and a description of what it saw.
    pub(crate) fn wait_for(
        &self,
        address: PciAddress,
        path: &Path,
        expected: &str,
        mut check: impl FnMut() -> Result<(bool, String), PciError>,
    ) -> Result<(), PciError> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            let (done, saw) = check()?;
            if done {
                return Ok(());
            }
            if start.elapsed() >= self.timeout {
                return Err(PciError::Timeout {
                    address,
                    path: path.to_path_buf(),
                    expected: expected.to_string(),
                    saw,
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
