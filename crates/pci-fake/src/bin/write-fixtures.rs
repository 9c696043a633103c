//! Writes the shipped fixtures: `write-fixtures <testdata/sysfs dir>`.
//!
//! Each named fixture is rebuilt from scratch, so the committed trees are
//! always exactly what `sriov_pci_fake::fixtures` describes.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(sriov_pci_fake::testdata_sysfs);
    for name in sriov_pci_fake::fixtures::SHIPPED {
        let dir = out.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        if let Some(b) = sriov_pci_fake::fixtures::by_name(name) {
            b.build_at(&dir)?;
            println!("wrote {}", dir.display());
        }
    }
    Ok(())
}
