//! `cargo xtask vm-test`: boots a Debian kernel under QEMU with an emulated
//! Intel 82576 (igb, SR-IOV capable) and runs our binaries on its real VFs.
//!
//! The host side (this module) builds our binaries, fetches and caches the
//! guest kernel, packs an initramfs, boots QEMU with a hard timeout, and reads
//! `PASS`/`FAIL`/`SKIP` lines off the serial console. The guest side lives in
//! `xtask/vm/`: `init.sh` is PID 1 and runs every `checks/NN-name.sh` in name
//! order, one check per file, so adding a check means adding a file.
//!
//! A check may also send a tarball back (between `VMTEST-CAPTURE-BEGIN name`
//! and `VMTEST-CAPTURE-END`, base64): it is unpacked under
//! `<cache>/capture/<name>`, and with `--update-fixture` into
//! `testdata/sysfs/<name>` as well. That is how the real igb sysfs fixture is
//! refreshed.
//!
//! Environment knobs: `NSM_VM_ACCEL=kvm|tcg` forces the accelerator (the
//! default probes /dev/kvm and refuses PVM's); `NSM_VM_KERNEL_PACKAGE` pins
//! the guest kernel package (default: the newest `linux-image-amd64`
//! dependency apt knows, 6.12 from bookworm-backports here);
//! `NSM_VM_CACHE` moves the cache (default `target/vm-cache`).
//!
//! The guest also gets Debian's runc (fetched like the kernel, `vm/runc.rs`)
//! and mounts cgroup v2, so a real container runtime applies the device
//! specs our Allocate returns (check `57-vfio-cgroup2-runc`).
//!
//! The run is reported as the `vm-test` suite of `cargo xtask test`; it is
//! skipped (with the reason) where QEMU, its igb device, or a guest kernel is
//! missing. `xtask/setup/qemu.sh` (run by `cargo xtask test`) installs what is needed on Debian.

mod cpio;
mod initramfs;
mod kernel;
mod qemu;
mod runc;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::report::Outcome;
use crate::suites::cargo;
use qemu::{Accel, Check};

/// Modules the checks load, by name; their dependencies come from modules.dep.
/// vfio_iommu_type1 is not a dependency of vfio-pci but without it a VFIO
/// container cannot be attached to a group.
const GUEST_MODULES: &[&str] = &["igb", "igbvf", "vfio-pci", "vfio_iommu_type1"];

/// (package, binary) pairs copied into the guest's /usr/local/bin when the
/// package exists in the workspace. Later layers add theirs here.
const GUEST_BINARIES: &[(&str, &str)] = &[
    ("forwarder-sriov", "forwarder-sriov"),
    ("sriov-pci-fake", "sysfs-capture"),
    ("sriov-e2e", "sriov-e2e"),
    ("sriov-device-plugin", "sriov-device-plugin"),
];

/// The whole VM run has to fit in this, boot to poweroff; QEMU is killed at it.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Options {
    update_fixture: bool,
    timeout: Duration,
    /// Only the checks whose file names start with one of these (all when empty).
    only: Vec<String>,
    /// Extra `NAME=value` lines for the guest's /vmtest/env.
    env: Vec<(String, String)>,
}

impl Options {
    fn whole_run() -> Self {
        Options {
            update_fixture: false,
            timeout: DEFAULT_TIMEOUT,
            only: Vec::new(),
            env: Vec::new(),
        }
    }
}

enum Verdict {
    Passed(String),
    Skipped(String),
}

const USAGE: &str =
    "usage: cargo xtask vm-test [--update-fixture] [--timeout SECS] [--only PREFIX]...
  --update-fixture  refresh testdata/sysfs/<name> from the guest's captures
  --timeout SECS    kill QEMU after SECS (default 600)
  --only PREFIX     run only the checks whose file names start with PREFIX (repeatable;
                    e.g. --only 10 --only 20 --only 30 --only 40 --only 57: a check
                    needs the ones that set up what it uses)";

