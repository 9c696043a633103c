//! The guest's initramfs, assembled in memory and written as newc cpio.
//!
//! Contents: busybox-static (shell and coreutils), iproute2's `ip` (busybox's
//! applet has no netns or `vf` support), our binaries, each dynamic
//! executable's shared libraries as `ldd` reports them (host and guest share
//! the host's glibc that way), the kernel modules the checks need
//! (decompressed: busybox's insmod does not read `.ko.xz`), and the guest
//! scripts from `xtask/vm/`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::cpio;
use super::kernel::{GuestKernel, ModuleDeps};

enum Node {
    Dir,
    File { perm: u32, data: Vec<u8> },
    Symlink(String),
}

/// A file tree keyed by absolute guest path; parents are created on insert.
#[derive(Default)]
pub(crate) struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub(crate) fn dir(&mut self, path: &str) {
        let path = normal(path);
        if path.is_empty() {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.nodes.entry(path).or_insert(Node::Dir);
    }

    pub(crate) fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) {
        let path = normal(path);
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.nodes.insert(path, Node::File { perm, data });
    }

    pub(crate) fn symlink(&mut self, path: &str, target: &str) {
        let path = normal(path);
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.nodes.insert(path, Node::Symlink(target.to_string()));
    }

    /// Copies a host file (following symlinks) to `guest`.
    pub(crate) fn host_file(&mut self, guest: &str, host: &Path, perm: u32) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.file(guest, perm, data);
        Ok(())
    }

    /// Copies a host executable and the shared libraries it loads, each
    /// library at its host path so the dynamic loader finds it unchanged.
    pub(crate) fn executable(&mut self, guest: &str, host: &Path) -> Result<()> {
        self.host_file(guest, host, 0o755)?;
        for lib in shared_libraries(host)? {
            if !self.nodes.contains_key(&normal(&lib)) {
                self.host_file(&lib, Path::new(&lib), 0o755)?;
            }
        }
        Ok(())
    }

    /// The modules in `wanted` and their dependencies, decompressed, under
    /// `/lib/modules/<version>/` with a modules.dep that lists only them (so
    /// busybox modprobe resolves dependencies in the guest).
    pub(crate) fn modules(&mut self, kernel: &GuestKernel, wanted: &[&str]) -> Result<Vec<String>> {
        let dep_path = kernel.modules.join("modules.dep");
        let text = fs::read_to_string(&dep_path)
            .with_context(|| format!("reading {}", dep_path.display()))?;
        let deps = ModuleDeps::parse(&text);
        let order = deps.closure(wanted)?;
        let base = format!("/lib/modules/{}", kernel.version);
        let mut guest_dep = String::new();
        for rel in &order {
            let host = kernel.modules.join(rel);
            let plain = rel.strip_suffix(".xz").unwrap_or(rel);
            let data = decompress(&host)?;
            self.file(&format!("{base}/{plain}"), 0o644, data);
        }
        for line in text.lines() {
            let Some((path, _)) = line.split_once(':') else {
                continue;
            };
            if order.iter().any(|o| o == path) {
                guest_dep.push_str(&line.replace(".ko.xz", ".ko"));
                guest_dep.push('\n');
            }
        }
        self.file(
            &format!("{base}/modules.dep"),
            0o644,
            guest_dep.into_bytes(),
        );
        Ok(order)
    }

    /// The archive bytes.
    pub(crate) fn cpio(&self) -> Result<Vec<u8>> {
        let mut w = cpio::Writer::new(Vec::new());
        for (path, node) in &self.nodes {
            match node {
                Node::Dir => w.dir(path, 0o755)?,
                Node::File { perm, data } => w.file(path, *perm, data)?,
                Node::Symlink(target) => w.symlink(path, target)?,
            }
        }
        Ok(w.finish()?)
    }
}

fn normal(path: &str) -> String {
    path.trim_matches('/').to_string()
}

fn decompress(path: &Path) -> Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .context("running xz (install xz-utils)")?;
        if !out.status.success() {
            bail!("xz -dc {} failed: {}", path.display(), out.status);
        }
        Ok(out.stdout)
    } else {
        fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Absolute paths of the libraries `ldd` resolves for `exe`, loader included.
fn shared_libraries(exe: &Path) -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .context("running ldd")?;
    // ldd exits non-zero for static executables ("not a dynamic executable").
    Ok(parse_ldd(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_ldd(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_yields_library_and_loader_paths_but_not_vdso() {
        let text = "\
\tlinux-vdso.so.1 (0x00007ffc6b3f4000)
\tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007f1)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f3)
";
        assert_eq!(
            parse_ldd(text),
            [
                "/lib/x86_64-linux-gnu/libbpf.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn tree_creates_parent_directories_before_children() {
        let mut t = Tree::default();
        t.file("/usr/sbin/ip", 0o755, b"x".to_vec());
        t.symlink("/bin/sh", "busybox");
        let order: Vec<&str> = t.nodes.keys().map(String::as_str).collect();
        assert_eq!(order, ["bin", "bin/sh", "usr", "usr/sbin", "usr/sbin/ip"]);
    }
}
