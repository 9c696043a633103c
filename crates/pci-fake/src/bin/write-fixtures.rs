//! Writes the shipped fixtures: `write-fixtures <testdata/sysfs dir>`.
//!
//! Each named fixture is rebuilt from scratch, so the committed trees are
//! always exactly what `sriov_pci_fake::fixtures` describes.
//! `write-fixtures --generated PFS VFS <dir>` writes a generated tree
//! instead (`fixtures::generated`), for runs that need more VFs than the
//! shipped ones have (the crash campaign's race).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, pfs, vfs, dir] = args.as_slice()
        && flag == "--generated"
    {
        let number = |s: &str| {
            s.parse::<u32>()
                .map_err(|e| std::io::Error::other(format!("{s:?}: {e}")))
        };
        let dir = PathBuf::from(dir);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        sriov_pci_fake::fixtures::generated(number(pfs)?, number(vfs)?).build_at(&dir)?;
        println!("wrote {}", dir.display());
        return Ok(());
    }
    let out = args
        .first()
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