/// `cargo xtask vm-test [--update-fixture] [--timeout SECS] [--only PREFIX]...`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let Some(opts) = parse_args(args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    match execute(&opts)? {
        Verdict::Passed(s) => {
            println!("vm-test: PASSED {s}");
            Ok(())
        }
        // Asked for by name, an unrunnable VM test is an error, with the reason.
        Verdict::Skipped(why) => bail!("vm-test cannot run here: {why}"),
    }
}

/// The options `args` ask for; `None` for `--help`.
fn parse_args(args: &[String]) -> Result<Option<Options>> {
    let mut opts = Options::whole_run();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--update-fixture" => opts.update_fixture = true,
            "--timeout" => {
                let secs: u64 = it
                    .next()
                    .context("--timeout needs seconds")?
                    .parse()
                    .context("--timeout needs whole seconds")?;
                opts.timeout = Duration::from_secs(secs);
            }
            "--only" => opts
                .only
                .push(it.next().context("--only needs a check prefix")?.clone()),
            "--help" | "-h" => return Ok(None),
            other => bail!("vm-test: unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Some(opts))
}

/// The `vm-test` row of `cargo xtask test`.
pub(crate) fn suite_outcome() -> Outcome {
    match execute(&Options::whole_run()) {
        Ok(Verdict::Passed(s)) => Outcome::Passed(s),
        Ok(Verdict::Skipped(why)) => Outcome::Skipped(why),
        Err(e) => Outcome::Failed(format!("{e:#}")),
    }
}

fn execute(opts: &Options) -> Result<Verdict> {
    let started = Instant::now();
    if let Some(why) = host_lacks() {
        return Ok(Verdict::Skipped(why));
    }
    let ws = workspace_root();
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;

    let kernel = match kernel::ensure(&cache)? {
        Ok(k) => k,
        Err(kernel::Unavailable(why)) => return Ok(Verdict::Skipped(why)),
    };
    println!("vm-test: guest kernel {}", kernel.version);
    let runc = runc::ensure(&cache)?;
    match &runc {
        Ok(path) => println!("vm-test: runc {}", path.display()),
        Err(why) => println!("vm-test: {why}; the runc check will skip"),
    }

    let t = Instant::now();
    let binaries = build_binaries(&ws, &cache)?;
    println!(
        "vm-test: built {} binaries in {:.1?}",
        binaries.len(),
        t.elapsed()
    );

    let t = Instant::now();
    let initrd = cache.join("initramfs.cpio");
    let size = write_initramfs(&ws, &kernel, &binaries, &runc, opts, &initrd)?;
    println!(
        "vm-test: initramfs {} ({} KiB) in {:.1?}",
        initrd.display(),
        size / 1024,
        t.elapsed()
    );

    let (accel, why) = qemu::choose_accel();
    println!("vm-test: accelerator {accel:?} ({why})");
    let mut boot = qemu::Boot {
        accel,
        vmlinuz: &kernel.vmlinuz,
        initrd: &initrd,
        console_log: cache.join("console.log"),
        timeout: opts.timeout,
    };
    let mut run = qemu::run(&boot)?;
    if accel == Accel::Kvm && !run.console.began {
        println!(
            "vm-test: KVM boot produced no guest output ({}); retrying with TCG",
            run.stderr.trim()
        );
        boot.accel = Accel::Tcg;
        run = qemu::run(&boot)?;
    }
    println!(
        "vm-test: VM ran {:.1?} under {:?}; console log {}",
        run.elapsed,
        boot.accel,
        boot.console_log.display()
    );

    let mut host_checks = Vec::new();
    for (name, b64) in &run.console.captures {
        let dest = unpack_capture(&cache, name, b64)?;
        println!("vm-test: capture {name} unpacked to {}", dest.display());
        let real = run
            .console
            .files
            .iter()
            .find(|(f, _)| *f == format!("{name}-inventory.txt"));
        if let Some((_, b64)) = real {
            let check = compare_inventory(&binaries, &dest, &base64_decode(b64)?);
            match &check {
                Check::Pass(n) => println!("host| PASS {n}"),
                Check::Fail(n, why) => println!("host| FAIL {n}: {why}"),
                Check::Skip(n, why) => println!("host| SKIP {n}: {why}"),
            }
            host_checks.push(check);
        }
        let fixture = ws.join("testdata/sysfs").join(name);
        if opts.update_fixture {
            replace_dir(&dest, &fixture)?;
            println!("vm-test: fixture {} updated", fixture.display());
        } else if fixture.exists() {
            note_drift(&dest, &fixture);
        }
    }

    let (mut pass, mut fail, mut skip) = (0, Vec::new(), 0);
    for c in run.console.checks.iter().chain(&host_checks) {
        match c {
            Check::Pass(_) => pass += 1,
            Check::Fail(name, why) => fail.push(format!("{name}: {why}")),
            Check::Skip(..) => skip += 1,
        }
    }
    if run.timed_out {
        bail!(
            "QEMU killed after {:?} (last console lines in {})",
            opts.timeout,
            boot.console_log.display()
        );
    }
    if !run.console.began {
        bail!(
            "guest never reached /init (QEMU exit {:?}; stderr: {}; console log {})",
            run.exit,
            run.stderr.trim(),
            boot.console_log.display()
        );
    }
    if !fail.is_empty() {
        bail!("{} guest check(s) failed: {}", fail.len(), fail.join("; "));
    }
    if !run.console.ended {
        bail!(
            "guest stopped before the {} marker (see {})",
            qemu::END,
            boot.console_log.display()
        );
    }
    if opts.update_fixture && run.console.captures.is_empty() {
        bail!("--update-fixture given but the guest captured nothing");
    }
    Ok(Verdict::Passed(format!(
        "{pass} checks passed, {skip} skipped, {:?}, {:.0?} in all",
        boot.accel,
        started.elapsed()
    )))
}

/// The crash campaign on real igb VFs for `cargo xtask chaos`: a boot with
/// only the checks it stands on (modules, PF, VFs) and `92-forwarder-chaos`
/// at `rounds` rounds and no soak. Returns the campaign's console lines
/// (its `PASS`/`FAIL` lines and its table). A VM that cannot run here is an
/// error: the full campaign is asked for by name.
pub(crate) fn chaos_campaign(rounds: usize) -> Result<Vec<String>> {
    // Measured under TCG on this workplace: under a minute a round (2 rounds
    // in 110 s); the margin is for a loaded machine.
    let per_check = 180 + 240 * rounds as u64;
    let opts = Options {
        update_fixture: false,
        timeout: Duration::from_secs(per_check + 240),
        only: ["10", "20", "30", "40", "92"].map(String::from).to_vec(),
        env: vec![
            ("CHAOS_ROUNDS".into(), rounds.to_string()),
            ("CHAOS_SOAK".into(), "0".into()),
            ("VMTEST_CHECK_TIMEOUT".into(), per_check.to_string()),
        ],
    };
    match execute(&opts)? {
        Verdict::Passed(s) => println!("vm-test: {s}"),
        Verdict::Skipped(why) => bail!("the campaign on real VFs cannot run here: {why}"),
    }
    let log = cache_dir().join("console.log");
    let text = fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let lines: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("chaos: "))
        .map(str::to_string)
        .collect();
    if !text.lines().any(|l| l.starts_with("PASS forwarder-chaos")) {
        bail!(
            "the guest's forwarder-chaos check did not pass (see {})",
            log.display()
        );
    }
    Ok(lines)
}

