//! The grpc-interop suite: Python grpcio (an independent gRPC stack, the C
//! core) plays kubelet against our plugins, so a wire mistake that our
//! generated client and server would share still shows up. The protos it
//! compiles are written apart from `proto/`, after kubelet's published API.
//!
//! Two runs, each in its own temp dir:
//!
//! - Device plugin: build the `interop_plugin` example; generate Python from
//!   `crates/device-plugin/interop/kubelet_api.proto` with grpcio-tools; run
//!   `fake_kubelet.py` (serves `kubelet.sock`, takes the plugin's
//!   `Register`, then drives ListAndWatch and Allocate with both
//!   `:authority` forms) and the plugin side by side.
//! - DRA: build `sriov-device-plugin` (with its `testing` feature, so the
//!   fake kernel drives driver binds in a copy of `testdata/sysfs/node`) and
//!   `sriov-e2e`; start `sriov-e2e fake-apiserver` and
//!   `sriov-device-plugin dra` against it; generate Python from
//!   `crates/dra/interop/kubelet_*.proto` (registration, DRA v1 and
//!   v1beta1, health); run `fake_kubelet_dra.py`, which registers, waits
//!   for the ResourceSlices, creates claims over HTTP, prepares and
//!   unprepares them in v1 and v1beta1 and reads the health stream, checking
//!   the fixture's driver links and CDI specs.
//!
//! Every process is killed when the run ends, however it ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::report::Outcome;
use crate::suites::cargo;

/// Relative to the workspace root.
const INTEROP_DIR: &str = "crates/device-plugin/interop";
/// Relative to the workspace root.
const DRA_INTEROP_DIR: &str = "crates/dra/interop";
/// The kubelet protos the DRA run compiles, in [`DRA_INTEROP_DIR`].
const DRA_PROTOS: [&str; 4] = [
    "kubelet_registration.proto",
    "kubelet_dra_v1.proto",
    "kubelet_dra_v1beta1.proto",
    "kubelet_dra_health.proto",
];
/// The fixture the DRA run copies, and the pools it configures: both X710
/// PFs' VFs, 8 devices.
const DRA_FIXTURE: &str = "testdata/sysfs/node";
const DRA_CONFIG: &str =
    r#"{"resourceList":[{"resourceName":"x710","selectors":{"drivers":["iavf","vfio-pci"]}}]}"#;
const DRA_DEVICES: usize = 8;
const DRA_NODE: &str = "interop-node";
/// `sriov_dra::DEFAULT_DRIVER_NAME` (xtask does not depend on the crate).
const DRA_DRIVER: &str = "sriovnetwork.k8snetworkplumbingwg.io";
const TIME_LIMIT: Duration = Duration::from_secs(120);

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
    let device_plugin = match run() {
        Ok(summary) => summary,
        Err(e) => return Outcome::Failed(format!("device plugin: {e:#}")),
    };
    match run_dra() {
        Ok(dra) => Outcome::Passed(format!("{device_plugin}; {dra}")),
        Err(e) => Outcome::Failed(format!("DRA: {e:#}")),
    }
}

