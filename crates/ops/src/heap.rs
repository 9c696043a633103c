//! Memory figures of this process from the kernel's accounting.
//!
//! The workspace denies `unsafe_code`, which rules out a counting global
//! allocator and glibc's `mallinfo2`; what the kernel reports per process
//! (resident, peak, data segment, anonymous pages) is what we have, and
//! for a daemon on the system allocator it tracks the heap closely.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::Error;

/// One memory figure: the kernel's name for it and its value in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    /// The kernel's field name (`VmRSS`, `VmHWM`, `Anonymous`, ...).
    pub name: String,
    /// The value in bytes (the kernel reports kB: KiB, really).
    pub bytes: u64,
}

/// The figures of one `/proc` file, in the kernel's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// The file they were read from.
    pub path: PathBuf,
    /// Its `Name: <n> kB` lines.
    pub figures: Vec<Figure>,
}

/// This process's memory figures: `/proc/self/status` (VmRSS, VmHWM,
/// VmData, RssAnon, ...) and, where the kernel has it (4.14 and later),
/// `/proc/self/smaps_rollup` (Rss, Pss, Anonymous, Private_Dirty, ...).
pub fn memory() -> Result<Vec<Figures>, Error> {
    let mut all = vec![read(Path::new("/proc/self/status"))?];
    match read(Path::new("/proc/self/smaps_rollup")) {
        Ok(rollup) => all.push(rollup),
        // Older kernels lack it; status alone still answers the question.
        Err(e) => tracing::debug!(error = %e, "no smaps_rollup"),
    }
    Ok(all)
}

/// The `Name: <n> kB` lines of a `/proc` memory file, in bytes.
pub fn read(path: &Path) -> Result<Figures, Error> {
    let text = std::fs::read_to_string(path).map_err(|cause| Error::Proc {
        path: path.to_owned(),
        cause,
    })?;
    Ok(Figures {
        path: path.to_owned(),
        figures: parse(&text),
    })
}

fn parse(text: &str) -> Vec<Figure> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let mut words = rest.split_whitespace();
            let kib: u64 = words.next()?.parse().ok()?;
            (words.next() == Some("kB") && words.next().is_none()).then(|| Figure {
                name: name.to_owned(),
                bytes: kib.saturating_mul(1024),
            })
        })
        .collect()
}

/// The figures as text: a `# <path>` line per file, then `<name> <bytes>`.
pub(crate) fn render(all: &[Figures]) -> String {
    let mut out = String::from(
        "# Memory of this process in bytes, from the kernel's accounting \
         (no allocator statistics: see the crate docs).\n",
    );
    for file in all {
        let _ = writeln!(out, "# {}", file.path.display());
        for f in &file.figures {
            let _ = writeln!(out, "{} {}", f.name, f.bytes);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kb_lines_become_bytes_and_the_rest_is_skipped() {
        let status = "Name:\tforwarder\nVmHWM:\t   20480 kB\nVmRSS:\t   16384 kB\n\
                      Threads:\t5\nSigQ:\t0/63448\nVmFoo:\t12 MB\n";
        assert_eq!(
            parse(status),
            vec![
                Figure {
                    name: "VmHWM".into(),
                    bytes: 20480 * 1024
                },
                Figure {
                    name: "VmRSS".into(),
                    bytes: 16384 * 1024
                },
            ]
        );
        let rollup = "55d0c0000000-7ffc00000000 ---p 00000000 00:00 0    [rollup]\n\
                      Rss:               15000 kB\nAnonymous:          9000 kB\n";
        let names: Vec<_> = parse(rollup).into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["Rss", "Anonymous"]);
    }

    #[test]
    fn this_process_has_a_resident_size() {
        let all = memory().unwrap();
        let rss = all[0].figures.iter().find(|f| f.name == "VmRSS").unwrap();
        assert!(rss.bytes > 0);
        let text = render(&all);
        assert!(text.contains("# /proc/self/status\n"), "{text}");
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("status");
        let err = read(&missing).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }
}