/// A reason to skip when this host cannot run the VM at all.
fn host_lacks() -> Option<String> {
    if !cfg!(target_arch = "x86_64") {
        return Some("the VM test boots an x86_64 guest; this host is not x86_64".into());
    }
    let help = Command::new("qemu-system-x86_64")
        .args(["-device", "help"])
        .stdin(Stdio::null())
        .output();
    let Ok(help) = help else {
        return Some(
            "qemu-system-x86_64 is not installed (xtask/setup/qemu.sh, run by cargo xtask test, installs it)".into(),
        );
    };
    if !String::from_utf8_lossy(&help.stdout).contains("\"igb\"") {
        return Some(
            "this QEMU has no igb device (needs QEMU >= 8.0; bookworm-backports has it)".into(),
        );
    }
    for (path, pkg) in [
        ("/bin/busybox", "busybox-static"),
        ("/usr/bin/xz", "xz-utils"),
        ("/usr/bin/ldd", "libc-bin"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} is missing (install {pkg})"));
        }
    }
    if ip_binary().is_none() {
        return Some("iproute2's ip is missing (install iproute2)".into());
    }
    None
}

fn ip_binary() -> Option<PathBuf> {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Downloads, the unpacked kernel, the initramfs and captures. Under the
/// target dir so `cargo clean` clears it and CI caches of target/ keep it.
fn cache_dir() -> PathBuf {
    std::env::var_os("NSM_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::demo::target_dir().join("vm-cache"))
}

/// Builds the guest binaries (debug profile: shares artifacts with the test
/// build) and returns stripped copies, smaller to boot under TCG.
fn build_binaries(ws: &Path, cache: &Path) -> Result<Vec<(String, PathBuf)>> {
    let present: Vec<&(&str, &str)> = GUEST_BINARIES
        .iter()
        .filter(|(pkg, _)| package_exists(ws, pkg))
        .collect();
    let mut packages: Vec<&str> = present.iter().map(|(p, _)| *p).collect();
    packages.dedup();
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec!["build", "--bins"];
    for p in &packages {
        args.extend(["-p", p]);
    }
    let st = cargo(&args).status().context("running cargo build")?;
    if !st.success() {
        bail!("cargo {} failed: {st}", args.join(" "));
    }
    let out_dir = cache.join("bin");
    fs::create_dir_all(&out_dir)?;
    let debug = crate::demo::target_dir().join("debug");
    let mut bins = Vec::new();
    for (_, bin) in present {
        let built = debug.join(bin);
        if !built.is_file() {
            println!("vm-test: {bin} not built by its package yet; the guest goes without it");
            continue;
        }
        bins.push((bin.to_string(), stripped(&built, &out_dir.join(bin))));
    }
    // The crash checks on real VFs run the failpoints build (`xtask chaos`).
    let armed = crate::chaos::build_armed()?;
    let name = "forwarder-sriov-failpoints";
    bins.push((name.into(), stripped(&armed, &out_dir.join(name))));
    Ok(bins)
}

/// A copy of `built` without debug info at `to`, or `built` itself when
/// `strip` fails.
fn stripped(built: &Path, to: &Path) -> PathBuf {
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(to)
        .arg(built)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        to.to_path_buf()
    } else {
        built.to_path_buf()
    }
}

fn package_exists(ws: &Path, package: &str) -> bool {
    ["bins", "crates"].iter().any(|top| {
        fs::read_dir(ws.join(top))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                fs::read_to_string(e.path().join("Cargo.toml"))
                    .map(|t| {
                        t.lines()
                            .any(|l| l.trim() == format!("name = \"{package}\""))
                    })
                    .unwrap_or(false)
            })
    })
}

