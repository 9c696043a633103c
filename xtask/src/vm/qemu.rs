//! Booting the guest: accelerator choice, the QEMU command line, a hard
//! timeout, and reading the check results off the serial console.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How the guest CPU runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Accel {
    Kvm,
    Tcg,
}

/// Picks KVM where `/dev/kvm` can run a stock kernel, TCG otherwise, and
/// says why.
///
/// PVM (`kvm_pvm`) exposes a /dev/kvm that only runs PVM-enabled guest
/// kernels; Debian's stock kernel hangs or fails under it, so PVM means TCG.
pub(crate) fn choose_accel() -> (Accel, String) {
    if let Ok(forced) = std::env::var("NSM_VM_ACCEL") {
        match forced.as_str() {
            "kvm" => return (Accel::Kvm, "NSM_VM_ACCEL=kvm".into()),
            "tcg" => return (Accel::Tcg, "NSM_VM_ACCEL=tcg".into()),
            _ => {}
        }
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return (
            Accel::Tcg,
            "/dev/kvm is PVM (kvm_pvm), which cannot run stock kernels".into(),
        );
    }
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if usable {
        (Accel::Kvm, "/dev/kvm is usable".into())
    } else {
        (Accel::Tcg, "/dev/kvm is absent or not accessible".into())
    }
}

/// What the VM is booted with.
pub(crate) struct Boot<'a> {
    pub(crate) accel: Accel,
    pub(crate) vmlinuz: &'a Path,
    pub(crate) initrd: &'a Path,
    pub(crate) console_log: PathBuf,
    pub(crate) timeout: Duration,
}

/// How long the guest may take to reach /init. TCG boots in ~3 s here; a
/// stock kernel on an unsuitable /dev/kvm hangs instead of failing, so KVM
/// gets a short leash before the TCG retry.
fn begin_timeout(accel: Accel) -> Duration {
    match accel {
        Accel::Kvm => Duration::from_secs(30),
        Accel::Tcg => Duration::from_secs(90),
    }
}

/// The PCI address the emulated 82576 PF gets: the only device behind a
/// root port, so bus 01, device 0. The guest checks rely on it.
pub(crate) const PF_BDF: &str = "0000:01:00.0";

