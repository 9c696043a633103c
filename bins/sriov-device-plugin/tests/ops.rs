//! The binary's operator endpoints (issue #17) against a fake kubelet on a
//! fake sysfs tree: `/readyz` turns 200 once kubelet registered the pools,
//! `/metrics` shows the pool gauge for the pools `/debug/state` lists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sriov_deviceplugin::fake::FakeKubelet;
use sriov_pci_fake::fixtures;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_sriov-device-plugin");

const CONFIG: &str = r#"{"resourceList":[
    {"resourceName":"x710","selectors":{"vendors":["8086"],"drivers":["iavf"]}},
    {"resourceName":"cx5","resourcePrefix":"nvidia.com","selectors":{"drivers":["mlx5_core"]}},
    {"resourceName":"igb_vf","selectors":{"drivers":["igbvf"]}}
]}"#;

/// A port nothing listens on now: the OS's pick, let go for the plugin.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// GET `path`: the status and the body (the endpoints answer with a
/// Content-Length and `Connection: close` ends the reply).
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Polls `path` until `want(status, body)`; panics with the last answer
/// after 30 s (a hang turned into a failure, not a measurement).
async fn until(addr: SocketAddr, path: &str, want: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = get(addr, path).await;
        if let Ok((status, body)) = &got
            && want(*status, body)
        {
            return (*status, body.clone());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never answered as wanted; last: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `sriov_dp_pool_devices` by (resource, health), from the Prometheus text.
fn pool_gauge(text: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("sriov_dp_pool_devices{") else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").unwrap();
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap()
        };
        out.insert((label("resource"), label("health")), value.parse().unwrap());
    }
    out
}

struct Plugin(Child);

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_kubelet_and_metrics_show_the_pools_of_the_state() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fake = fixtures::node().build().unwrap();
    for dir in ["device-plugins", "dev"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("config.json"), CONFIG).unwrap();
    std::fs::write(
        root.join("route"),
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n",
    )
    .unwrap();
    let (metrics, debug) = (free_port(), free_port());
    let p = |rel: &str| root.join(rel).display().to_string();
    let mut child = Plugin(
        Command::new(BIN)
            .arg(format!("--config-file={}", p("config.json")))
            .arg(format!("--sysfs-root={}", fake.root().display()))
            .arg(format!("--proc-net-route={}", p("route")))
            .arg(format!("--dev-dir={}", p("dev")))
            .arg(format!("--device-plugin-dir={}", p("device-plugins")))
            .arg(format!("--plugins-registry-dir={}", p("plugins_registry")))
            .arg(format!(
                "--pod-resources-socket={}",
                p("pod-resources.sock")
            ))
            .arg(format!("--devinfo-dir={}", p("devinfo")))
            .arg(format!("--cdi-dir={}", p("cdi")))
            .arg(format!("--metrics-listen={metrics}"))
            .arg(format!("--pprof-listen={debug}"))
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // No kubelet yet: the pools are loaded but not registered.
    let (_, why) = until(metrics, "/readyz", |s, _| s != 0).await;
    assert!(
        why.contains("kubelet has not registered intel.com/x710"),
        "{why}"
    );
    assert_eq!(get(metrics, "/readyz").await.unwrap().0, 503, "{why}");
    assert_eq!(get(metrics, "/livez").await.unwrap(), (200, "ok\n".into()));

    let kubelet =
        FakeKubelet::start(&root.join("device-plugins"), &root.join("kubelet-pr")).unwrap();
    let (_, body) = until(metrics, "/readyz", |s, _| s == 200).await;
    assert_eq!(body, "ready\n");

    // The pools with devices, as the state lists them.
    let (status, state) = get(debug, "/debug/state").await.unwrap();
    assert_eq!(status, 200, "{state}");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    let pools: BTreeMap<String, u64> = state
        .as_object()
        .unwrap()
        .iter()
        .map(|(r, p)| (r.clone(), p["devices"].as_array().unwrap().len() as u64))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(pools.contains_key("intel.com/x710"), "{pools:?}");
    assert!(pools.contains_key("nvidia.com/cx5"), "{pools:?}");
    let registered: Vec<String> = kubelet
        .registrations()
        .into_iter()
        .map(|r| r.resource_name)
        .collect();
    for resource in pools.keys() {
        assert!(
            registered.contains(resource),
            "{resource} in {registered:?}"
        );
    }
    // The gauge: every pool's devices, all healthy, none unhealthy.
    let (_, text) = until(metrics, "/metrics", |s, b| {
        s == 200
            && pools
                .keys()
                .all(|r| pool_gauge(b).contains_key(&(r.clone(), "healthy".into())))
    })
    .await;
    let gauge = pool_gauge(&text);
    for (resource, n) in &pools {
        assert_eq!(gauge[&(resource.clone(), "healthy".into())], *n, "{text}");
        assert_eq!(gauge[&(resource.clone(), "unhealthy".into())], 0, "{text}");
    }
    assert!(
        text.contains("# TYPE sriov_kubelet_registrations_total counter"),
        "{text}"
    );

    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.0.wait().unwrap().success());
    assert!(
        get(metrics, "/livez").await.is_err(),
        "still serving after exit"
    );
}
