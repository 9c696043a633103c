//! A writer for the `newc` cpio format, the only archive format the kernel
//! unpacks as an initramfs. Written here so the harness needs no host `cpio`
//! (Debian images often lack it).
//!
//! Format (see the kernel's Documentation/driver-api/early-userspace/buffer-format.rst):
//! each entry is a 110-byte ASCII header `070701` followed by thirteen 8-digit
//! hex fields, the NUL-terminated name padded to a multiple of 4 bytes
//! (counting the header), then the data padded to a multiple of 4. The archive
//! ends with an entry named `TRAILER!!!`.

use std::io::{self, Write};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// Streams entries into a newc archive. Every entry gets uid/gid 0 and mtime
/// 0 so the same inputs give the same bytes.
pub(crate) struct Writer<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> Writer<W> {
    pub(crate) fn new(out: W) -> Self {
        Writer {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    /// A directory; parents must be added first (the kernel does not create them).
    pub(crate) fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.entry(name, S_IFDIR | (perm & 0o7777), &[])
    }

    /// A regular file with the given contents.
    pub(crate) fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | (perm & 0o7777), data)
    }

    /// A symbolic link; its data is the target path.
    pub(crate) fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK | 0o777, target.as_bytes())
    }

    /// Writes the trailer and hands back the output.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.next_ino = 0;
        self.entry("TRAILER!!!", 0, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        let namesize = name.len() + 1;
        let filesize = u32::try_from(data.len())
            .map_err(|_| io::Error::other(format!("{name}: too large for cpio newc")))?;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        let header = format!(
            "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{filesize:08x}\
             {devmajor:08x}{devminor:08x}{rdevmajor:08x}{rdevminor:08x}{namesize:08x}{check:08x}",
            uid = 0,
            gid = 0,
            mtime = 0,
            devmajor = 0,
            devminor = 0,
            rdevmajor = 0,
            rdevminor = 0,
            check = 0,
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.written % 4) as usize;
        if rem != 0 {
            self.put(&[0u8; 3][..4 - rem])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(buf: &[u8], at: usize, index: usize) -> u32 {
        let start = at + 6 + index * 8;
        let text = std::str::from_utf8(&buf[start..start + 8]).unwrap();
        u32::from_str_radix(text, 16).unwrap()
    }

    #[test]
    fn file_entry_has_header_name_and_data_aligned_to_four_bytes() {
        let mut w = Writer::new(Vec::new());
        w.file("/init", 0o755, b"hello").unwrap();
        let buf = w.finish().unwrap();
        assert_eq!(&buf[..6], b"070701");
        assert_eq!(field(&buf, 0, 1), S_IFREG | 0o755);
        assert_eq!(field(&buf, 0, 6), 5, "filesize");
        assert_eq!(field(&buf, 0, 11), 5, "namesize counts the NUL of \"init\"");
        // 110 header + 5 name = 115, padded to 116; data starts there.
        assert_eq!(&buf[110..115], b"init\0");
        assert_eq!(&buf[116..121], b"hello");
        // 121 padded to 124, where the trailer begins.
        assert_eq!(&buf[124..130], b"070701");
        assert_eq!(buf.len() % 4, 0);
    }

    #[test]
    fn archive_ends_with_trailer_entry() {
        let buf = Writer::new(Vec::new()).finish().unwrap();
        assert_eq!(&buf[110..121], b"TRAILER!!!\0");
    }

    #[test]
    fn symlink_stores_target_as_data_and_directory_has_two_links() {
        let mut w = Writer::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        let at = w.written as usize;
        w.symlink("bin/sh", "busybox").unwrap();
        let buf = w.finish().unwrap();
        assert_eq!(field(&buf, 0, 1), S_IFDIR | 0o755);
        assert_eq!(field(&buf, 0, 4), 2);
        assert_eq!(field(&buf, at, 1), S_IFLNK | 0o777);
        assert_eq!(field(&buf, at, 6), 7);
        // header 110 + "bin/sh\0" 7 = 117 -> 120
        assert_eq!(&buf[at + 120..at + 127], b"busybox");
    }
}
