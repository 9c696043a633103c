//! Files written whole or not at all, for the state and the files other
//! programs read (the pool's snapshot, device-info files, CDI specs): a
//! reader sees the old content or the new, never a torn one, and after a
//! crash the new name points at synced data.
//!
//! The temp file has a random name, is created with `O_EXCL` and the final
//! mode, in the target's directory (a rename across filesystems is not
//! atomic); its data is synced before the rename and the directory after
//! it, since the rename lives in the directory's metadata.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("state.json");
//! sriov_files::write_atomic(&path, b"{}", 0o600, || {})?;
//! assert_eq!(std::fs::read(&path)?, b"{}");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Replaces `path` with `bytes`, mode `mode`, creating its directory if
/// needed. `before_rename` runs between the data's sync and the rename (the
/// crash campaign kills the process there).
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    before_rename: impl FnOnce(),
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    before_rename();
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_whole_with_the_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/file");
        write_atomic(&path, b"one", 0o640, || {}).unwrap();
        let mut seen_before_rename = None;
        write_atomic(&path, b"two", 0o600, || {
            seen_before_rename = Some(std::fs::read(&path).unwrap());
        })
        .unwrap();
        assert_eq!(seen_before_rename.as_deref(), Some(&b"one"[..]));
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"]);
    }
}