/// `cargo xtask interop`: only this suite.
pub(crate) fn main() -> Result<()> {
    match outcome() {
        Outcome::Passed(summary) => {
            println!("grpc-interop passed: {summary}");
            Ok(())
        }
        Outcome::Skipped(why) => {
            println!("grpc-interop skipped: {why}");
            Ok(())
        }
        Outcome::Failed(why) => bail!("grpc-interop failed: {why}"),
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
    let plugin_bin = crate::demo::target_dir().join("debug/examples/interop_plugin");

    let tmp =
        TempDir(std::env::temp_dir().join(format!("nsm-sriov-interop-{}", std::process::id())));
    let gen_dir = tmp.0.join("gen");
    let dp_dir = tmp.0.join("device-plugins");
    std::fs::create_dir_all(&gen_dir)?;
    std::fs::create_dir_all(&dp_dir)?;

    generate(&interop_dir, &["kubelet_api.proto"], &gen_dir)?;

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

    let code = wait(&mut kubelet, "fake_kubelet.py")?;
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

/// Python message and stub modules for `protos` (in `dir`) into `gen_dir`.
fn generate(dir: &Path, protos: &[&str], gen_dir: &Path) -> Result<()> {
    let protoc = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(dir)
        .arg(format!("--python_out={}", gen_dir.display()))
        .arg(format!("--grpc_python_out={}", gen_dir.display()))
        .args(protos)
        .status()
        .context("running grpc_tools.protoc")?;
    if !protoc.success() {
        bail!(
            "grpc_tools.protoc failed on {protos:?} in {}",
            dir.display()
        );
    }
    Ok(())
}

/// Waits for `child` to exit within [`TIME_LIMIT`].
fn wait(child: &mut Guard, what: &str) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + TIME_LIMIT;
    loop {
        if let Some(s) = child.0.try_wait()? {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("{what} did not finish within {} s", TIME_LIMIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A spawned process with stdout and stderr going to `log`.
fn spawn_logged(cmd: &mut Command, log: &Path, what: &str) -> Result<Guard> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    Ok(Guard(child))
}

/// Waits for the fake API server's `url` file (renamed into place after the
/// kubeconfig is written); the base URL.
fn api_url(server: &mut Guard, dir: &Path) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(url) = std::fs::read_to_string(dir.join("url")) {
            return Ok(url.trim().to_string());
        }
        if let Some(status) = server.0.try_wait()? {
            bail!("sriov-e2e fake-apiserver exited with {status} before writing its url");
        }
        if Instant::now() > deadline {
            bail!("sriov-e2e fake-apiserver wrote no url within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of a log, for a failure message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut last: Vec<&str> = text.lines().rev().take(20).collect();
    last.reverse();
    last.join("\n")
}

fn run_dra() -> Result<String> {
    let ws = workspace_root();
    let status = cargo(&[
        "build",
        "-p",
        "sriov-device-plugin",
        "-p",
        "sriov-e2e",
        "--features",
        "sriov-device-plugin/testing",
    ])
    .current_dir(&ws)
    .status()
    .context("building sriov-device-plugin and sriov-e2e")?;
    if !status.success() {
        bail!("building sriov-device-plugin (testing) and sriov-e2e failed");
    }
    let bin = crate::demo::target_dir().join("debug");
    let interop_dir = ws.join(DRA_INTEROP_DIR);

    let tmp =
        TempDir(std::env::temp_dir().join(format!("nsm-sriov-interop-dra-{}", std::process::id())));
    let gen_dir = tmp.0.join("gen");
    let api_dir = tmp.0.join("apiserver");
    let sysfs = tmp.0.join("sysfs");
    let registry = tmp.0.join("plugins_registry");
    let plugin_dir = tmp.0.join("plugins").join(DRA_DRIVER);
    let cdi = tmp.0.join("cdi");
    let devinfo = tmp.0.join("devinfo");
    for d in [&gen_dir, &api_dir, &registry, &cdi, &devinfo] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // The plugin rebinds drivers in the tree it is given; never the checked-in one.
    crate::demo::copy_tree(&ws.join(DRA_FIXTURE), &sysfs)?;
    let config = tmp.0.join("config.json");
    std::fs::write(&config, DRA_CONFIG)?;
    generate(&interop_dir, &DRA_PROTOS, &gen_dir)?;

    let api_log = tmp.0.join("fake-apiserver.log");
    let mut api = spawn_logged(
        Command::new(bin.join("sriov-e2e"))
            .arg("fake-apiserver")
            .arg("--dir")
            .arg(&api_dir),
        &api_log,
        "sriov-e2e fake-apiserver",
    )?;
    let url = api_url(&mut api, &api_dir)?;

    let plugin_log = tmp.0.join("sriov-device-plugin.log");
    let mut plugin = spawn_logged(
        Command::new(bin.join("sriov-device-plugin"))
            .arg("dra")
            .args(["--node-name", DRA_NODE])
            .arg("--kubeconfig")
            .arg(api_dir.join("kubeconfig"))
            .arg("--config-file")
            .arg(&config)
            .arg("--sysfs-root")
            .arg(&sysfs)
            .arg("--plugins-registry-dir")
            .arg(&registry)
            .arg("--plugin-dir")
            .arg(&plugin_dir)
            .arg("--cdi-dir")
            .arg(&cdi)
            .arg("--devinfo-dir")
            .arg(&devinfo)
            .arg("--link-health=none")
            .env("RUST_LOG", "info"),
        &plugin_log,
        "sriov-device-plugin dra",
    )?;

    let kubelet_log = tmp.0.join("fake_kubelet_dra.log");
    let mut kubelet = spawn_logged(
        Command::new("python3")
            .arg(interop_dir.join("fake_kubelet_dra.py"))
            .arg("--gen-dir")
            .arg(&gen_dir)
            .arg("--registry-dir")
            .arg(&registry)
            .arg("--plugin-dir")
            .arg(&plugin_dir)
            .arg("--cdi-dir")
            .arg(&cdi)
            .arg("--sysfs-root")
            .arg(&sysfs)
            .args(["--api-url", &url])
            .args(["--node", DRA_NODE])
            .args(["--driver", DRA_DRIVER])
            .args(["--expect", &DRA_DEVICES.to_string()]),
        &kubelet_log,
        "fake_kubelet_dra.py",
    )?;
    let code = wait(&mut kubelet, "fake_kubelet_dra.py");
    let out = std::fs::read_to_string(&kubelet_log).unwrap_or_default();
    print!("{out}");
    let failed = match &code {
        Ok(c) if c.success() => None,
        Ok(_) => Some(
            out.lines()
                .find(|l| l.starts_with("FAIL"))
                .unwrap_or("fake_kubelet_dra.py failed")
                .to_string(),
        ),
        Err(e) => Some(format!("{e:#}")),
    };
    if let Some(why) = failed {
        let plugin_exit = plugin.0.try_wait().ok().flatten();
        eprintln!(
            "--- sriov-device-plugin dra ({}):\n{}\n--- fake-apiserver:\n{}",
            plugin_exit.map_or("still running".to_string(), |s| s.to_string()),
            tail(&plugin_log),
            tail(&api_log),
        );
        bail!("{why}");
    }
    Ok(format!(
        "python grpcio as kubelet for DRA: registration, {DRA_DEVICES} devices in ResourceSlices, \
         NodePrepareResources and NodeUnprepareResources in v1 and v1beta1 (vfio-pci bind and back, \
         CDI spec), NodeWatchResources; both :authority forms"
    ))
}
