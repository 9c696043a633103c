//! Reload latency of the real `sriov-device-plugin` (issue #18): from the config file being
//! rewritten to the fake kubelet's ListAndWatch stream carrying the changed pool, median and
//! p99 over N rewrites (goal: under 200 ms), on the shipped node fixture.
//!
//! Prints figures, never asserts on time; a stream that never shows the change makes it exit
//! non-zero. Run by `cargo test --all-targets` (no `--bench` argument) it makes a short pass
//! that only checks it works.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_api::kubelet::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use sriov_deviceplugin::connect_unix;
use sriov_deviceplugin::fake::FakeKubelet;
use sriov_pci_fake::fixtures;

const BIN: &str = env!("CARGO_BIN_EXE_sriov-device-plugin");
const GOAL: Duration = Duration::from_millis(200);

/// Both x710 ports' VFs (8), then port 0's only (4), alternately.
const CONFIGS: [(&str, usize); 2] = [
    (
        r#"{"resourceList":[{"resourceName":"x710","selectors":{"drivers":["iavf"]}}]}"#,
        8,
    ),
    (
        r#"{"resourceList":[{"resourceName":"x710","selectors":{"pfNames":["ens785f0"]}}]}"#,
        4,
    ),
];

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runs = if full { 100 } else { 5 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(measure(runs)) {
        Ok(mut samples) => report(&mut samples),
        Err(e) => {
            eprintln!("reload bench failed: {e}");
            std::process::exit(1);
        }
    }
}

async fn measure(runs: usize) -> Result<Vec<Duration>, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = tmp.path();
    let fake = fixtures::node().build().map_err(|e| e.to_string())?;
    let p = |rel: &str| root.join(rel);
    for d in ["device-plugins", "dev", "etc"] {
        std::fs::create_dir_all(p(d)).map_err(|e| e.to_string())?;
    }
    std::fs::write(
        p("route"),
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n",
    )
    .map_err(|e| e.to_string())?;
    let config = p("etc/config.json");
    std::fs::write(&config, CONFIGS[0].0).map_err(|e| e.to_string())?;
    let kubelet = FakeKubelet::start(&p("device-plugins"), &p("kubelet-pod-resources"))
        .map_err(|e| e.to_string())?;
    let mut child = Command::new(BIN)
        .arg(format!("--config-file={}", config.display()))
        .arg(format!("--sysfs-root={}", fake.root().display()))
        .arg(format!("--proc-net-route={}", p("route").display()))
        .arg(format!("--dev-dir={}", p("dev").display()))
        .arg(format!(
            "--device-plugin-dir={}",
            p("device-plugins").display()
        ))
        .arg(format!(
            "--plugins-registry-dir={}",
            p("plugins_registry").display()
        ))
        .arg(format!(
            "--pod-resources-socket={}",
            p("pr/kubelet.sock").display()
        ))
        .arg(format!("--devinfo-dir={}", p("devinfo").display()))
        .arg(format!("--cdi-dir={}", p("cdi").display()))
        // Rescans must not be what carries the change.
        .arg("--rescan-interval=3600")
        .env("RUST_LOG", "error")
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting {BIN}: {e}"))?;
    let result = async {
        tokio::time::timeout(
            Duration::from_secs(30),
            kubelet.wait_registered("intel.com/x710"),
        )
        .await
        .map_err(|_| "x710 never registered".to_string())?;
        let sock = p("device-plugins/intel.com_x710.sock");
        let mut stream =
            DevicePluginClient::new(connect_unix(&sock).await.map_err(|e| e.to_string())?)
                .list_and_watch(dp::Empty {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
        wait_for(&mut stream, CONFIGS[0].1).await?;
        let mut samples = Vec::with_capacity(runs);
        for i in 1..=runs {
            let (text, count) = CONFIGS[i % 2];
            let start = Instant::now();
            std::fs::write(&config, text).map_err(|e| e.to_string())?;
            wait_for(&mut stream, count).await?;
            samples.push(start.elapsed());
        }
        Ok(samples)
    }
    .await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let _: &Path = root;
    result
}

async fn wait_for(
    stream: &mut sriov_api::tonic::Streaming<dp::ListAndWatchResponse>,
    count: usize,
) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(msg)) if msg.devices.len() == count => return Ok(()),
                Ok(Some(_)) => {}
                Ok(None) => return Err("the ListAndWatch stream ended".to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| format!("ListAndWatch never listed {count} devices"))?
}

fn report(samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let (median, p99) = (at(0.5), at(0.99));
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    let verdict = if p99 < GOAL { "met" } else { "missed" };
    println!(
        "sriov-device-plugin reload latency (config rewritten -> ListAndWatch), {} runs: \
         median {}, p99 {}; goal < {} ms: {verdict}",
        samples.len(),
        ms(median),
        ms(p99),
        GOAL.as_millis()
    );
}
