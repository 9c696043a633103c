//! The device plugin against a fake kubelet over real unix sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_api::kubelet::pluginregistration as reg;
use sriov_api::tonic::Code;
use sriov_deviceplugin::{AllocationPolicy, Backend, Device, RegistrationMode, connect_unix};

#[tokio::test]
async fn registers_with_kubelet_as_v1beta1_with_socket_name_and_options() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    registered(&h, &kubelet, 1).await;

    let req = kubelet.registrations()[0].clone();
    assert_eq!(req.version, "v1beta1");
    assert_eq!(req.endpoint, "example.com_sriov_a.sock");
    assert_eq!(req.resource_name, RESOURCE);
    let opts = req.options.unwrap();
    assert!(opts.get_preferred_allocation_available);
    assert!(!opts.pre_start_required);

    // Kubelet dials the endpoint relative to its own directory.
    let mut client = plugin_client(&h.dp_dir().join(&req.endpoint)).await;
    let got = client
        .get_device_plugin_options(dp::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, opts);
    h.stop().await;
}

#[tokio::test]
async fn list_and_watch_sends_the_full_list_then_every_change() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let backend = MemBackend::new(two_vfs());
    let h = start_plugin(root, cfg, backend.clone());
    registered(&h, &kubelet, 1).await;

    let mut client = plugin_client(&h.socket()).await;
    let mut stream = client
        .list_and_watch(dp::Empty {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.devices.len(), 2);
    assert_eq!(first.devices[0].id, "0000:3b:02.0");
    assert_eq!(first.devices[0].health, "Healthy");
    assert_eq!(
        first.devices[0].topology,
        Some(dp::TopologyInfo {
            nodes: vec![dp::NumaNode { id: 0 }]
        })
    );

    // A VF turns unhealthy, one on NUMA-less hardware appears, and one with
    // an ID kubelet could not carry is left out.
    backend.devices.send_modify(|d| {
        d[1].healthy = false;
        d.push(Device {
            id: "0000:af:02.0".into(),
            healthy: true,
            numa_node: None,
            group: None,
        });
        d.push(Device {
            id: "x".repeat(64),
            healthy: true,
            numa_node: Some(1),
            group: None,
        });
    });
    let second = stream.message().await.unwrap().unwrap();
    let ids: Vec<&str> = second.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, vec!["0000:3b:02.0", "0000:3b:02.1", "0000:af:02.0"]);
    assert_eq!(second.devices[1].health, "Unhealthy");
    assert_eq!(second.devices[2].topology, None);

    // A change kubelet can't see (the PF grouping) sends nothing; the next
    // real change does.
    backend
        .devices
        .send_modify(|d| d[0].group = Some("other-pf".into()));
    // Give the stream task the chance to (wrongly) send for it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    backend.devices.send_modify(|d| d.truncate(1));
    let third = stream.message().await.unwrap().unwrap();
    assert_eq!(third.devices.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn cancelled_list_and_watch_stops_watching_the_backend() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let backend = MemBackend::new(two_vfs());
    let h = start_plugin(root, cfg, backend.clone());
    registered(&h, &kubelet, 1).await;
    let baseline = backend.devices.receiver_count();

    let mut client = plugin_client(&h.socket()).await;
    let mut stream = client
        .list_and_watch(dp::Empty {})
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    assert_eq!(backend.devices.receiver_count(), baseline + 1);
    drop(stream);
    drop(client);
    // The next change finds nobody listening and ends the watch.
    backend.devices.send_modify(|d| d[0].healthy = false);
    eventually("ListAndWatch task to end", || {
        backend.devices.receiver_count() == baseline
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn allocate_grants_known_ids_and_refuses_unknown_taken_and_malformed_ones() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let backend = MemBackend::new(two_vfs());
    let h = start_plugin(root, cfg, backend.clone());
    registered(&h, &kubelet, 1).await;
    let mut client = plugin_client(&h.socket()).await;
    let req = |containers: &[&[&str]]| dp::AllocateRequest {
        container_requests: containers
            .iter()
            .map(|ids| dp::ContainerAllocateRequest {
                devices_ids: ids.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
    };

    let ok = client
        .allocate(req(&[&["0000:3b:02.0"]]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.container_responses.len(), 1);
    assert_eq!(
        ok.container_responses[0].envs["NSM_SRIOV_TOKENS_sriov_a"],
        "0000:3b:02.0"
    );
    assert_eq!(backend.allocated(), vec!["0000:3b:02.0".to_string()]);

    let unknown = client
        .allocate(req(&[&["0000:99:00.0"]]))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    let taken = client
        .allocate(req(&[&["0000:3b:02.0"]]))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::ResourceExhausted, "{taken:?}");

    let twice = client
        .allocate(req(&[&["0000:3b:02.1"], &["0000:3b:02.1"]]))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::InvalidArgument);
    let empty = client.allocate(req(&[&[]])).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);

    // Refusals allocated nothing.
    assert_eq!(backend.allocated(), vec!["0000:3b:02.0".to_string()]);
    h.stop().await;
}

#[tokio::test]
async fn preferred_allocation_keeps_a_pod_on_one_pf() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let devices = vec![
        vf("a0", "pf-a", 0),
        vf("b0", "pf-b", 1),
        vf("b1", "pf-b", 1),
        vf("a1", "pf-a", 0),
    ];
    let h = start_plugin(root, cfg, MemBackend::new(devices));
    registered(&h, &kubelet, 1).await;
    let mut client = plugin_client(&h.socket()).await;
    let resp = client
        .get_preferred_allocation(dp::PreferredAllocationRequest {
            container_requests: vec![dp::ContainerPreferredAllocationRequest {
                available_device_i_ds: vec!["a0".into(), "b0".into(), "b1".into(), "a1".into()],
                must_include_device_i_ds: vec!["b1".into()],
                allocation_size: 2,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.container_responses[0].device_i_ds, vec!["b1", "b0"]);
    h.stop().await;
}

/// Kubelet's request for one container.
fn preferred_request(
    available: &[&str],
    must: &[&str],
    size: i32,
) -> dp::PreferredAllocationRequest {
    dp::PreferredAllocationRequest {
        container_requests: vec![dp::ContainerPreferredAllocationRequest {
            available_device_i_ds: available.iter().map(|s| s.to_string()).collect(),
            must_include_device_i_ds: must.iter().map(|s| s.to_string()).collect(),
            allocation_size: size,
        }],
    }
}

#[tokio::test]
async fn each_policy_answers_through_grpc_and_is_advertised() {
    let devices = vec![
        vf("a0", "pf-a", 0),
        vf("a1", "pf-a", 0),
        vf("b0", "pf-b", 1),
        vf("b1", "pf-b", 1),
        vf("b2", "pf-b", 1),
    ];
    let all = ["a0", "a1", "b0", "b1", "b2"];
    // (policy, must_include, size, answer)
    let cases: [(AllocationPolicy, &[&str], i32, &[&str]); 4] = [
        (AllocationPolicy::Packed, &[], 2, &["a0", "a1"]),
        (AllocationPolicy::Spread, &[], 2, &["b0", "a0"]),
        (AllocationPolicy::Spread, &["a1"], 3, &["a1", "b0", "b1"]),
        (AllocationPolicy::Numa, &["a1"], 3, &["a1", "a0", "b0"]),
    ];
    for (policy, must, size, want) in cases {
        let root = tempfile::tempdir().unwrap();
        let mut cfg = config(root.path(), RegistrationMode::Kubelet);
        cfg.allocation_policy = Some(policy);
        let kubelet = start_kubelet(&cfg.device_plugin_dir);
        let h = start_plugin(root, cfg, MemBackend::new(devices.clone()));
        registered(&h, &kubelet, 1).await;
        let opts = kubelet.registrations()[0].options.unwrap();
        assert!(opts.get_preferred_allocation_available, "{policy}");
        let mut client = plugin_client(&h.socket()).await;
        let resp = client
            .get_preferred_allocation(preferred_request(&all, must, size))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.container_responses[0].device_i_ds, want, "{policy}");
        h.stop().await;
    }
}

#[tokio::test]
async fn without_a_policy_preferred_allocation_is_not_advertised_and_gives_no_hint() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path(), RegistrationMode::Kubelet);
    cfg.allocation_policy = None;
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    registered(&h, &kubelet, 1).await;
    let opts = kubelet.registrations()[0].options.unwrap();
    assert!(!opts.get_preferred_allocation_available);
    let mut client = plugin_client(&h.socket()).await;
    let asked = client
        .get_device_plugin_options(dp::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(asked, opts);
    let resp = client
        .get_preferred_allocation(preferred_request(&["0000:3b:02.0", "0000:3b:02.1"], &[], 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.container_responses.len(), 1);
    assert!(resp.container_responses[0].device_i_ds.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn kubelet_restart_reregisters_the_resource() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    registered(&h, &kubelet, 1).await;

    // What kubelet does when it starts: its old socket goes, every plugin
    // socket in the directory is deleted, a new kubelet.sock appears.
    kubelet.restart().unwrap();
    registered(&h, &kubelet, 2).await;

    let mut client = plugin_client(&h.socket()).await;
    let mut stream = client
        .list_and_watch(dp::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().devices.len(), 2);
    h.stop().await;
}

#[tokio::test]
async fn kubelet_absent_at_start_is_retried_until_it_appears() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let dir = cfg.device_plugin_dir.clone();
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    eventually("plugin socket", || h.socket().exists()).await;
    // Let a few registration attempts fail against the missing kubelet.sock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*h.registrations.borrow(), 0);

    let kubelet = start_kubelet(&dir);
    registered(&h, &kubelet, 1).await;
    // The retry timer and the kubelet.sock creation event may both lead to
    // a Register; kubelet treats a repeat as a refresh.
    for r in kubelet.registrations().iter() {
        assert_eq!(r.resource_name, RESOURCE);
    }
    h.stop().await;
}

#[tokio::test]
async fn a_refusing_kubelet_is_retried_with_backoff() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    kubelet.refuse_next(3);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    registered(&h, &kubelet, 1).await;
    assert_eq!(kubelet.refusals_left(), 0, "all refusals were consumed");
    h.stop().await;
}

#[tokio::test]
async fn plugin_socket_deleted_under_us_is_recreated_and_reregistered() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    registered(&h, &kubelet, 1).await;

    std::fs::remove_file(h.socket()).unwrap();
    registered(&h, &kubelet, 2).await;
    let mut client = plugin_client(&h.socket()).await;
    client
        .get_device_plugin_options(dp::Empty {})
        .await
        .unwrap();
    h.stop().await;
}

#[tokio::test]
async fn shutdown_removes_the_socket() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    registered(&h, &kubelet, 1).await;
    let sock = h.socket();
    assert!(sock.exists());
    let _root = h.stop().await;
    assert!(!sock.exists(), "{} left behind", sock.display());
}