impl Boot<'_> {
    pub(crate) fn command(&self) -> Command {
        let (machine, cpu) = match self.accel {
            Accel::Kvm => ("q35,accel=kvm,kernel-irqchip=split", "host"),
            Accel::Tcg => ("q35,accel=tcg,kernel-irqchip=split", "max"),
        };
        let mut c = Command::new("qemu-system-x86_64");
        // 1 GiB: the initramfs (debug builds of our binaries, stripped of
        // debug info, ~180 MB with mTLS and the policy engine) is unpacked
        // into RAM beside its own copy; 512 MiB no longer held both.
        c.args(["-machine", machine, "-cpu", cpu, "-smp", "2", "-m", "1024"])
            // No default NIC, VGA or monitor: the only PCI function of interest is the igb PF.
            .args(["-nodefaults", "-display", "none", "-serial", "stdio"])
            .args(["-no-reboot"])
            // Interrupt remapping needs the split irqchip; the IOMMU gives each
            // VF its own group so vfio-pci can bind it (the kernel has no
            // VFIO_NOIOMMU).
            .args(["-device", "intel-iommu,intremap=on"])
            .args(["-device", "pcie-root-port,id=rp1,chassis=1,slot=1"])
            // A hub with nothing else on it: the PF has link but its frames go
            // nowhere outside the VM. PF<->VF traffic is switched inside the
            // emulated 82576.
            .args(["-netdev", "hubport,id=nsm0,hubid=0"])
            .args(["-device", "igb,netdev=nsm0,bus=rp1,addr=0"])
            .arg("-kernel")
            .arg(self.vmlinuz)
            .arg("-initrd")
            .arg(self.initrd)
            .args([
                "-append",
                "console=ttyS0 intel_iommu=on iommu=pt panic=-1 quiet",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

/// One guest result line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    Pass(String),
    Fail(String, String),
    Skip(String, String),
}

/// Everything read off the console.
#[derive(Default, Debug)]
pub(crate) struct Console {
    pub(crate) began: bool,
    pub(crate) ended: bool,
    pub(crate) checks: Vec<Check>,
    /// Tree captures (gzipped tar, base64) by name.
    pub(crate) captures: Vec<(String, String)>,
    /// Single files (base64) by name.
    pub(crate) files: Vec<(String, String)>,
    capturing: Option<(Payload, String, String)>,
}

#[derive(Clone, Copy, Debug)]
enum Payload {
    Tree,
    File,
}

/// Marker lines the guest's /init prints (see xtask/vm/init.sh).
pub(crate) const BEGIN: &str = "VMTEST-BEGIN";
pub(crate) const END: &str = "VMTEST-END";
const CAPTURE_BEGIN: &str = "VMTEST-CAPTURE-BEGIN ";
const CAPTURE_END: &str = "VMTEST-CAPTURE-END";
const FILE_BEGIN: &str = "VMTEST-FILE-BEGIN ";
const FILE_END: &str = "VMTEST-FILE-END";

impl Console {
    /// Feeds one console line; returns what should be echoed on the host.
    pub(crate) fn line(&mut self, raw: &str) -> Option<String> {
        let line = raw.trim_end_matches(['\r', '\n']);
        // The firmware leaves terminal escapes in front of our first line.
        let line = match line.find(BEGIN) {
            Some(i) => &line[i..],
            None => line,
        };
        if let Some((kind, name, data)) = self.capturing.as_mut() {
            if line.starts_with(CAPTURE_END) || line.starts_with(FILE_END) {
                let kind = *kind;
                let done = (std::mem::take(name), std::mem::take(data));
                self.capturing = None;
                let shown = format!("{kind:?} {}: {} base64 bytes", done.0, done.1.len());
                match kind {
                    Payload::Tree => self.captures.push(done),
                    Payload::File => self.files.push(done),
                }
                return Some(shown);
            }
            data.push_str(line.trim());
            return None;
        }
        if line.starts_with(BEGIN) {
            self.began = true;
            return Some(line.to_string());
        }
        if !self.began || self.ended {
            return None;
        }
        if line.starts_with(END) {
            self.ended = true;
        } else if let Some(name) = line.strip_prefix(CAPTURE_BEGIN) {
            self.capturing = Some((Payload::Tree, name.trim().to_string(), String::new()));
            return None;
        } else if let Some(name) = line.strip_prefix(FILE_BEGIN) {
            self.capturing = Some((Payload::File, name.trim().to_string(), String::new()));
            return None;
        } else if let Some(name) = line.strip_prefix("PASS ") {
            self.checks.push(Check::Pass(name.trim().to_string()));
        } else if let Some(rest) = line.strip_prefix("FAIL ") {
            let (name, why) = rest.split_once(": ").unwrap_or((rest, ""));
            self.checks
                .push(Check::Fail(name.trim().to_string(), why.to_string()));
        } else if let Some(rest) = line.strip_prefix("SKIP ") {
            let (name, why) = rest.split_once(": ").unwrap_or((rest, ""));
            self.checks
                .push(Check::Skip(name.trim().to_string(), why.to_string()));
        }
        Some(line.to_string())
    }
}

/// How the run ended.
pub(crate) struct Run {
    pub(crate) console: Console,
    pub(crate) timed_out: bool,
    pub(crate) exit: Option<std::process::ExitStatus>,
    pub(crate) stderr: String,
    pub(crate) elapsed: Duration,
}

/// Boots, streams the console (echoing the guest's lines as `vm| ...`), and
/// kills QEMU at the deadline, or earlier if the guest never reaches /init.
pub(crate) fn run(boot: &Boot<'_>) -> Result<Run> {
    let mut cmd = boot.command();
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 || tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let mut log = File::create(&boot.console_log)
        .with_context(|| format!("creating {}", boot.console_log.display()))?;
    let mut console = Console::default();
    let deadline = started + boot.timeout;
    let begin_deadline = started + begin_timeout(boot.accel).min(boot.timeout);
    let mut timed_out = false;
    loop {
        let until = if console.began {
            deadline
        } else {
            begin_deadline
        };
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let _ = log.write_all(line.as_bytes());
                if let Some(shown) = console.line(&line) {
                    println!("vm| {shown}");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                kill(&mut child);
                break;
            }
        }
    }
    let exit = child.wait().ok();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Run {
        console,
        timed_out,
        exit,
        stderr,
        elapsed: started.elapsed(),
    })
}

