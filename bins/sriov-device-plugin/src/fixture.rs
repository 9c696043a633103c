//! Fixture trees as `--sysfs-root`: the fake kernel drives them in `testing` builds.
//!
//! Device-plugin mode only reads sysfs, but DRA mode binds drivers at Prepare. A tree marked
//! by `fake-kernel.json` (`sriov_pci_fake::META_FILE`; a real sysfs never has it) is driven
//! by the fake kernel in a `testing` build, so writes react as on a node; any other build
//! reads such a tree as it is and refuses to write to it.

use std::path::Path;

use sriov_pci::Sysfs;

/// The marker file at a fixture tree's root (`sriov_pci_fake::META_FILE`, named here so that
/// a build without the fake can still recognise one).
const FIXTURE_MARK: &str = "fake-kernel.json";

/// Sysfs under `root`; `writes` says whether the caller will write (DRA mode).
pub(crate) fn sysfs(root: &Path, writes: bool) -> anyhow::Result<Sysfs> {
    let sysfs = Sysfs::under_root(root);
    if !root.join(FIXTURE_MARK).exists() {
        return Ok(sysfs);
    }
    #[cfg(feature = "testing")]
    {
        use anyhow::Context as _;
        let _ = writes;
        let fake = sriov_pci_fake::FakeKernel::attach(root)
            .with_context(|| format!("attaching the fake kernel to {}", root.display()))?;
        tracing::info!(root = %root.display(), "fixture tree: writes go through the fake kernel");
        Ok(sysfs.with_writer(std::sync::Arc::new(fake)))
    }
    #[cfg(not(feature = "testing"))]
    {
        anyhow::ensure!(
            !writes,
            "{} is a fixture tree ({FIXTURE_MARK}): this build has no fake kernel to drive it \
             (build with --features testing for the tests)",
            root.display()
        );
        Ok(sysfs)
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    #[test]
    fn the_mark_is_the_fake_kernels() {
        assert_eq!(super::FIXTURE_MARK, sriov_pci_fake::META_FILE);
    }
}