#[tokio::test]
async fn plugin_watcher_mode_serves_getinfo_and_device_plugin_on_one_socket() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Auto);
    std::fs::create_dir_all(&cfg.plugins_registry_dir).unwrap();
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    let sock = h.cfg.plugins_registry_dir.join("example.com_sriov_a.sock");
    assert_eq!(h.socket(), sock);
    eventually("plugin socket in plugins_registry", || sock.exists()).await;

    let channel = connect_unix(&sock).await.unwrap();
    let mut watcher = reg::registration_client::RegistrationClient::new(channel.clone());
    let info = watcher
        .get_info(reg::InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.r#type, "DevicePlugin");
    assert_eq!(info.name, RESOURCE);
    assert_eq!(info.endpoint, sock.to_string_lossy());
    assert_eq!(info.supported_versions, vec!["v1alpha1", "v1beta1"]);

    // Kubelet then dials the endpoint for the device plugin API.
    let mut dp_client = dp::device_plugin_client::DevicePluginClient::new(channel);
    let mut stream = dp_client
        .list_and_watch(dp::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().devices.len(), 2);

    watcher
        .notify_registration_status(reg::RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        })
        .await
        .unwrap();
    let mut rx = h.registrations.clone();
    rx.wait_for(|n| *n == 1).await.unwrap();
    // No kubelet.sock registration in this mode.
    assert!(kubelet.registrations().is_empty());

    // A refusal makes the plugin re-create its socket for the watcher.
    let created = DirEvents::new(&h.cfg.plugins_registry_dir);
    watcher
        .notify_registration_status(reg::RegistrationStatus {
            plugin_registered: false,
            error: "bad version".into(),
        })
        .await
        .unwrap();
    eventually("socket re-created", || {
        created.saw_created("example.com_sriov_a.sock")
    })
    .await;
    let mut again = plugin_client(&sock).await;
    again.get_device_plugin_options(dp::Empty {}).await.unwrap();
    h.stop().await;
}

