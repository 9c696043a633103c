#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The forwarder chain end to end with the kernel-faithful fake sysfs, a
//! recording netlink fake and in-memory NSM peers.

mod each;
mod support;

use std::sync::Arc;
use std::time::Duration;

use sriov_api::nsm::connection::ConnectionEventType;
use sriov_api::nsm::connectioncontext::{ConnectionContext, EthernetContext};
use sriov_chain::params::{self, MECH_KERNEL, MECH_NOOP, MECH_VFIO};
use sriov_netlink::testing::{Call, RecordingOps};
use sriov_token_pool::TokenState;
use support::*;
use tonic::Code;

/// A KERNEL refresh of `conn`: the client sends back the connection it got.
fn kernel_refresh(
    token: &str,
    conn: sriov_api::nsm::connection::Connection,
) -> sriov_api::nsm::networkservice::NetworkServiceRequest {
    let mut r = req(&conn.id, MECH_KERNEL, &kernel_params(token));
    r.connection = Some(conn);
    r
}

#[test]
fn architecture_lists_the_composed_chain() {
    let h = Harness::new(Arc::new(RecordingOps::default()));
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../ARCHITECTURE.md"
    ))
    .unwrap();
    let listed: Vec<&str> = doc
        .lines()
        .find_map(|l| l.strip_prefix("<!-- chain: "))
        .and_then(|l| l.strip_suffix(" -->"))
        .expect("ARCHITECTURE.md has a `<!-- chain: ... -->` line")
        .split_whitespace()
        .collect();
    assert_eq!(listed, h.chain.names(), "ARCHITECTURE.md's chain drifted");
}