fn kill(child: &mut Child) {
    let _ = child.kill();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lines: &[&str]) -> Console {
        let mut c = Console::default();
        for l in lines {
            c.line(l);
        }
        c
    }

    #[test]
    fn qemu_command_gives_the_nic_no_path_off_the_vm() {
        let boot = Boot {
            accel: Accel::Tcg,
            vmlinuz: Path::new("/k"),
            initrd: Path::new("/i"),
            console_log: PathBuf::from("/c"),
            timeout: Duration::from_secs(1),
        };
        let cmd = boot.command();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let netdevs: Vec<&String> = args
            .iter()
            .zip(args.iter().skip(1))
            .filter(|(flag, _)| *flag == "-netdev" || *flag == "-nic")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(netdevs, ["hubport,id=nsm0,hubid=0"]);
        assert!(
            args.contains(&"-nodefaults".to_string()),
            "no default user-mode NIC"
        );
        assert!(
            args.iter()
                .any(|a| a.starts_with("igb,netdev=nsm0,bus=rp1"))
        );
        assert!(args.iter().any(|a| a.contains("accel=tcg")));
    }

    #[test]
    fn results_before_the_begin_marker_are_kernel_noise_and_ignored() {
        let c = feed(&[
            "PASS fake",
            "\x1b[2JVMTEST-BEGIN kernel=6.12\r\n",
            "PASS real\r\n",
        ]);
        assert!(c.began);
        assert_eq!(c.checks, [Check::Pass("real".into())]);
    }

    #[test]
    fn fail_and_skip_lines_keep_name_and_reason() {
        let c = feed(&[
            "VMTEST-BEGIN",
            "FAIL create-vfs: sriov_numvfs is 0: want 7",
            "SKIP inventory: forwarder-sriov inventory is not implemented yet",
            "VMTEST-END pass=0 fail=1 skip=1",
        ]);
        assert_eq!(
            c.checks,
            [
                Check::Fail("create-vfs".into(), "sriov_numvfs is 0: want 7".into()),
                Check::Skip(
                    "inventory".into(),
                    "forwarder-sriov inventory is not implemented yet".into()
                ),
            ]
        );
        assert!(c.ended);
    }

    #[test]
    fn capture_payload_is_collected_between_markers_and_not_echoed() {
        let mut c = Console::default();
        c.line("VMTEST-BEGIN");
        assert!(c.line("VMTEST-CAPTURE-BEGIN igb-vm").is_none());
        assert!(c.line("H4sIAAAA\r").is_none());
        assert!(c.line("AAAA==").is_none());
        assert!(c.line("VMTEST-CAPTURE-END").is_some());
        assert_eq!(
            c.captures,
            [("igb-vm".to_string(), "H4sIAAAAAAAA==".to_string())]
        );
        c.line("VMTEST-FILE-BEGIN inventory.json");
        c.line("e30=");
        c.line("VMTEST-FILE-END");
        assert_eq!(
            c.files,
            [("inventory.json".to_string(), "e30=".to_string())]
        );
        assert_eq!(c.captures.len(), 1);
    }
}
