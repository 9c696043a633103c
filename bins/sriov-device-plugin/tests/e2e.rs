//! The binary against a fake kubelet over unix sockets in a temp dir, on a fake sysfs tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_api::kubelet::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use sriov_api::tonic;
use sriov_deviceplugin::connect_unix;
use sriov_deviceplugin::fake::FakeKubelet;
use sriov_pci_fake::{FakeSysfs, fixtures};

const BIN: &str = env!("CARGO_BIN_EXE_sriov-device-plugin");

const CONFIG: &str = r#"{"resourceList":[
    {"resourceName":"x710","allocationPolicy":"packed","selectors":{"vendors":["8086"],"drivers":["iavf"]}},
    {"resourceName":"igb_vf","selectors":{"drivers":["igbvf"]}},
    {"resourceName":"cx5","resourcePrefix":"nvidia.com","selectors":{"drivers":["mlx5_core"]},"bogus":1}
]}"#;

struct Node {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    fake: FakeSysfs,
}

impl Node {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let fake = fixtures::node().build().unwrap();
        std::fs::create_dir_all(root.join("device-plugins")).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("config.json"), CONFIG).unwrap();
        std::fs::write(
            root.join("route"),
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n",
        )
        .unwrap();
        Self {
            _tmp: tmp,
            root,
            fake,
        }
    }

    fn command(&self, extra: &[&str]) -> Command {
        self.command_via(Command::new(BIN), "none", extra)
    }

    /// The plugin's command line on `c` (the binary itself, or a wrapper such as `unshare`).
    fn command_via(&self, mut c: Command, link_health: &str, extra: &[&str]) -> Command {
        let p = |rel: &str| self.root.join(rel).display().to_string();
        c.arg(format!("--config-file={}", p("config.json")))
            .arg(format!("--sysfs-root={}", self.fake.root().display()))
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
            .arg(format!("--link-health={link_health}"))
            .arg("--rescan-interval=1")
            // SRDP DaemonSets pass these; they must not stop us.
            .arg("--log-dir=sriovdp")
            .arg("--log-level=10")
            .args(extra)
            .env("RUST_LOG", "warn");
        c
    }

    fn dp_dir(&self) -> PathBuf {
        self.root.join("device-plugins")
    }
}

async fn eventually<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fake kubelet on the plugin's device-plugin dir. Its pod-resources
/// socket is not the one the plugin polls: with no pods reported there, the
/// plugin would release what the tests allocate.
fn start_kubelet(node: &Node) -> FakeKubelet {
    FakeKubelet::start(&node.dp_dir(), &node.root.join("kubelet-pod-resources")).unwrap()
}