#[tokio::test]
async fn kernel_request_moves_the_vf_with_its_context_and_close_returns_it() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    *h.next_hop.context.lock().unwrap() = Some(ip_context());
    let token = h.allocate(1).remove(0);
    let conn = h
        .request(req("c1", MECH_KERNEL, &kernel_params(&token)))
        .await
        .unwrap();

    // The client sees its own ID and path index back, our segment appended.
    assert_eq!(conn.id, "c1-mgr");
    let path = conn.path.as_ref().unwrap();
    assert_eq!(path.index, 1);
    assert_eq!(path.path_segments[2].name, "forwarder-1");
    let mech = conn.mechanism.as_ref().unwrap();
    assert_eq!(mech.r#type, MECH_KERNEL);
    assert_eq!(mech.parameters[params::PCI_ADDRESS], "0000:3b:02.0");

    // The next hop was offered NOOP.
    let onward = h.next_hop.requests.lock().unwrap()[0].clone();
    let offered: Vec<(String, String)> = onward
        .mechanism_preferences
        .iter()
        .map(|m| (m.cls.clone(), m.r#type.clone()))
        .collect();
    assert_eq!(
        offered,
        [
            ("LOCAL".to_string(), MECH_NOOP.to_string()),
            ("REMOTE".to_string(), MECH_NOOP.to_string())
        ]
    );
    assert_eq!(
        onward.connection.unwrap().network_service_endpoint_name,
        "nse-1"
    );

    let moves: Vec<_> = ops
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::MoveInto(l) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(moves.len(), 1);
    let m = &moves[0];
    assert_eq!(m.link.to_string(), "enp59s2", "the VF's netdev from sysfs");
    assert_eq!(m.name.as_ref().unwrap().as_str(), "nsm-1");
    assert_eq!(m.mtu, Some(1450));
    assert_eq!(
        m.addresses
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
        ["172.16.1.2/30"]
    );
    // The connected 172.16.1.0/30 route is the kernel's own; only the gateway route is added.
    assert_eq!(m.routes.len(), 1);
    assert_eq!(m.routes[0].destination.to_string(), "10.60.0.0/16");
    assert_eq!(m.routes[0].gateway.unwrap().to_string(), "172.16.1.1");
    assert_eq!(h.in_use(), 1);

    h.close(conn).await.unwrap();
    assert!(ops.calls().iter().any(|c| matches!(c, Call::BackOut(_))));
    assert_eq!(h.in_use(), 0);
    assert_eq!(h.next_hop.closes.lock().unwrap().len(), 1);
    let t = h
        .pool
        .tokens()
        .unwrap()
        .into_iter()
        .find(|t| t.id == token)
        .unwrap();
    assert_eq!(
        t.state,
        TokenState::Allocated,
        "the pod still holds its token"
    );
    // Close again is harmless.
    h.close(h.monitor.connections().first().cloned().unwrap_or_default())
        .await
        .unwrap();
}

/// A KERNEL Close takes the client's interface down and closes the next hop side by side: the
/// next hop's Close begins while the interface is still being taken down (held here), and the
/// answer waits for both.
#[tokio::test]
async fn a_close_takes_the_interface_down_beside_the_next_hops_close() {
    let ops = RecordingOps::new();
    let (h, _, conn) = kernel_connection(&ops).await;
    let gate = ops.hold_disable();
    let close = h.close_answered(conn);
    tokio::pin!(close);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.next_hop.closes.lock().unwrap().is_empty() {
        tokio::select! {
            r = &mut close => panic!("answered while the interface was held: {r:?}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the next hop's Close waited for the interface to go down"
        );
    }
    assert!(
        ops.calls().iter().any(|c| matches!(c, Call::Disable(..))),
        "the interface is being taken down"
    );
    let early = tokio::time::timeout(Duration::from_millis(50), &mut close).await;
    assert!(
        early.is_err(),
        "the answer waits for the interface: {early:?}"
    );
    gate.add_permits(1);
    close.await.unwrap();
    h.returns.settled().await;
    assert_eq!(h.in_use(), 0);
}

/// Without the netlink thread (`own_thread.rs` checks it with), the move home would hold the
/// worker that answers: it waits for the answer.
#[tokio::test]
async fn a_close_leaves_the_move_home_for_after_its_answer() {
    let ops = RecordingOps::new();
    let (h, _, conn) = kernel_connection(&ops).await;
    // Time the background could use, as in `own_thread.rs`: the move home does not.
    *h.next_hop.delay.lock().unwrap() = Duration::from_millis(500);
    h.close_answered(conn).await.unwrap();
    // A current-thread runtime: nothing in the background ran since the answer.
    let calls = ops.calls();
    assert!(calls.iter().any(|c| matches!(c, Call::Disable(..))));
    assert!(
        !calls.iter().any(|c| matches!(c, Call::BackOut(_))),
        "{calls:?}"
    );
    h.returns.settled().await;
    assert!(ops.calls().iter().any(|c| matches!(c, Call::BackOut(_))));
    assert_eq!(h.in_use(), 0);
}

#[tokio::test]
async fn vfio_request_reports_device_numbers_and_grants_then_revokes_the_cgroup() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    let token = h.allocate(1).remove(0);
    let p = [
        (params::TOKEN_ID, token.clone()),
        (params::CGROUP_DIR, CGROUP.to_string()),
    ];
    let conn = h.request(req("v1", MECH_VFIO, &p)).await.unwrap();
    let m = conn.mechanism.clone().unwrap();
    let vf = m.parameters[params::PCI_ADDRESS].clone();
    assert_eq!(
        h.sysfs().driver(vf.parse().unwrap()).unwrap().as_deref(),
        Some("vfio-pci")
    );
    let group = h
        .sysfs()
        .iommu_group(vf.parse().unwrap())
        .unwrap()
        .unwrap()
        .to_string();
    assert_eq!(m.parameters[params::IOMMU_GROUP], group);
    assert_eq!(
        (
            m.parameters[params::VFIO_MAJOR].as_str(),
            m.parameters[params::VFIO_MINOR].as_str()
        ),
        ("10", "196")
    );
    assert_eq!(m.parameters[params::DEVICE_MAJOR], "243");
    assert_eq!(m.parameters[params::DEVICE_MINOR], group);
    let mut granted = h.rules();
    granted.sort();
    assert_eq!(
        granted,
        [
            "devices.allow: c 10:196 rw".to_string(),
            format!("devices.allow: c 243:{group} rw")
        ]
    );

    h.close(conn).await.unwrap();
    let mut denied: Vec<String> = h
        .rules()
        .into_iter()
        .filter(|r| r.starts_with("devices.deny"))
        .collect();
    denied.sort();
    assert_eq!(
        denied,
        [
            "devices.deny: c 10:196 rw".to_string(),
            format!("devices.deny: c 243:{group} rw")
        ]
    );
    assert_eq!(
        h.sysfs().driver(vf.parse().unwrap()).unwrap().as_deref(),
        Some("iavf"),
        "driver restored"
    );
    assert_eq!(h.in_use(), 0);
    assert!(
        ops.calls().is_empty(),
        "no netlink for a VFIO request without MAC/VLAN"
    );
}

#[tokio::test]
async fn cgroup_v2_is_refused_with_the_alternative_named_and_nothing_left_behind() {
    let h = Harness::with(
        Arc::new(RecordingOps::new()),
        Options {
            cgroup_v2: true,
            ..Default::default()
        },
    );
    let token = h.allocate(1).remove(0);
    let p = [
        (params::TOKEN_ID, token),
        (params::CGROUP_DIR, CGROUP.to_string()),
    ];
    let err = h.request(req("v2", MECH_VFIO, &p)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("Allocate"), "{}", err.message());
    assert_eq!(h.in_use(), 0);
    assert_eq!(
        h.sysfs()
            .driver("0000:3b:02.0".parse().unwrap())
            .unwrap()
            .as_deref(),
        Some("iavf")
    );
}

#[tokio::test]
async fn cgroup_v2_request_gets_the_vf_bound_at_allocate_and_writes_no_rule() {
    let h = Harness::with(
        Arc::new(RecordingOps::new()),
        Options {
            cgroup_v2: true,
            vfio_at_allocate: true,
            ..Default::default()
        },
    );
    let (ids, resp) = h.allocate_bound(2);
    let second = h.pool.binding(&ids[1]).unwrap().unwrap().vf;
    let group = h.sysfs().iommu_group(second).unwrap().unwrap();
    let paths: Vec<&str> = resp[0]
        .devices
        .iter()
        .map(|d| d.host_path.as_str())
        .collect();
    assert!(
        paths.contains(&format!("/dev/vfio/{group}").as_str()),
        "{paths:?}"
    );
    let p = [
        (params::TOKEN_ID, ids[1].clone()),
        (params::CGROUP_DIR, CGROUP.to_string()),
    ];
    let conn = h.request(req("v2b", MECH_VFIO, &p)).await.unwrap();
    let m = conn.mechanism.clone().unwrap();
    assert_eq!(m.parameters[params::PCI_ADDRESS], second.to_string());
    assert_eq!(m.parameters[params::IOMMU_GROUP], group.to_string());
    assert_eq!(m.parameters[params::DEVICE_MINOR], group.to_string());
    assert!(!m.parameters.contains_key(params::VFIO_NOIOMMU));
    assert!(
        h.rules().is_empty(),
        "nothing written to any cgroup: {:?}",
        h.rules()
    );

    h.close(conn).await.unwrap();
    assert_eq!(
        h.sysfs().driver(second).unwrap().as_deref(),
        Some("vfio-pci"),
        "the VF stays on vfio-pci while the pod holds its token"
    );
    assert_eq!(h.in_use(), 0);
}

#[tokio::test]
async fn cgroup_v2_token_not_bound_at_allocate_is_refused_precisely() {
    let h = Harness::with(
        Arc::new(RecordingOps::new()),
        Options {
            cgroup_v2: true,
            vfio_at_allocate: true,
            ..Default::default()
        },
    );
    let token = h.allocate(1).remove(0);
    let p = [
        (params::TOKEN_ID, token),
        (params::CGROUP_DIR, CGROUP.to_string()),
    ];
    let err = h.request(req("v2u", MECH_VFIO, &p)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(
        err.message()
            .contains("was not bound to a VF at kubelet's Allocate")
            && err.message().contains("this node runs cgroup v2"),
        "{}",
        err.message()
    );
    assert_eq!(h.in_use(), 0);
    assert!(h.rules().is_empty());
}

#[tokio::test]
async fn hostile_parameters_are_invalid_arguments_and_touch_nothing() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    let token = h.allocate(1).remove(0);
    let writes_before = h.fake.kernel().writes().len();
    let cases: Vec<Vec<(&'static str, String)>> = vec![
        vec![
            (params::TOKEN_ID, token.clone()),
            (params::INODE_URL, "http://evil".into()),
        ],
        vec![
            (params::TOKEN_ID, token.clone()),
            (params::INODE_URL, "inode://4/1".into()),
            (params::NAME, "x".repeat(16)),
        ],
        vec![
            (params::TOKEN_ID, token.clone()),
            (params::INODE_URL, "inode://4/1".into()),
            (params::NAME, "a/b".into()),
        ],
        vec![
            (params::TOKEN_ID, token.clone()),
            (params::INODE_URL, "inode://4/1".into()),
            (params::MTU, "99999".into()),
        ],
        vec![(params::INODE_URL, "inode://4/1".into())],
    ];
    for (i, p) in cases.iter().enumerate() {
        let err = h
            .request(req(&format!("bad{i}"), MECH_KERNEL, p))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "case {i}: {err}");
    }
    for dir in ["../../../etc", "/sys/fs/cgroup", "a\0b"] {
        let p = [
            (params::TOKEN_ID, token.clone()),
            (params::CGROUP_DIR, dir.to_string()),
        ];
        let err = h.request(req("badv", MECH_VFIO, &p)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{dir}: {err}");
    }
    let err = h.request(req("m", "MEMIF", &[])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(h.in_use(), 0);
    assert_eq!(
        h.fake.kernel().writes().len(),
        writes_before,
        "no sysfs writes"
    );
    assert!(ops.calls().is_empty(), "no netlink calls");
    assert!(
        h.next_hop.requests.lock().unwrap().is_empty(),
        "nothing reached the next hop"
    );
}

#[tokio::test]
async fn unknown_and_unallocated_tokens_are_refused() {
    let h = Harness::new(Arc::new(RecordingOps::new()));
    let err = h
        .request(req("u", MECH_KERNEL, &kernel_params("sriov-nope")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let free = h.pool.tokens().unwrap()[0].id.clone();
    let err = h
        .request(req("u2", MECH_KERNEL, &kernel_params(&free)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
}

#[tokio::test]
async fn a_failure_at_each_later_element_leaves_nothing_behind() {
    // inject fails; VF config fails; the next hop fails.
    for failing in ["move_into", "set_vf", "next-hop"] {
        let ops = RecordingOps::new();
        let h = Harness::new(Arc::new(ops.clone()));
        let token = h.allocate(1).remove(0);
        match failing {
            "next-hop" => h.next_hop.failing.lock().unwrap().push("nse-1".into()),
            op => ops.fail(op),
        }
        let mut r = req("f", MECH_KERNEL, &kernel_params(&token));
        r.connection.as_mut().unwrap().context = Some(ConnectionContext {
            ethernet_context: Some(EthernetContext {
                src_mac: "02:00:00:00:00:01".into(),
                vlan_tag: 100,
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = h.request(r).await.unwrap_err();
        assert_ne!(err.code(), Code::Ok, "{failing}");
        assert_eq!(h.in_use(), 0, "{failing}: VF returned to the pool");
        assert_eq!(
            h.sysfs()
                .driver("0000:3b:02.0".parse().unwrap())
                .unwrap()
                .as_deref(),
            Some("iavf")
        );
        let calls = ops.calls();
        let moved = calls
            .iter()
            .filter(|c| matches!(c, Call::MoveInto(_)))
            .count();
        let backed = calls
            .iter()
            .filter(|c| matches!(c, Call::BackOut(_)))
            .count();
        assert!(
            moved == 0 || failing == "move_into" || backed == moved,
            "{failing}: {calls:?}"
        );
        let set = calls
            .iter()
            .filter(|c| matches!(c, Call::SetVf { .. }))
            .count();
        let restored = calls
            .iter()
            .filter(|c| matches!(c, Call::RestoreVf(_)))
            .count();
        assert!(
            failing == "set_vf" || set == restored,
            "{failing}: {calls:?}"
        );
        if failing != "next-hop" {
            assert_eq!(
                h.next_hop.closes.lock().unwrap().len(),
                1,
                "{failing}: next hop closed"
            );
        }
        assert!(h.monitor.connections().is_empty());
    }
}

#[tokio::test]
async fn mac_and_vlan_from_the_ethernet_context_are_set_through_the_pf_and_restored() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    let token = h.allocate(2).remove(1);
    h.pool
        .use_token(
            &h.pool.allocated(NAME).unwrap()[0],
            sriov_token_pool::DriverKind::Kernel,
            "other",
            u64::MAX,
        )
        .ok();
    let mut r = req("e", MECH_KERNEL, &kernel_params(&token));
    r.connection.as_mut().unwrap().context = Some(ConnectionContext {
        ethernet_context: Some(EthernetContext {
            src_mac: "02:00:00:00:00:01".into(),
            vlan_tag: 100,
            ..Default::default()
        }),
        ..Default::default()
    });
    let conn = h.request(r).await.unwrap();
    let calls = ops.calls();
    let (pf, vf, cfg) = calls
        .iter()
        .find_map(|c| match c {
            Call::SetVf { pf, vf, config } => Some((pf.clone(), *vf, config.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(pf.to_string(), "ens785f0");
    let pci = conn.mechanism.as_ref().unwrap().parameters[params::PCI_ADDRESS].clone();
    let index = h
        .sysfs()
        .vfs(PF.parse().unwrap())
        .unwrap()
        .into_iter()
        .find(|v| v.address.to_string() == pci)
        .unwrap()
        .index;
    assert_eq!(vf, index, "the VF index of the leased VF");
    assert_eq!(cfg.vlan.unwrap().id, 100);
    assert_eq!(cfg.mac.unwrap().to_string(), "02:00:00:00:00:01");
    h.close(conn).await.unwrap();
    assert!(ops.calls().iter().any(|c| matches!(c, Call::RestoreVf(_))));
}

#[tokio::test]
async fn refresh_keeps_the_same_vf_and_moves_nothing_again() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    let token = h.allocate(1).remove(0);
    let first = h
        .request(req("r", MECH_KERNEL, &kernel_params(&token)))
        .await
        .unwrap();
    let again = kernel_refresh(&token, first.clone());
    let second = h.request(again).await.unwrap();
    assert_eq!(
        first.mechanism.unwrap().parameters[params::PCI_ADDRESS],
        second.mechanism.unwrap().parameters[params::PCI_ADDRESS]
    );
    assert_eq!(
        ops.calls()
            .iter()
            .filter(|c| matches!(c, Call::MoveInto(_)))
            .count(),
        1
    );
    assert_eq!(h.in_use(), 1);
}

#[tokio::test]
async fn a_refresh_changing_the_mechanism_closes_the_old_one_first() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    let token = h.allocate(1).remove(0);
    let first = h
        .request(req("x", MECH_KERNEL, &kernel_params(&token)))
        .await
        .unwrap();
    let p = [
        (params::TOKEN_ID, token.clone()),
        (params::CGROUP_DIR, CGROUP.to_string()),
    ];
    let mut change = req("x", MECH_VFIO, &p);
    let mut c = first.clone();
    c.mechanism = None;
    change.connection = Some(c);
    let second = h.request(change).await.unwrap();
    assert_eq!(second.mechanism.as_ref().unwrap().r#type, MECH_VFIO);
    assert!(
        ops.calls().iter().any(|c| matches!(c, Call::BackOut(_))),
        "kernel interface taken back"
    );
    let vf = second.mechanism.unwrap().parameters[params::PCI_ADDRESS].clone();
    assert_eq!(
        h.sysfs().driver(vf.parse().unwrap()).unwrap().as_deref(),
        Some("vfio-pci")
    );
    assert_eq!(h.in_use(), 1);
}

#[tokio::test]
async fn a_failing_endpoint_is_skipped_for_the_next_one() {
    let h = Harness::with(
        Arc::new(RecordingOps::new()),
        Options {
            endpoints: vec!["nse-a", "nse-b"],
            ..Default::default()
        },
    );
    h.next_hop.failing.lock().unwrap().push("nse-a".into());
    let tokens = h.allocate(2);
    let c1 = h
        .request(req("a", MECH_KERNEL, &kernel_params(&tokens[0])))
        .await
        .unwrap();
    let c2 = h
        .request(req("b", MECH_KERNEL, &kernel_params(&tokens[1])))
        .await
        .unwrap();
    assert_eq!(c1.network_service_endpoint_name, "nse-b");
    assert_eq!(c2.network_service_endpoint_name, "nse-b");
    assert_eq!(h.in_use(), 2);
}

#[tokio::test]
async fn no_endpoint_is_not_found_and_takes_no_vf() {
    let h = Harness::with(
        Arc::new(RecordingOps::new()),
        Options {
            endpoints: vec![],
            ..Default::default()
        },
    );
    let token = h.allocate(1).remove(0);
    let err = h
        .request(req("n", MECH_KERNEL, &kernel_params(&token)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(h.in_use(), 0);
}

#[tokio::test]
async fn two_connections_racing_for_one_token_get_one_vf() {
    let h = Arc::new(Harness::new(Arc::new(RecordingOps::new())));
    let token = h.allocate(1).remove(0);
    let (a, b) = tokio::join!(
        h.request(req("ra", MECH_KERNEL, &kernel_params(&token))),
        h.request(req("rb", MECH_KERNEL, &kernel_params(&token)))
    );
    assert!(a.is_ok() ^ b.is_ok(), "{a:?} {b:?}");
    let err = a.err().or(b.err()).unwrap();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(h.in_use(), 1);
}

#[tokio::test]
async fn a_connection_nobody_refreshes_expires_and_is_closed() {
    let ops = RecordingOps::new();
    let h = Harness::with(
        Arc::new(ops.clone()),
        Options {
            lifetime: Duration::from_millis(300),
            ..Default::default()
        },
    );
    let token = h.allocate(1).remove(0);
    h.request(req("t", MECH_KERNEL, &kernel_params(&token)))
        .await
        .unwrap();
    assert_eq!(h.in_use(), 1);
    for _ in 0..200 {
        if h.in_use() == 0 && h.monitor.connections().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(h.in_use(), 0, "expired connection closed");
    assert!(ops.calls().iter().any(|c| matches!(c, Call::BackOut(_))));
    assert!(h.monitor.connections().is_empty());
}

#[tokio::test]
async fn monitor_streams_initial_state_updates_and_deletes() {
    let h = Harness::new(Arc::new(RecordingOps::new()));
    let token = h.allocate(1).remove(0);
    let conn = h
        .request(req("m", MECH_KERNEL, &kernel_params(&token)))
        .await
        .unwrap();
    let (initial, mut rx) = h.monitor.subscribe(&Default::default());
    assert_eq!(
        initial.r#type,
        ConnectionEventType::InitialStateTransfer as i32
    );
    assert_eq!(initial.connections.len(), 1);
    h.close(conn).await.unwrap();
    let ev = rx.recv().await.unwrap();
    assert_eq!(ev.r#type, ConnectionEventType::Delete as i32);
}

#[tokio::test]
async fn noop_requests_pass_through_without_touching_a_vf() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    let conn = h.request(req("noop", MECH_NOOP, &[])).await.unwrap();
    assert_eq!(conn.mechanism.unwrap().r#type, MECH_NOOP);
    assert_eq!(h.in_use(), 0);
    assert!(ops.calls().is_empty());
}

#[tokio::test]
async fn after_a_restart_the_first_refresh_adopts_the_moved_vf_and_close_brings_it_back() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    let token = h.allocate(1).remove(0);
    let first = h
        .request(req("heal", MECH_KERNEL, &kernel_params(&token)))
        .await
        .unwrap();
    let vf: sriov_pci::PciAddress = first.mechanism.as_ref().unwrap().parameters
        [params::PCI_ADDRESS]
        .parse()
        .unwrap();
    // The netdev is in the client's namespace: our sysfs no longer lists it.
    std::fs::remove_dir_all(h.sysfs().device_dir(vf).join("net")).unwrap();

    // kill -9 and start again; NSM heals by refreshing the connection.
    let ops2 = RecordingOps::new();
    let h = h.restart(Arc::new(ops2.clone()));
    assert_eq!(h.in_use(), 1, "the pool kept the use across the restart");
    let again = kernel_refresh(&token, first.clone());
    let healed = h.request(again).await.unwrap();
    assert_eq!(
        healed.mechanism.as_ref().unwrap().parameters[params::PCI_ADDRESS],
        vf.to_string()
    );
    assert!(
        !ops2.calls().iter().any(|c| matches!(c, Call::MoveInto(_))),
        "adopted, not moved again: {:?}",
        ops2.calls()
    );
    h.close(healed).await.unwrap();
    let backs: Vec<_> = ops2
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::BackOut(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(backs.len(), 1);
    assert_eq!(
        backs[0].client_name, "nsm-1",
        "the record from before the restart"
    );
    assert_eq!(h.in_use(), 0);
}

/// A refresh that must take the interface back to re-plumb it, and cannot, leaves it with
/// the connection: its Close tries again, and the VF is not freed while the netdev is away.
#[tokio::test]
async fn a_refresh_that_cannot_take_the_interface_back_leaves_it_to_the_close() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    *h.next_hop.context.lock().unwrap() = Some(ip_context());
    let token = h.allocate(1).remove(0);
    let mut conn = h
        .request(req("rb", MECH_KERNEL, &kernel_params(&token)))
        .await
        .unwrap();
    if let Some(ip) = conn.context.as_mut().and_then(|c| c.ip_context.as_mut()) {
        ip.src_ip_addrs = vec!["172.16.9.2/30".into()];
    }
    ops.fail("back_out");
    h.request(kernel_refresh(&token, conn.clone()))
        .await
        .unwrap_err();
    let backs = |c: &Call| matches!(c, Call::BackOut(_));
    assert_eq!(count(&ops, backs), 1);
    h.close(conn).await.unwrap();
    assert_eq!(
        count(&ops, backs),
        2,
        "the Close tried again: {:?}",
        ops.calls()
    );
    assert_eq!(h.in_use(), 1, "not freed with its netdev still away");
}

#[tokio::test]
async fn a_refresh_with_a_new_address_replumbs_and_an_unchanged_one_does_not() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    *h.next_hop.context.lock().unwrap() = Some(ip_context());
    let token = h.allocate(1).remove(0);
    let first = h
        .request(req("rp", MECH_KERNEL, &kernel_params(&token)))
        .await
        .unwrap();

    // Same context again: nothing moves.
    let same = kernel_refresh(&token, first.clone());
    let second = h.request(same).await.unwrap();
    let moves = |ops: &RecordingOps| count(ops, |c| matches!(c, Call::MoveInto(_)));
    assert_eq!(moves(&ops), 1);

    // The endpoint hands out another address: the interface is re-plumbed.
    let mut changed = second.clone();
    if let Some(ip) = changed.context.as_mut().and_then(|c| c.ip_context.as_mut()) {
        ip.src_ip_addrs = vec!["172.16.9.2/30".into()];
    }
    let refresh = kernel_refresh(&token, changed);
    h.request(refresh).await.unwrap();
    let calls = ops.calls();
    assert_eq!(moves(&ops), 2, "{calls:?}");
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::BackOut(_)))
            .count(),
        1
    );
    let Some(Call::MoveInto(last)) = calls.iter().rev().find(|c| matches!(c, Call::MoveInto(_)))
    else {
        unreachable!()
    };
    assert_eq!(
        last.addresses
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
        ["172.16.9.2/30"]
    );
    assert_eq!(h.in_use(), 1, "same VF, same lease");
}

#[tokio::test]
async fn after_a_restart_a_close_restores_vf_settings_revokes_device_rules_and_rebinds() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    let token = h.allocate(1).remove(0);
    let p = [
        (params::TOKEN_ID, token.clone()),
        (params::CGROUP_DIR, CGROUP.to_string()),
    ];
    let mut r = req("v-restart", MECH_VFIO, &p);
    r.connection.as_mut().unwrap().context = Some(ConnectionContext {
        ethernet_context: Some(EthernetContext {
            src_mac: "02:00:00:00:00:07".into(),
            vlan_tag: 7,
            ..Default::default()
        }),
        ..Default::default()
    });
    let conn = h.request(r).await.unwrap();
    let vf: sriov_pci::PciAddress = conn.mechanism.as_ref().unwrap().parameters
        [params::PCI_ADDRESS]
        .parse()
        .unwrap();
    assert!(ops.calls().iter().any(|c| matches!(c, Call::SetVf { .. })));
    assert_eq!(h.rules().len(), 2, "{:?}", h.rules());

    // kill -9 and start again; the client closes.
    let ops2 = RecordingOps::new();
    let h = h.restart(Arc::new(ops2.clone()));
    h.close(conn).await.unwrap();
    let restored: Vec<_> = ops2
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::RestoreVf(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(restored.len(), 1, "{:?}", ops2.calls());
    let mut denied = h.rules();
    denied.sort();
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(
        denied
            .iter()
            .all(|r| r.starts_with("devices.deny: c ") && r.ends_with(" rw"))
    );
    assert!(denied.iter().any(|r| r == "devices.deny: c 10:196 rw"));
    assert_eq!(
        h.sysfs().driver(vf).unwrap().as_deref(),
        Some("iavf"),
        "back on its kernel driver"
    );
    assert_eq!(h.in_use(), 0);
}

/// A client that gives up mid-Request (a deadline, a dropped connection) must not leave the
/// chain cut at an await between two host changes: the server finishes the call, so the
/// connection is fully established (monitored, timed, closable) or fully undone.
#[tokio::test]
async fn a_request_or_close_the_client_cancels_still_runs_to_completion() {
    use sriov_api::nsm::networkservice::network_service_server::NetworkService;
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    let token = h.allocate(1).remove(0);
    *h.next_hop.delay.lock().unwrap() = Duration::from_millis(300);
    let server = sriov_chain::server::NetworkServiceServer::new(h.chain.clone());

    let call = server.request(tonic::Request::new(req(
        "cancelled",
        MECH_KERNEL,
        &kernel_params(&token),
    )));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), call)
            .await
            .is_err(),
        "the client gave up before the next hop answered"
    );
    // The VF was leased and bound before the next hop; the rest still happens.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let established = h.monitor.connections();
    assert_eq!(established.len(), 1, "established after all");
    assert!(ops.calls().iter().any(|c| matches!(c, Call::MoveInto(_))));
    assert_eq!(h.in_use(), 1);

    // The client's retry finds it; then a Close it cancels still undoes everything.
    let conn = server
        .request(tonic::Request::new(kernel_refresh(
            &token,
            established[0].clone(),
        )))
        .await
        .unwrap()
        .into_inner();
    let call = server.close(tonic::Request::new(conn));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), call)
            .await
            .is_err()
    );
    // The VF is freed last, after the move home the Close left for after its answer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.in_use() != 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ops.calls().iter().any(|c| matches!(c, Call::BackOut(_))));
    assert_eq!(h.in_use(), 0);
    assert!(h.monitor.connections().is_empty());
}
