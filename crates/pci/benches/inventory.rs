//! Discovery as a whole process (issue #21, goal 7): `forwarder-sriov
//! inventory` on a 16 PF x 256 VF tree against `inventory_floor.c`, the
//! fewest reads that print the same table, compiled here with `cc -O2`.
//! Each is started as a process and timed to its exit, alternately, so drift
//! on the shared machine hits both; the goal is the ratio of the medians.
//!
//! The two outputs must be identical (a wrong answer fails the bench; a time
//! never does). The binary is `forwarder-sriov` in the profile directory
//! above this bench (`cargo xtask bench` builds it first) or
//! `$FORWARDER_SRIOV_BIN`. Without `--bench` (`cargo test --all-targets`) a
//! small pass only checks that it works, and is skipped when the binary has
//! not been built.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sriov_pci_fake::fixtures;

/// The goal: the whole process within this factor of the C floor.
const GOAL_RATIO: f64 = 1.5;

fn main() {
    if let Err(e) = run() {
        eprintln!("inventory bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let full = std::env::args().any(|a| a == "--bench");
    let (pfs, vfs, runs) = if full { (16, 256, 41) } else { (2, 8, 3) };
    let Some(bin) = forwarder_bin() else {
        let msg = "forwarder-sriov is not built (`cargo build --release -p forwarder-sriov`, \
                   or FORWARDER_SRIOV_BIN)";
        if full {
            return Err(msg.into());
        }
        eprintln!("SKIP inventory bench: {msg}");
        return Ok(());
    };
    let floor = compile_floor()?;
    let fake = fixtures::generated(pfs, vfs)
        .build()
        .map_err(|e| format!("building the fixture tree: {e}"))?;
    let root = fake.root();
    let devices = root.join("bus/pci/devices");

    let ours = || {
        let mut c = Command::new(&bin);
        c.env_clear().arg("inventory").arg("--sysfs-root").arg(root);
        c
    };
    let reference = || {
        let mut c = Command::new(&floor);
        c.arg(&devices);
        c
    };
    // Warm the page cache and dentries, and check both say the same.
    let a = output(ours())?;
    let b = output(reference())?;
    if a.stdout != b.stdout {
        return Err(format!(
            "forwarder-sriov inventory and the C floor disagree:\n--- ours\n{}\n--- floor\n{}",
            head(&a.stdout),
            head(&b.stdout)
        ));
    }
    let lines = a.stdout.iter().filter(|&&c| c == b'\n').count();

    let mut t_ours = Vec::with_capacity(runs);
    let mut t_floor = Vec::with_capacity(runs);
    for _ in 0..runs {
        t_floor.push(timed(reference())?);
        t_ours.push(timed(ours())?);
    }
    t_ours.sort();
    t_floor.sort();
    let (m_ours, m_floor) = (percentile(&t_ours, 0.5), percentile(&t_floor, 0.5));
    let ratio = m_ours.as_secs_f64() / m_floor.as_secs_f64();
    println!("{}", machine());
    println!(
        "inventory of {pfs} PFs x {vfs} VFs as a whole process ({lines} lines, same output), {runs} runs each:"
    );
    println!(
        "  forwarder-sriov inventory: median {}, p99 {}",
        ms(m_ours),
        ms(percentile(&t_ours, 0.99))
    );
    println!(
        "  C floor (inventory_floor.c, cc -O2): median {}, p99 {}",
        ms(m_floor),
        ms(percentile(&t_floor, 0.99))
    );
    println!(
        "goal 7 (inventory <= {GOAL_RATIO}x the C floor): {ratio:.2}x, {}",
        if ratio <= GOAL_RATIO {
            "goal met"
        } else {
            "goal missed"
        }
    );
    Ok(())
}

/// `$FORWARDER_SRIOV_BIN`, or `forwarder-sriov` in the profile directory
/// this bench was built into (`target/release/deps/<bench>` -> `target/release`).
fn forwarder_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FORWARDER_SRIOV_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("forwarder-sriov");
    bin.exists().then_some(bin)
}

/// Compiles the C floor next to this bench's executable.
fn compile_floor() -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/inventory_floor.c");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = exe
        .parent()
        .ok_or("no directory above the bench executable")?
        .join("inventory-floor");
    let status = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .map_err(|e| format!("running cc: {e}"))?;
    if !status.success() {
        return Err(format!("cc -O2 {} failed: {status}", src.display()));
    }
    Ok(out)
}

fn output(mut c: Command) -> Result<Output, String> {
    let out = c
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("{c:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{c:?} exited with {}", out.status));
    }
    Ok(out)
}

/// From spawn to exit, the output read through a pipe as a shell would.
fn timed(c: Command) -> Result<Duration, String> {
    let t = Instant::now();
    let out = output(c)?;
    let took = t.elapsed();
    std::hint::black_box(out);
    Ok(took)
}

fn head(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .lines()
        .take(12)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("machine: nproc {cpus}, {model}, Linux {kernel}")
}
