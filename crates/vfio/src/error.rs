use std::path::PathBuf;

/// Why a cgroup directory named by a client was refused before touching the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupDirProblem {
    /// The name is empty or names the root itself, which would grant the device to every container.
    Empty,
    /// The name starts with `/`; it must be relative to the cgroup root.
    Absolute,
    /// The name has a `..` component.
    ParentComponent,
    /// The name contains a NUL byte.
    Nul,
    /// The whole name is longer than [`crate::MAX_CGROUP_DIR_LEN`] bytes.
    TooLong {
        /// Length of the name in bytes.
        len: usize,
    },
    /// One component is longer than [`crate::MAX_CGROUP_COMPONENT_LEN`] bytes (the kernel's `NAME_MAX`).
    ComponentTooLong {
        /// Length of the component in bytes.
        len: usize,
    },
}

impl std::fmt::Display for CgroupDirProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty or names the cgroup root itself"),
            Self::Absolute => f.write_str("it is absolute; it must be relative to the cgroup root"),
            Self::ParentComponent => f.write_str("it contains a `..` component"),
            Self::Nul => f.write_str("it contains a NUL byte"),
            Self::TooLong { len } => write!(
                f,
                "it is {len} bytes long, more than the {} allowed",
                crate::MAX_CGROUP_DIR_LEN
            ),
            Self::ComponentTooLong { len } => write!(
                f,
                "one of its components is {len} bytes long, more than the {} allowed",
                crate::MAX_CGROUP_COMPONENT_LEN
            ),
        }
    }
}

/// Everything that can go wrong in this crate; each variant names the path or input it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device has no readable `iommu_group` link (no IOMMU, or no such device).
    #[error("cannot read the IOMMU group link {link}: {cause}")]
    IommuGroupLink {
        /// The `iommu_group` link that was read.
        link: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
    /// The `iommu_group` link does not end in a group number.
    #[error("IOMMU group link {link} points to {target}, which does not end in a group number")]
    IommuGroupTarget {
        /// The `iommu_group` link that was read.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// The group's `name` file exists but could not be read.
    #[error("cannot read the IOMMU group name {path}: {cause}")]
    IommuGroupName {
        /// The `name` file.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
    /// A textual IOMMU group (from a client or a config) is not a group number.
    #[error(
        "invalid IOMMU group {value:?}: expected a decimal number, optionally prefixed `noiommu-`"
    )]
    InvalidIommuGroup {
        /// The text that was given (shortened if very long).
        value: String,
    },
    /// A device node could not be stat'ed (usually: it does not exist, so the group is not bound to vfio-pci).
    #[error("cannot stat device node {path}: {cause}")]
    DeviceNode {
        /// The device node.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
    /// The path exists but is not a character device.
    #[error("{path} is not a character device")]
    NotCharDevice {
        /// The path that was stat'ed.
        path: PathBuf,
    },
    /// The cgroup root (`NSM_CGROUP_PATH`) could not be opened.
    #[error("cannot open the cgroup root {root}: {cause}")]
    CgroupRoot {
        /// The configured root.
        root: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
    /// The host runs cgroup v2, where `devices.allow` does not exist.
    #[error(
        "{root} is (or sits on) cgroup v2, which has no devices.allow: device access is enforced by BPF \
         programs the container runtime installs. Grant VFIO devices by returning /dev/vfio/vfio and \
         /dev/vfio/<group> as DeviceSpecs from the kubelet device plugin's Allocate instead"
    )]
    CgroupV2 {
        /// The configured root.
        root: PathBuf,
    },
    /// A client-supplied cgroup directory was refused by its shape.
    #[error("cgroup directory {requested} refused: {problem}")]
    CgroupDirRejected {
        /// The requested name, escaped and shortened for logs.
        requested: String,
        /// What is wrong with it.
        problem: CgroupDirProblem,
    },
    /// The cgroup directory exists but is not one we may grant to: it is
    /// not a container's leaf cgroup below a pod, or the path has a symlink.
    #[error("cgroup directory {requested} refused: {rule}")]
    CgroupDirRefused {
        /// The client's value, quoted and bounded.
        requested: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A client-supplied cgroup directory does not exist (or is not a directory) under the root.
    #[error("cgroup directory {requested} cannot be resolved at {path}: {cause}")]
    CgroupDirUnresolvable {
        /// The requested name, escaped and shortened for logs.
        requested: String,
        /// Where it was looked for.
        path: PathBuf,
        /// The underlying I/O error (`NotFound` when it does not exist).
        cause: std::io::Error,
    },
    /// A client-supplied cgroup directory resolves (through a symlink) outside the cgroup root.
    #[error("cgroup directory {requested} resolves to {resolved}, outside the cgroup root {root}")]
    CgroupDirEscapes {
        /// The requested name, escaped and shortened for logs.
        requested: String,
        /// Where it resolved to.
        resolved: PathBuf,
        /// The cgroup root it had to stay under.
        root: PathBuf,
    },
    /// The directory is not a v1 devices cgroup (it has no `devices.allow`).
    #[error("{path} is not a devices cgroup: it has no devices.allow")]
    NotDevicesCgroup {
        /// The directory.
        path: PathBuf,
    },
    /// A device's `vfio-dev` directory exists but could not be read.
    #[error("cannot read the VFIO character device directory {path}: {cause}")]
    CdevDir {
        /// The `vfio-dev` directory.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
    /// A device's `vfio-dev` directory names more than one character device.
    #[error("{path} names more than one VFIO character device: {names:?}")]
    CdevAmbiguous {
        /// The `vfio-dev` directory.
        path: PathBuf,
        /// The `vfioN` entries found.
        names: Vec<String>,
    },
    /// Writing an access rule failed.
    #[error("cannot write {rule:?} to {path}: {cause}")]
    WriteRule {
        /// `devices.allow` or `devices.deny`.
        path: PathBuf,
        /// The rule, e.g. `c 10:196 rw`.
        rule: String,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Escapes and shortens untrusted text so an error message stays one readable line.
pub(crate) fn shown(untrusted: &str) -> String {
    const MAX: usize = 96;
    let mut out = String::new();
    for (i, c) in untrusted.chars().enumerate() {
        if i == MAX {
            out.push_str(&format!("…({} bytes)", untrusted.len()));
            break;
        }
        out.extend(c.escape_debug());
    }
    format!("\"{out}\"")
}
