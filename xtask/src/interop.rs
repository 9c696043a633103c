//! The grpc-interop suite: Python grpcio (an independent gRPC stack, the C
//! core) plays kubelet against our device plugin, so a wire mistake that our
//! generated client and server would share still shows up.
//!
//! Steps: build the `interop_plugin` example; generate Python code from
//! `crates/device-plugin/interop/kubelet_api.proto` (written separately
//! from `proto/`) with grpcio-tools into a temp dir; run
//! `interop/fake_kubelet.py` (serves `kubelet.sock`, takes the plugin's
//! `Register`, then drives ListAndWatch and Allocate with both `:authority`
//! forms) and the plugin side by side in a temp device-plugin dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::report::Outcome;
use crate::suites::cargo;

/// Relative to the workspace root.
const INTEROP_DIR: &str = "crates/device-plugin/interop";

fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// Runs the suite; never panics, always says why it skipped or failed.
pub(crate) fn outcome() -> Outcome {
    let probe = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools.protoc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(s) if s.success() => {}
        Ok(_) => {
            return Outcome::Skipped(
                "python grpcio/grpcio-tools missing; xtask/setup/python-grpc.sh, run by cargo xtask test, installs them"
                    .into(),
            );
        }
        Err(e) => return Outcome::Skipped(format!("python3 not runnable: {e}")),
    }
    match run() {
        Ok(summary) => Outcome::Passed(summary),
        Err(e) => Outcome::Failed(format!("{e:#}")),
    }
}

/// A temp dir removed on drop (xtask has no tempfile dependency).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop, so a failed check leaves nothing running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run() -> Result<String> {
    let ws = workspace_root();
    let status = cargo(&[
        "build",
        "-p",
        "sriov-deviceplugin",
        "--example",
        "interop_plugin",
    ])
    .current_dir(&ws)
    .status()
    .context("building the interop_plugin example")?;
    if !status.success() {
        bail!("building the interop_plugin example failed");
    }
    let interop_dir = ws.join(INTEROP_DIR);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"));
    let plugin_bin = target.join("debug/examples/interop_plugin");

    let tmp =
        TempDir(std::env::temp_dir().join(format!("nsm-sriov-interop-{}", std::process::id())));
    let gen_dir = tmp.0.join("gen");
    let dp_dir = tmp.0.join("device-plugins");
    std::fs::create_dir_all(&gen_dir)?;
    std::fs::create_dir_all(&dp_dir)?;

    let protoc = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&interop_dir)
        .arg(format!("--python_out={}", gen_dir.display()))
        .arg(format!("--grpc_python_out={}", gen_dir.display()))
        .arg("kubelet_api.proto")
        .status()
        .context("running grpc_tools.protoc")?;
    if !protoc.success() {
        bail!("grpc_tools.protoc failed on {INTEROP_DIR}/kubelet_api.proto");
    }

    let mut kubelet = Guard(
        Command::new("python3")
            .arg(interop_dir.join("fake_kubelet.py"))
            .arg(&dp_dir)
            .arg(&gen_dir)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting fake_kubelet.py")?,
    );
    let _plugin = Guard(
        Command::new(&plugin_bin)
            .arg(&dp_dir)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", plugin_bin.display()))?,
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let code = loop {
        if let Some(s) = kubelet.0.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            bail!("fake_kubelet.py did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    if let Some(mut so) = kubelet.0.stdout.take() {
        use std::io::Read;
        so.read_to_string(&mut out)?;
    }
    print!("{out}");
    if !code.success() {
        let why = out
            .lines()
            .find(|l| l.starts_with("FAIL"))
            .unwrap_or("fake_kubelet.py failed");
        bail!("{why}");
    }
    Ok("python grpcio: Register, ListAndWatch, GetPreferredAllocation, Allocate; both :authority forms".into())
}
