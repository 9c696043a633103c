//! The binary's allocation policies, topology and switchdev handling, against a fake kubelet
//! over unix sockets in a temp dir, on the fixture node (X710: 2 PFs x 4 iavf VFs on NUMA 0;
//! ConnectX-5: 2 VFs on NUMA 1; 82576 PF without VFs and without NUMA node).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_api::kubelet::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use sriov_api::tonic;
use sriov_deviceplugin::connect_unix;
use sriov_deviceplugin::fake::FakeKubelet;
use sriov_pci_fake::{FakeSysfs, fixtures};

const BIN: &str = env!("CARGO_BIN_EXE_sriov-device-plugin");

/// Mixed-case keys, as the operator writes them, on the resources it would not set a policy on.
const CONFIG: &str = r#"{"resourceList":[
    {"resourceName":"x710","allocationPolicy":"spread","selectors":{"drivers":["iavf"]}},
    {"resourceName":"cx5","ExcludeTopology":true,"AllocationPolicy":"numa","selectors":{"Drivers":["mlx5_core"]}},
    {"resourceName":"igb","selectors":{"drivers":["igb"]}}
]}"#;

struct Plugin {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    _fake: FakeSysfs,
    child: Child,
    kubelet: FakeKubelet,
}

impl Plugin {
    fn start(config: &str, fake: FakeSysfs) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        for d in ["device-plugins", "dev"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("config.json"), config).unwrap();
        std::fs::write(root.join("route"), "Iface\tDestination\tGateway\tFlags\n").unwrap();
        let kubelet = FakeKubelet::start(
            &root.join("device-plugins"),
            &root.join("kubelet-pod-resources"),
        )
        .unwrap();
        let p = |rel: &str| root.join(rel).display().to_string();
        let child = Command::new(BIN)
            .arg(format!("--config-file={}", p("config.json")))
            .arg(format!("--sysfs-root={}", fake.root().display()))
            .arg(format!("--proc-net-route={}", p("route")))
            .arg(format!("--dev-dir={}", p("dev")))
            .arg(format!("--device-plugin-dir={}", p("device-plugins")))
            .arg(format!("--plugins-registry-dir={}", p("plugins_registry")))
            .arg(format!("--pod-resources-socket={}", p("pr/kubelet.sock")))
            .arg(format!("--devinfo-dir={}", p("devinfo")))
            .arg(format!("--cdi-dir={}", p("cdi")))
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        Self {
            _tmp: tmp,
            root,
            _fake: fake,
            child,
            kubelet,
        }
    }

    async fn registered(&self, n: usize) -> Vec<dp::RegisterRequest> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.kubelet.registrations().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {n} registrations"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut regs = self.kubelet.registrations();
        regs.sort_by(|a, b| a.resource_name.cmp(&b.resource_name));
        regs
    }

    async fn client(&self, resource: &str) -> DevicePluginClient<tonic::transport::Channel> {
        let sock = self
            .root
            .join("device-plugins")
            .join(format!("{}.sock", resource.replace('/', "_")));
        DevicePluginClient::new(connect_unix(&sock).await.unwrap())
    }

    async fn devices(&self, resource: &str) -> Vec<dp::Device> {
        let mut stream = self
            .client(resource)
            .await
            .list_and_watch(dp::Empty {})
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap().unwrap().devices
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn numa_nodes(devices: &[dp::Device]) -> Vec<Option<i64>> {
    devices
        .iter()
        .map(|d| d.topology.as_ref().map(|t| t.nodes[0].id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_advertised_per_pool_and_topology_follows_sysfs_and_exclude_topology() {
    let plugin = Plugin::start(CONFIG, fixtures::node().build().unwrap());
    let regs = plugin.registered(3).await;
    let offered: Vec<(&str, bool)> = regs
        .iter()
        .map(|r| {
            let opts = r.options.as_ref().unwrap();
            (
                r.resource_name.as_str(),
                opts.get_preferred_allocation_available,
            )
        })
        .collect();
    assert_eq!(
        offered,
        [
            ("intel.com/cx5", true),
            ("intel.com/igb", false),
            ("intel.com/x710", true)
        ]
    );

    assert_eq!(
        numa_nodes(&plugin.devices("intel.com/x710").await),
        [Some(0); 8]
    );
    // excludeTopology: no NUMA node although sysfs has one (1).
    assert_eq!(
        numa_nodes(&plugin.devices("intel.com/cx5").await),
        [None; 2]
    );
    // sysfs says -1: no NUMA node.
    assert_eq!(numa_nodes(&plugin.devices("intel.com/igb").await), [None]);

    // spread: one VF of each X710 port before a second of either.
    let all: Vec<String> = plugin
        .devices("intel.com/x710")
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    let resp = plugin
        .client("intel.com/x710")
        .await
        .get_preferred_allocation(dp::PreferredAllocationRequest {
            container_requests: vec![dp::ContainerPreferredAllocationRequest {
                available_device_i_ds: all.clone(),
                must_include_device_i_ds: vec!["0000:3b:02.1".into()],
                allocation_size: 3,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.container_responses[0].device_i_ds,
        ["0000:3b:02.1", "0000:3b:0a.0", "0000:3b:02.0"]
    );
}

/// The ConnectX-5 PF in switchdev mode: its VFs are still offered, each once, named by the
/// uplink; no representor becomes a device, and `pfNames` by the uplink keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchdev_pf_offers_its_vfs_and_never_a_representor() {
    let fake = fixtures::node().build().unwrap();
    let reps = fake.switchdev("0000:5e:00.0".parse().unwrap(), 0).unwrap();
    assert_eq!(reps.len(), 2);
    let plugin = Plugin::start(
        r#"{"resourceList":[{"resourceName":"cx5","selectors":{"pfNames":["ens1f0np0"]}}]}"#,
        fake,
    );
    plugin.registered(1).await;
    let ids: Vec<String> = plugin
        .devices("intel.com/cx5")
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["0000:5e:00.2", "0000:5e:00.3"]);
    let resp = plugin
        .client("intel.com/cx5")
        .await
        .allocate(dp::AllocateRequest {
            container_requests: vec![dp::ContainerAllocateRequest {
                devices_ids: vec!["0000:5e:00.2".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let info = &resp.container_responses[0].envs["PCIDEVICE_INTEL_COM_CX5_INFO"];
    for rep in &reps {
        assert!(!info.contains(rep.as_str()), "{rep} in {info}");
    }
    let file = plugin
        .root
        .join("devinfo/intel.com-cx5-0000:5e:00.2-device.json");
    let written = std::fs::read_to_string(&file).unwrap();
    for rep in &reps {
        assert!(!written.contains(rep.as_str()), "{rep} in {written}");
    }
}