#[tokio::test]
async fn plugin_watcher_socket_deleted_under_us_is_recreated() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::PluginWatcher);
    std::fs::create_dir_all(&cfg.plugins_registry_dir).unwrap();
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    let sock = h.socket();
    eventually("plugin socket", || sock.exists()).await;
    let created = DirEvents::new(&h.cfg.plugins_registry_dir);
    std::fs::remove_file(&sock).unwrap();
    eventually("socket re-created", || {
        created.saw_created("example.com_sriov_a.sock")
    })
    .await;
    let channel = connect_unix(&sock).await.unwrap();
    let mut watcher = reg::registration_client::RegistrationClient::new(channel);
    let info = watcher
        .get_info(reg::InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.endpoint, sock.to_string_lossy());
    h.stop().await;
}

#[tokio::test]
async fn a_new_kubelet_sock_alone_triggers_reregistration() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    registered(&h, &kubelet, 1).await;

    // A kubelet that restarts without cleaning the directory still gets
    // a fresh registration: the new kubelet.sock is the signal.
    kubelet.stop_registration().await;
    kubelet.start_registration().unwrap();
    registered(&h, &kubelet, 2).await;
    assert!(h.socket().exists());
    h.stop().await;
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_a_wedged_kubelet() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path(), RegistrationMode::Kubelet);
    // Far longer than the test's patience: only cancellation ends the call.
    cfg.call_timeout = Duration::from_secs(3600);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    kubelet.hang_registrations(true);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    eventually("a Register call", || kubelet.register_calls() > 0).await;
    let sock = h.socket();
    tokio::time::timeout(Duration::from_secs(20), h.stop())
        .await
        .expect("plugin stopped while Register was pending");
    assert!(!sock.exists());
}