fn write_initramfs(
    ws: &Path,
    kernel: &kernel::GuestKernel,
    binaries: &[(String, PathBuf)],
    runc: &std::result::Result<PathBuf, String>,
    opts: &Options,
    out: &Path,
) -> Result<usize> {
    let scripts = ws.join("xtask/vm");
    let mut t = initramfs::Tree::default();
    for d in ["/proc", "/sys", "/dev", "/run", "/tmp", "/etc", "/root"] {
        t.dir(d);
    }
    t.symlink("/var/run", "../run");
    // Debian's busybox-static needs no libraries; a dynamic busybox gets its own.
    t.executable("/bin/busybox", Path::new("/bin/busybox"))?;
    t.symlink("/bin/sh", "busybox");
    let ip = ip_binary().context("iproute2 ip vanished")?;
    t.executable("/usr/sbin/ip", &ip)?;
    for (name, path) in binaries {
        t.executable(&format!("/usr/local/bin/{name}"), path)?;
    }
    if let Ok(runc) = runc {
        t.executable("/usr/sbin/runc", runc)?;
    }
    let loaded = t.modules(kernel, GUEST_MODULES)?;
    t.host_file("/init", &scripts.join("init.sh"), 0o755)?;
    t.host_file("/vmtest/lib.sh", &scripts.join("lib.sh"), 0o644)?;
    let checks_dir = scripts.join("checks");
    let mut checks: Vec<PathBuf> = fs::read_dir(&checks_dir)
        .with_context(|| format!("reading {}", checks_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            opts.only.is_empty() || opts.only.iter().any(|o| name.starts_with(o.as_str()))
        })
        .collect();
    checks.sort();
    for c in &checks {
        let name = c.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        t.host_file(&format!("/vmtest/checks/{name}"), c, 0o644)?;
    }
    let mut env = format!(
        "PF={}\nKVER={}\nGUEST_MODULES=\"{}\"\nGUEST_BINARIES=\"{}\"\nMODULES_WITH_DEPS=\"{}\"\n",
        qemu::PF_BDF,
        kernel.version,
        GUEST_MODULES.join(" "),
        binaries
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        loaded
            .iter()
            .map(|p| kernel::module_name(p))
            .collect::<Vec<_>>()
            .join(" "),
    );
    if let Err(why) = runc {
        env.push_str(&format!(
            "RUNC_MISSING=\"{}\"\n",
            why.replace(['"', '$', '`'], "'")
        ));
    }
    for (name, value) in &opts.env {
        env.push_str(&format!("{name}=\"{value}\"\n"));
    }
    t.file("/vmtest/env", 0o644, env.into_bytes());
    let bytes = t.cpio()?;
    fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    Ok(bytes.len())
}