async fn client(sock: &Path) -> DevicePluginClient<tonic::transport::Channel> {
    DevicePluginClient::new(connect_unix(sock).await.unwrap())
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    child.wait().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_every_pool_to_kubelet_allocates_and_picks_up_new_vfs() {
    let node = Node::new();
    let kubelet = start_kubelet(&node);
    // A stale device-info file of ours from a previous run, and someone else's.
    let devinfo = node.root.join("devinfo");
    std::fs::create_dir_all(&devinfo).unwrap();
    std::fs::write(
        devinfo.join("intel.com-x710-0000:3b:02.3-device.json"),
        "{}",
    )
    .unwrap();
    std::fs::write(
        devinfo.join("example.com-other-0000:3b:02.3-device.json"),
        "{}",
    )
    .unwrap();

    let mut child = node.command(&[]).stderr(Stdio::piped()).spawn().unwrap();
    eventually("two registrations", || kubelet.registrations().len() >= 2).await;
    // igb_vf matches nothing yet: as SRDP, it is not offered to kubelet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut names: Vec<String> = kubelet
        .registrations()
        .iter()
        .map(|r| {
            assert_eq!(r.version, "v1beta1");
            // Only a pool with an allocationPolicy offers kubelet a preference, as SRDP
            // (which has none) never does.
            assert_eq!(
                r.options
                    .as_ref()
                    .unwrap()
                    .get_preferred_allocation_available,
                r.resource_name == "intel.com/x710",
                "{}",
                r.resource_name
            );
            format!("{} {}", r.resource_name, r.endpoint)
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "intel.com/x710 intel.com_x710.sock",
            "nvidia.com/cx5 nvidia.com_cx5.sock"
        ]
    );
    assert!(!node.dp_dir().join("intel.com_igb_vf.sock").exists());
    assert!(
        !devinfo
            .join("intel.com-x710-0000:3b:02.3-device.json")
            .exists(),
        "cleaned at start"
    );
    assert!(
        devinfo
            .join("example.com-other-0000:3b:02.3-device.json")
            .exists()
    );

    let mut x710 = client(&node.dp_dir().join("intel.com_x710.sock")).await;
    let mut stream = x710
        .list_and_watch(dp::Empty {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let ids: Vec<&str> = first.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), 8);
    assert_eq!(ids[0], "0000:3b:02.0");
    assert!(first.devices.iter().all(|d| d.health == "Healthy"));
    assert_eq!(first.devices[0].topology.as_ref().unwrap().nodes[0].id, 0);

    let pref = x710
        .get_preferred_allocation(dp::PreferredAllocationRequest {
            container_requests: vec![dp::ContainerPreferredAllocationRequest {
                available_device_i_ds: vec![
                    "0000:3b:02.0".into(),
                    "0000:3b:0a.0".into(),
                    "0000:3b:0a.1".into(),
                ],
                must_include_device_i_ds: vec![],
                allocation_size: 2,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let mut chosen = pref.container_responses[0].device_i_ds.clone();
    chosen.sort();
    assert_eq!(
        chosen,
        vec!["0000:3b:0a.0", "0000:3b:0a.1"],
        "packed on one PF"
    );

    let resp = x710
        .allocate(dp::AllocateRequest {
            container_requests: vec![dp::ContainerAllocateRequest {
                devices_ids: vec!["0000:3b:02.1".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let envs = &resp.container_responses[0].envs;
    assert_eq!(envs["PCIDEVICE_INTEL_COM_X710"], "0000:3b:02.1");
    let info: serde_json::Value =
        serde_json::from_str(&envs["PCIDEVICE_INTEL_COM_X710_INFO"]).unwrap();
    assert_eq!(info["0000:3b:02.1"]["generic"]["deviceID"], "0000:3b:02.1");
    let file = devinfo.join("intel.com-x710-0000:3b:02.1-device.json");
    assert!(file.exists());

    // Enabling VFs on the 82576 after start: its pool gains them without a restart and is
    // registered with kubelet then.
    node.fake
        .sysfs()
        .set_num_vfs("0000:01:00.0".parse().unwrap(), 3)
        .unwrap();
    eventually("igb_vf registered once it has devices", || {
        kubelet
            .registrations()
            .iter()
            .any(|r| r.resource_name == "intel.com/igb_vf")
    })
    .await;
    let mut igb = client(&node.dp_dir().join("intel.com_igb_vf.sock")).await;
    let mut igb_stream = igb.list_and_watch(dp::Empty {}).await.unwrap().into_inner();
    let next = tokio::time::timeout(Duration::from_secs(30), igb_stream.message())
        .await
        .expect("the pool published its new VFs")
        .unwrap()
        .unwrap();
    assert_eq!(next.devices.len(), 3);

    let status = terminate(&mut child);
    assert!(status.success(), "{status:?}");
    assert!(!file.exists(), "device-info files are removed at stop");
    assert!(
        devinfo
            .join("example.com-other-0000:3b:02.3-device.json")
            .exists()
    );
    assert!(!node.dp_dir().join("intel.com_x710.sock").exists());
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("resourceList[2].bogus"),
        "unknown key warned about: {stderr}"
    );
}

#[test]
fn dry_run_prints_pools_and_the_reason_for_every_device() {
    let node = Node::new();
    let out = node.command(&["--dry-run"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("intel.com/x710: 8 device(s)"), "{text}");
    assert!(text.contains("intel.com/igb_vf: 0 device(s)"), "{text}");
    assert!(text.contains("nvidia.com/cx5: 2 device(s)"), "{text}");
    assert!(
        text.contains("skipped: it is a PF with 4 VFs enabled"),
        "{text}"
    );
    assert!(
        text.contains("not intel.com/x710: selectors[0]: drivers: driver e1000e is not in [iavf]"),
        "{text}"
    );
}

/// As SRDP: a resource whose selectors do not parse is skipped with an error and the others
/// are served; `--strict` refuses the whole config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_with_bad_selectors_is_skipped_unless_strict() {
    let node = Node::new();
    std::fs::write(
        node.root.join("config.json"),
        r#"{"resourceList":[
            {"resourceName":"bad","selectors":{"pfNames":["ens1f0#3-1"]}},
            {"resourceName":"x710","selectors":{"vendors":["8086"],"drivers":["iavf"]}}
        ]}"#,
    )
    .unwrap();
    let strict = node.command(&["--strict"]).output().unwrap();
    assert!(!strict.status.success());
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(
        err.contains("resourceList[0].selectors.pfNames[0]"),
        "{err}"
    );

    let kubelet = start_kubelet(&node);
    let mut child = node
        .command(&[])
        .env("RUST_LOG", "error")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("x710 registered", || kubelet.registrations().len() == 1).await;
    assert_eq!(kubelet.registrations()[0].resource_name, "intel.com/x710");
    let status = terminate(&mut child);
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("resourceList[0]") && stderr.contains("ends before it starts"),
        "{stderr}"
    );
}

#[test]
fn a_bad_config_stops_the_plugin_naming_the_field() {
    let node = Node::new();
    std::fs::write(
        node.root.join("config.json"),
        r#"{"resourceList":[{"resourceName":"a","selectors":{"pfNames":["ens1f0#3-1"]}}]}"#,
    )
    .unwrap();
    let out = node.command(&[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resourceList[0].selectors.pfNames[0]")
            && err.contains("ends before it starts"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_use_cdi_specs_are_written_named_in_allocate_and_removed_at_stop() {
    let node = Node::new();
    let kubelet = start_kubelet(&node);
    let cdi = node.root.join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    std::fs::write(cdi.join("sriov-dp-left-over.yaml"), "").unwrap();

    let mut child = node
        .command(&["-use-cdi"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("two registrations", || kubelet.registrations().len() >= 2).await;
    // igb_vf matches nothing yet: as SRDP, it is not offered to kubelet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spec = cdi.join("sriov-dp-intel.com-net-pci-x710.json");
    eventually("the x710 CDI spec", || spec.exists()).await;
    assert!(!cdi.join("sriov-dp-left-over.yaml").exists());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&spec).unwrap()).unwrap();
    assert_eq!(v["kind"], "intel.com/net-pci");
    assert_eq!(v["devices"].as_array().unwrap().len(), 8);

    let mut x710 = client(&node.dp_dir().join("intel.com_x710.sock")).await;
    let resp = x710
        .allocate(dp::AllocateRequest {
            container_requests: vec![dp::ContainerAllocateRequest {
                devices_ids: vec!["0000:3b:0a.3".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let c = &resp.container_responses[0];
    assert!(c.devices.is_empty());
    // SRDP's annotation only, unless --cdi-devices-field.
    assert!(c.cdi_devices.is_empty());
    assert_eq!(
        c.annotations["cdi.k8s.io/intel.com_net-pci"],
        "intel.com/net-pci=0000:3b:0a.3"
    );
    assert_eq!(v["cdiVersion"], "0.5.0");

    let status = terminate(&mut child);
    assert!(status.success(), "{status:?}");
    assert!(!spec.exists(), "CDI specs are removed at stop");
}

/// Waits for a ListAndWatch update whose healthy devices are exactly `want`.
async fn healthy_becomes(stream: &mut tonic::Streaming<dp::ListAndWatchResponse>, want: &[&str]) {
    let deadline = Duration::from_secs(30);
    tokio::time::timeout(deadline, async {
        loop {
            let msg = stream.message().await.unwrap().unwrap();
            let healthy: Vec<&str> = msg
                .devices
                .iter()
                .filter(|d| d.health == "Healthy")
                .map(|d| d.id.as_str())
                .collect();
            if healthy == want {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("healthy devices never became {want:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pf_links_seen_over_netlink_drive_health_in_list_and_watch() {
    use sriov_netlink::rtnetlink::LinkUnspec;
    use sriov_netlink::{Netns, RtNetlink};

    let test = "pf_links_seen_over_netlink_drive_health_in_list_and_watch";
    // The plugin runs in a network namespace of its own, where the test then plays the PF.
    if Command::new("unshare")
        .args(["--net", "true"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        eprintln!("SKIP {test}: cannot create a network namespace with unshare --net");
        return;
    }
    let node = Node::new();
    let kubelet = start_kubelet(&node);
    let mut wrapper = Command::new("unshare");
    wrapper.args(["--net", "--", BIN]);
    let mut child = node.command_via(wrapper, "netlink", &[]).spawn().unwrap();
    eventually("two registrations", || kubelet.registrations().len() >= 2).await;
    // igb_vf matches nothing yet: as SRDP, it is not offered to kubelet.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut x710 = client(&node.dp_dir().join("intel.com_x710.sock")).await;
    let mut stream = x710
        .list_and_watch(dp::Empty {})
        .await
        .unwrap()
        .into_inner();
    // Its namespace has no ens785f0/ens785f1: every VF's PF link is gone.
    healthy_becomes(&mut stream, &[]).await;

    // The plugin has exec'ed by now (it registered), so this is its namespace, not ours.
    let ns = Netns::open_path(Path::new(&format!("/proc/{}/ns/net", child.id()))).unwrap();
    assert_ne!(
        ns.id(),
        Netns::current().unwrap().id(),
        "never touch the test's own namespace"
    );
    let nl = RtNetlink::in_netns(ns).unwrap();
    sriov_netlink::testing::add_veth(nl.handle(), "ens785f0", "peer0")
        .await
        .unwrap();
    let pf = nl.link(&"ens785f0".into()).await.unwrap().unwrap();
    let peer = nl.link(&"peer0".into()).await.unwrap().unwrap();
    for index in [pf.index, peer.index] {
        nl.handle()
            .link()
            .change(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .unwrap();
    }
    healthy_becomes(
        &mut stream,
        &[
            "0000:3b:02.0",
            "0000:3b:02.1",
            "0000:3b:02.2",
            "0000:3b:02.3",
        ],
    )
    .await;

    // Carrier loss on port 0 makes its VFs unhealthy again.
    nl.handle()
        .link()
        .change(LinkUnspec::new_with_index(peer.index).down().build())
        .execute()
        .await
        .unwrap();
    healthy_becomes(&mut stream, &[]).await;

    let status = terminate(&mut child);
    assert!(status.success(), "{status:?}");
}
