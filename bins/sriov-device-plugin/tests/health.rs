//! Device health through the real binary, event-driven: with the periodic rescan set to an
//! hour, a VF's driver unbound in the fake sysfs tree, and VFs removed by lowering
//! `sriov_numvfs`, reach kubelet's ListAndWatch as soon as a kernel uevent arrives. The fake
//! tree emits none, so the test makes the kernel send one where only the plugin hears it: a
//! veth created in the plugin's own network namespace (with `--link-health none`, nothing but
//! the uevent socket listens there). Prints SKIP where namespaces cannot be created.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_api::kubelet::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use sriov_deviceplugin::connect_unix;
use sriov_deviceplugin::fake::FakeKubelet;
use sriov_netlink::{Netns, RtNetlink};
use sriov_pci_fake::fixtures;

const BIN: &str = env!("CARGO_BIN_EXE_sriov-device-plugin");

const VFS: [&str; 4] = [
    "0000:3b:02.0",
    "0000:3b:02.1",
    "0000:3b:02.2",
    "0000:3b:02.3",
];

/// Waits for a ListAndWatch update listing exactly `listed` devices, of which `healthy`.
async fn becomes(
    stream: &mut sriov_api::tonic::Streaming<dp::ListAndWatchResponse>,
    listed: &[&str],
    healthy: &[&str],
) {
    let deadline = Duration::from_secs(30);
    tokio::time::timeout(deadline, async {
        loop {
            let msg = stream.message().await.unwrap().unwrap();
            let mut ids: Vec<&str> = msg.devices.iter().map(|d| d.id.as_str()).collect();
            ids.sort();
            let mut ok: Vec<&str> = msg
                .devices
                .iter()
                .filter(|d| d.health == "Healthy")
                .map(|d| d.id.as_str())
                .collect();
            ok.sort();
            if ids == listed && ok == healthy {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never listed {listed:?} with {healthy:?} healthy"));
}

/// A veth pair in the plugin's namespace: the kernel announces it (and its removal) as `net`
/// uevents there.
async fn kick(nl: &RtNetlink, add: bool) {
    if add {
        sriov_netlink::testing::add_veth(nl.handle(), "kick0", "kick1")
            .await
            .unwrap();
    } else {
        let link = nl.link(&"kick0".into()).await.unwrap().unwrap();
        nl.handle().link().del(link.index).execute().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_unbind_and_vf_removal_reach_list_and_watch_through_uevents() {
    let test = "driver_unbind_and_vf_removal_reach_list_and_watch_through_uevents";
    if Command::new("unshare")
        .args(["--net", "true"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        eprintln!("SKIP {test}: cannot create a network namespace with unshare --net");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fake = fixtures::node().build().unwrap();
    let dp_dir = root.join("device-plugins");
    std::fs::create_dir_all(&dp_dir).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::write(
        root.join("config.json"),
        r#"{"resourceList":[{"resourceName":"x710","selectors":{"pfNames":["ens785f0"]}}]}"#,
    )
    .unwrap();
    std::fs::write(root.join("route"), "Iface\tDestination\tGateway\tFlags\n").unwrap();
    let kubelet = FakeKubelet::start(&dp_dir, &root.join("kubelet-pod-resources")).unwrap();
    let p = |rel: &str| root.join(rel).display().to_string();
    let mut child = Command::new("unshare")
        .args(["--net", "--", BIN])
        .arg(format!("--config-file={}", p("config.json")))
        .arg(format!("--sysfs-root={}", fake.root().display()))
        .arg(format!("--proc-net-route={}", p("route")))
        .arg(format!("--dev-dir={}", p("dev")))
        .arg(format!("--device-plugin-dir={}", dp_dir.display()))
        .arg(format!("--plugins-registry-dir={}", p("plugins_registry")))
        .arg(format!(
            "--pod-resources-socket={}",
            p("pod-resources.sock")
        ))
        .arg(format!("--devinfo-dir={}", p("devinfo")))
        .arg(format!("--cdi-dir={}", p("cdi")))
        .arg("--link-health=none")
        // No periodic rescan within the test: only events can change what kubelet sees.
        .arg("--rescan-interval=3600")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while kubelet.registrations().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ns = Netns::open_path(Path::new(&format!("/proc/{}/ns/net", child.id()))).unwrap();
    assert_ne!(
        ns.id(),
        Netns::current().unwrap().id(),
        "never touch the test's own namespace"
    );
    let nl = RtNetlink::in_netns(ns).unwrap();
    let channel = connect_unix(&dp_dir.join("intel.com_x710.sock"))
        .await
        .unwrap();
    let mut stream = DevicePluginClient::new(channel)
        .list_and_watch(dp::Empty {})
        .await
        .unwrap()
        .into_inner();
    becomes(&mut stream, &VFS, &VFS).await;

    let sysfs = fake.sysfs();
    let vf = VFS[1].parse().unwrap();
    sysfs.unbind(vf).unwrap();
    kick(&nl, true).await;
    becomes(&mut stream, &VFS, &[VFS[0], VFS[2], VFS[3]]).await;

    sysfs.bind(vf, "iavf").unwrap();
    kick(&nl, false).await;
    becomes(&mut stream, &VFS, &VFS).await;

    sysfs
        .set_num_vfs("0000:3b:00.0".parse().unwrap(), 2)
        .unwrap();
    kick(&nl, true).await;
    becomes(&mut stream, &VFS, &VFS[..2]).await;

    sysfs
        .set_num_vfs("0000:3b:00.0".parse().unwrap(), 4)
        .unwrap();
    kick(&nl, false).await;
    becomes(&mut stream, &VFS, &VFS).await;

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