/// Decodes a capture (a gzipped tar, base64) into `<cache>/capture/<name>`.
fn unpack_capture(cache: &Path, name: &str, b64: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains(['/', '.']) {
        bail!("capture name {name:?} is not a plain name");
    }
    let bytes = base64_decode(b64).with_context(|| format!("capture {name}"))?;
    let dest = cache.join("capture").join(name);
    if dest.exists() {
        fs::remove_dir_all(&dest)?;
    }
    fs::create_dir_all(&dest)?;
    let tgz = cache.join("capture").join(format!("{name}.tar.gz"));
    fs::write(&tgz, &bytes)?;
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&dest)
        .status()
        .context("running tar")?;
    if !st.success() {
        bail!("tar -xzf {} failed: {st}", tgz.display());
    }
    Ok(dest)
}

/// The fake must read a captured tree exactly as the PCI crate read the
/// real sysfs it came from: the guest's `forwarder-sriov inventory` of the
/// real /sys, taken right after the capture, against the same command on
/// the host with `--sysfs-root` at the capture. Only the physical-function
/// section is compared: the capture holds the PFs and their VFs, not the
/// guest's other devices.
fn compare_inventory(binaries: &[(String, PathBuf)], tree: &Path, real: &[u8]) -> Check {
    let name = "fake-reads-capture-like-real-sysfs".to_string();
    let Some((_, bin)) = binaries.iter().find(|(n, _)| n == "forwarder-sriov") else {
        return Check::Skip(name, "forwarder-sriov was not built".into());
    };
    let out = Command::new(bin)
        .arg("inventory")
        .arg("--sysfs-root")
        .arg(tree)
        .stderr(Stdio::null())
        .output();
    let host = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            return Check::Fail(
                name,
                format!("inventory of {} exited {}", tree.display(), o.status),
            );
        }
        Err(e) => return Check::Fail(name, format!("running {}: {e}", bin.display())),
    };
    let real = pf_section(&String::from_utf8_lossy(real));
    let fake = pf_section(&host);
    if real.is_empty() {
        return Check::Fail(
            name,
            "the guest's inventory has no physical-function section".into(),
        );
    }
    if real == fake {
        Check::Pass(name)
    } else {
        let first = real
            .iter()
            .zip(fake.iter().chain(std::iter::repeat(&String::new())))
            .find(|(r, f)| r != f)
            .map(|(r, f)| format!("real {r:?} vs fake {f:?}"))
            .unwrap_or_else(|| format!("{} real lines vs {} fake lines", real.len(), fake.len()));
        Check::Fail(name, format!("first difference: {first}"))
    }
}

/// The lines of an inventory table from "Physical functions" up to "Other devices".
fn pf_section(table: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.trim_end_matches('\r').trim_end().to_string())
        .skip_while(|l| !l.starts_with("Physical functions"))
        .take_while(|l| !l.starts_with("Other devices"))
        .collect()
}

/// Says (without failing) when the shipped fixture no longer matches what
/// the real kernel shows, so someone refreshes it deliberately. MAC
/// addresses are left out: igbvf gives each VF a random one at every boot.
fn note_drift(capture: &Path, fixture: &Path) {
    let same = Command::new("diff")
        .args(["-rq", "--no-dereference", "--exclude=address"])
        .arg(fixture)
        .arg(capture)
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success());
    match same {
        Ok(true) => println!("vm-test: {} matches the real tree", fixture.display()),
        Ok(false) => println!(
            "vm-test: note: {} differs from this run's capture {} \
             (cargo xtask vm-test --update-fixture refreshes it)",
            fixture.display(),
            capture.display()
        ),
        Err(_) => {}
    }
}

fn replace_dir(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        fs::remove_dir_all(to).with_context(|| format!("removing {}", to.display()))?;
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    // cp -a keeps the symlinks (driver, iommu_group, virtfnN) that make the tree a tree.
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .context("running cp")?;
    if !st.success() {
        bail!("cp -a {} {} failed: {st}", from.display(), to.display());
    }
    Ok(())
}

fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b'\r' | b'\n' | b' ' => continue,
            other => bail!("invalid base64 byte {other:#04x}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_padded_and_unpadded_text() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("aGVs\nbG8h\n").unwrap(), b"hello!");
        assert!(base64_decode("a*b").is_err());
    }

    /// A typo in a guest script would otherwise cost a VM boot to find.
    #[test]
    fn guest_scripts_parse_as_shell() {
        if !Path::new("/bin/busybox").exists() {
            eprintln!("SKIP guest_scripts_parse_as_shell: /bin/busybox is not installed");
            return;
        }
        let dir = workspace_root().join("xtask/vm");
        let mut scripts = vec![dir.join("init.sh"), dir.join("lib.sh")];
        for e in fs::read_dir(dir.join("checks")).unwrap() {
            scripts.push(e.unwrap().path());
        }
        assert!(scripts.len() > 2, "no checks found");
        for s in scripts {
            let out = Command::new("/bin/busybox")
                .args(["sh", "-n"])
                .arg(&s)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                s.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn only_selects_checks_by_prefix_and_help_asks_for_usage() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse_args(&args(&["--only", "10", "--only", "57", "--timeout", "90"]))
            .unwrap()
            .unwrap();
        assert_eq!(o.only, ["10", "57"]);
        assert_eq!(o.timeout, Duration::from_secs(90));
        assert!(parse_args(&args(&["--help"])).unwrap().is_none());
        let e = parse_args(&args(&["--only"])).unwrap_err();
        assert!(e.to_string().contains("--only needs"), "{e}");
        let e = parse_args(&args(&["--bogus"])).unwrap_err();
        assert!(e.to_string().contains("--only PREFIX"), "{e}");
    }

    #[test]
    fn inventory_comparison_covers_only_the_physical_function_section() {
        let table = "Physical functions (1):\n  0000:01:00.0  8086:10c9\r\n    vf0   0000:01:10.0\nOther devices (2):\n  0000:00:00.0\n";
        assert_eq!(
            pf_section(table),
            [
                "Physical functions (1):",
                "  0000:01:00.0  8086:10c9",
                "    vf0   0000:01:10.0"
            ]
        );
    }

    #[test]
    fn guest_binary_packages_are_found_by_manifest_name() {
        let ws = workspace_root();
        assert!(package_exists(&ws, "forwarder-sriov"));
        assert!(!package_exists(&ws, "no-such-package"));
    }
}
