//! Each element alone, before a [`Probe`] standing in for the rest of the
//! chain: what it does on Request, what it undoes on Close, and what it
//! leaves behind (nothing) when the rest fails. Elements that read records
//! of earlier ones run after the real ones, on the [`Node`] fakes.

use std::sync::Arc;
use std::time::Duration;

use sriov_api::nsm::connection::{Connection, ConnectionEventType};
use sriov_api::nsm::connectioncontext::{ConnectionContext, EthernetContext};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_chain::contract::ContractError;
use sriov_chain::elements::{
    authorize::Authorize,
    begin::Begin,
    connect::Connect,
    discover::Discover,
    inject::Inject,
    ipcontext::IpContext,
    limits::{Limits, MAX_NAME_BYTES},
    mechanisms::{Mechanisms, Selected},
    monitor::Monitor,
    resetmechanism::ResetMechanism,
    roundrobin::RoundRobin,
    timeout::{ChainHandle, Timeout},
    updatepath::{KnownConnections, UpdatePath},
    validate::Validate,
    vfconfig::VfConfigElement,
};
use sriov_chain::params::{self, KernelParams, MECH_KERNEL, MECH_NOOP, MECH_VFIO};
use sriov_chain::reclaim::Reclaim;
use sriov_chain::records::{Candidates, IpPlan, Token, UndoLog, VfBinding};
use sriov_chain::undo::UndoRecord;
use sriov_chain::{Chain, Ctx};
use sriov_netlink::testing::{Call, RecordingOps};
use sriov_token_pool::DriverKind;
use tonic::Code;

use crate::support::*;

const LIFETIME: Duration = Duration::from_secs(600);

/// A Request as a mechanism's sub-chain sees it: the client's preference
/// is the connection's mechanism.
fn chosen(mechanism: &str, p: &[(&str, &str)]) -> NetworkServiceRequest {
    let mut r = request("c1", mechanism, p);
    let m = r.mechanism_preferences.first().cloned();
    if let Some(c) = r.connection.as_mut() {
        c.mechanism = m;
    }
    r
}

fn kernel(token: &str) -> NetworkServiceRequest {
    chosen(
        MECH_KERNEL,
        &[
            (params::TOKEN_ID, token),
            (params::INODE_URL, "inode://4/4026532999"),
            (params::NAME, "nsm-1"),
        ],
    )
}

fn vfio(token: &str) -> NetworkServiceRequest {
    chosen(
        MECH_VFIO,
        &[(params::TOKEN_ID, token), (params::CGROUP_DIR, CGROUP)],
    )
}

fn checked(chain: Chain) -> Chain {
    chain.check().unwrap();
    chain
}

fn connection(r: &NetworkServiceRequest) -> Connection {
    r.connection.clone().unwrap()
}

#[tokio::test]
async fn an_element_before_what_it_reads_fails_the_check_not_a_request() {
    let node = Node::new();
    let e = Chain::new()
        .with(node.bindvf(DriverKind::Kernel, LIFETIME))
        .with(Validate::Kernel)
        .check()
        .unwrap_err();
    let want = ContractError {
        element: "bindvf",
        missing: "Token",
    };
    assert_eq!(e, want);
    assert_eq!(
        e.to_string(),
        "chain element `bindvf` reads Token, which no element before it provides"
    );
    let e = Chain::new()
        .with(RoundRobin::new())
        .with(Discover::new(node.registry.clone()))
        .check()
        .unwrap_err();
    assert_eq!((e.element, e.missing), ("roundrobin", "Candidates"));
    // A sub-chain is checked where it runs...
    let vfio_only = Chain::new().with(Validate::Vfio).with(node.vfio());
    let e = Chain::new()
        .with(Mechanisms::new().with(MECH_VFIO, vfio_only))
        .check()
        .unwrap_err();
    assert_eq!((e.element, e.missing), ("vfio", "VfBinding"));
    // ...and after the fork only what every mechanism provides is there.
    let with_vf = Chain::new()
        .with(Validate::Kernel)
        .with(node.bindvf(DriverKind::Kernel, LIFETIME));
    let forked = Mechanisms::new()
        .with(MECH_KERNEL, with_vf)
        .with(MECH_NOOP, Chain::new());
    let e = Chain::new()
        .with(forked)
        .with(Probe::<(VfBinding,)>::new())
        .check()
        .unwrap_err();
    assert_eq!((e.element, e.missing), ("probe", "VfBinding"));
    // A chain nobody checked still refuses, without panicking.
    let e = Chain::new()
        .with(node.vfio())
        .request(&mut Ctx::new(), vfio("t"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(e.message().contains("not checked"), "{}", e.message());
}

#[tokio::test]
async fn limits_refuses_oversized_input_before_the_rest_runs() {
    let probe = Probe::<()>::new();
    let chain = checked(Chain::new().with(Limits).with(probe.clone()));
    let ok = request("c1", MECH_KERNEL, &[]);
    chain.request(&mut Ctx::new(), ok.clone()).await.unwrap();
    let mut big = ok.clone();
    big.connection.as_mut().unwrap().id = "x".repeat(MAX_NAME_BYTES + 1);
    let e = chain.request(&mut Ctx::new(), big.clone()).await;
    assert_eq!(e.unwrap_err().code(), Code::InvalidArgument);
    let e = chain.close(&mut Ctx::new(), connection(&big)).await;
    assert_eq!(e.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!((probe.requests(), probe.closes().len()), (1, 0));
    chain.close(&mut Ctx::new(), connection(&ok)).await.unwrap();
    assert_eq!(probe.closes().len(), 1);
    probe.fail(true);
    let e = chain.request(&mut Ctx::new(), ok).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "the rest's error, as it was");
}

#[tokio::test]
async fn updatepath_gives_the_rest_our_segment_and_the_caller_its_own_view() {
    let probe = Probe::<()>::new();
    let up = UpdatePath::new("fwd", LIFETIME, Arc::new(Begin::new()));
    let chain = checked(Chain::new().with(up).with(probe.clone()));
    let conn = chain
        .request(&mut Ctx::new(), request("c1", MECH_KERNEL, &[]))
        .await
        .unwrap();
    let seen = connection(&probe.last().0);
    let path = seen.path.clone().unwrap();
    assert_eq!(path.index, 2);
    assert_eq!(path.path_segments[2].name, "fwd");
    assert_eq!(seen.id, path.path_segments[2].id, "the rest sees our id");
    assert_eq!(conn.id, "c1-mgr", "the caller sees its own");
    assert_eq!(conn.path.as_ref().unwrap().index, 1);
    chain.close(&mut Ctx::new(), conn.clone()).await.unwrap();
    assert_eq!(probe.closes()[0].id, seen.id);
    probe.fail(true);
    let r = request("c2", MECH_KERNEL, &[]);
    let e = chain.request(&mut Ctx::new(), r).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
}

#[tokio::test]
async fn begin_keeps_a_context_until_close_and_forgets_a_failed_first_request() {
    let begin = Arc::new(Begin::new());
    let probe = Probe::<()>::new();
    let chain = checked(Chain::new().with_arc(begin.clone()).with(probe.clone()));
    let r = request("c1", MECH_KERNEL, &[]);
    chain.request(&mut Ctx::new(), r.clone()).await.unwrap();
    chain.request(&mut Ctx::new(), r.clone()).await.unwrap();
    assert_eq!(probe.refreshes(), [false, true]);
    assert!(begin.is_known("c1-mgr"));
    chain.close(&mut Ctx::new(), connection(&r)).await.unwrap();
    assert_eq!(probe.closes().len(), 1);
    assert!(!begin.is_known("c1-mgr"));
    probe.fail(true);
    chain.request(&mut Ctx::new(), r.clone()).await.unwrap_err();
    assert!(
        !begin.is_known("c1-mgr"),
        "a failed first Request leaves nothing"
    );
}

#[tokio::test]
async fn authorize_refuses_another_clients_close_before_the_rest_runs() {
    let probe = Probe::<()>::new();
    let chain = checked(
        Chain::new()
            .with(Authorize::owner_only())
            .with(probe.clone()),
    );
    let mut ctx = Ctx::new();
    // A gRPC caller (plaintext): the server always says who calls.
    ctx.insert(sriov_chain::caller::Caller::default());
    let mine = request("c1", MECH_KERNEL, &[]);
    chain.request(&mut ctx, mine.clone()).await.unwrap();
    let theirs = connection(&request("c2", MECH_KERNEL, &[]));
    let e = chain.close(&mut ctx, theirs).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        probe.closes().is_empty(),
        "refused before anything was undone"
    );
    chain.close(&mut ctx, connection(&mine)).await.unwrap();
    assert_eq!(probe.closes().len(), 1);
    probe.fail(true);
    let e = chain.request(&mut Ctx::new(), mine).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
}

#[tokio::test(start_paused = true)]
async fn timeout_closes_an_unrefreshed_connection_and_close_disarms_it() {
    let handle = ChainHandle::default();
    let probe = Probe::<()>::new();
    let lifetime = Duration::from_secs(10);
    let chain = Arc::new(checked(
        Chain::new()
            .with(Timeout::new(lifetime, handle.clone()))
            .with(probe.clone()),
    ));
    handle.set(Arc::downgrade(&chain)).unwrap();
    let r = request("c1", MECH_KERNEL, &[]);
    let later = || tokio::time::sleep(lifetime * 2);

    // The timer lives in the connection's context, as `begin` keeps it.
    let mut unrefreshed = Ctx::new();
    chain.request(&mut unrefreshed, r.clone()).await.unwrap();
    later().await;
    assert_eq!(probe.closes().len(), 1, "expired and closed");

    let mut ctx = Ctx::new();
    let conn = chain.request(&mut ctx, r.clone()).await.unwrap();
    chain.close(&mut ctx, conn).await.unwrap();
    later().await;
    assert_eq!(probe.closes().len(), 2, "closed once, by the client");

    probe.fail(true);
    let mut failed = Ctx::new();
    chain.request(&mut failed, r).await.unwrap_err();
    later().await;
    assert_eq!(probe.closes().len(), 2, "a failed Request arms nothing");
}

#[tokio::test]
async fn monitor_publishes_what_is_established_and_deletes_it_on_close() {
    let monitor = Monitor::new();
    let probe = Probe::<()>::new();
    let chain = checked(Chain::new().with(monitor.clone()).with(probe.clone()));
    let (_, mut events) = monitor.subscribe(&Default::default());
    let conn = chain
        .request(&mut Ctx::new(), request("c1", MECH_KERNEL, &[]))
        .await
        .unwrap();
    assert_eq!(monitor.connections().len(), 1);
    let update = ConnectionEventType::Update as i32;
    assert_eq!(events.recv().await.unwrap().r#type, update);
    chain.close(&mut Ctx::new(), conn).await.unwrap();
    assert!(monitor.connections().is_empty());
    let delete = ConnectionEventType::Delete as i32;
    assert_eq!(events.recv().await.unwrap().r#type, delete);
    probe.fail(true);
    let r = request("c2", MECH_KERNEL, &[]);
    chain.request(&mut Ctx::new(), r).await.unwrap_err();
    assert!(monitor.connections().is_empty());
    assert!(events.try_recv().is_err(), "nothing published");
}

#[tokio::test]
async fn discover_leaves_the_candidates_for_the_elements_after_it() {
    let node = Node::with(&Options {
        endpoints: vec!["nse-a", "nse-b"],
        ..Default::default()
    });
    let probe = Probe::<(Candidates,)>::new();
    let find = Discover::new(node.registry.clone());
    let chain = checked(Chain::new().with(find).with(probe.clone()));
    let r = request("c1", MECH_KERNEL, &[]);
    chain.request(&mut Ctx::new(), r.clone()).await.unwrap();
    let (Candidates(found),) = probe.last().1;
    let names: Vec<_> = found.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["nse-a", "nse-b"]);
    let mut other = r.clone();
    other.connection.as_mut().unwrap().network_service = "other".into();
    let e = chain.request(&mut Ctx::new(), other).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(probe.requests(), 1);
    chain.close(&mut Ctx::new(), connection(&r)).await.unwrap();
    assert_eq!(probe.closes().len(), 1);
    probe.fail(true);
    let e = chain.request(&mut Ctx::new(), r).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
}

#[tokio::test]
async fn roundrobin_tries_the_next_candidate_when_the_rest_fails_with_one() {
    let node = Node::with(&Options {
        endpoints: vec!["nse-a", "nse-b"],
        ..Default::default()
    });
    node.next_hop.failing.lock().unwrap().push("nse-a".into());
    let chain = checked(
        Chain::new()
            .with(Discover::new(node.registry.clone()))
            .with(RoundRobin::new())
            .with(Connect::new(node.next_hop.clone())),
    );
    let mut ctx = Ctx::new();
    let r = request("c1", MECH_KERNEL, &[]);
    let conn = chain.request(&mut ctx, r.clone()).await.unwrap();
    assert_eq!(conn.network_service_endpoint_name, "nse-b");
    chain.request(&mut ctx, r.clone()).await.unwrap();
    let asked = node.next_hop.requests.lock().unwrap().clone();
    let last = connection(asked.last().unwrap());
    assert_eq!(
        last.network_service_endpoint_name, "nse-b",
        "a refresh sticks"
    );
    chain.close(&mut ctx, conn).await.unwrap();
    assert_eq!(node.next_hop.closes.lock().unwrap().len(), 1);
    node.next_hop.failing.lock().unwrap().push("nse-b".into());
    let e = chain.request(&mut Ctx::new(), r).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "every candidate failed");
}

#[tokio::test]
async fn resetmechanism_closes_the_old_mechanism_before_requesting_another() {
    let probe = Probe::<()>::new();
    let chain = checked(Chain::new().with(ResetMechanism).with(probe.clone()));
    let mut ctx = Ctx::new();
    let conn = chain
        .request(&mut ctx, chosen(MECH_KERNEL, &[]))
        .await
        .unwrap();
    let mut change = request("c1", MECH_VFIO, &[]);
    change.connection = Some(Connection {
        mechanism: None,
        ..conn.clone()
    });
    chain.request(&mut ctx, change.clone()).await.unwrap();
    let closed = probe.closes();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].mechanism.as_ref().unwrap().r#type, MECH_KERNEL);
    chain.close(&mut ctx, connection(&change)).await.unwrap();
    assert_eq!(probe.closes().len(), 2);
    probe.fail(true);
    let mut ctx = Ctx::new();
    chain
        .request(&mut ctx, chosen(MECH_KERNEL, &[]))
        .await
        .unwrap_err();
    probe.fail(false);
    chain.request(&mut ctx, change).await.unwrap();
    assert_eq!(
        probe.closes().len(),
        2,
        "a failed Request left nothing to close"
    );
}

#[tokio::test]
async fn mechanisms_runs_the_chosen_sub_chain_and_closes_through_it() {
    let kernel = Probe::<(Selected,)>::new();
    let vfio = Probe::<()>::new();
    let chain = checked(
        Chain::new().with(
            Mechanisms::new()
                .with(MECH_KERNEL, Chain::new().with(kernel.clone()))
                .with(MECH_VFIO, Chain::new().with(vfio.clone())),
        ),
    );
    let mut ctx = Ctx::new();
    let r = request("c1", MECH_KERNEL, &[]);
    let conn = chain.request(&mut ctx, r.clone()).await.unwrap();
    assert_eq!(kernel.last().1.0, Selected(MECH_KERNEL.into()));
    assert_eq!(conn.mechanism.as_ref().unwrap().r#type, MECH_KERNEL);
    let memif = request("c2", "MEMIF", &[]);
    let e = chain.request(&mut Ctx::new(), memif).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    chain.close(&mut ctx, conn).await.unwrap();
    assert_eq!((kernel.closes().len(), vfio.closes().len()), (1, 0));
    kernel.fail(true);
    let mut ctx = Ctx::new();
    chain.request(&mut ctx, r).await.unwrap_err();
    assert!(
        ctx.get::<Selected>().is_none(),
        "a failed first Request chose nothing"
    );
}

#[tokio::test]
async fn validate_hands_the_parsed_parameters_on_and_refuses_hostile_ones() {
    let probe = Probe::<(KernelParams, Token)>::new();
    let chain = checked(Chain::new().with(Validate::Kernel).with(probe.clone()));
    chain
        .request(&mut Ctx::new(), kernel("sriov-1"))
        .await
        .unwrap();
    let (params, Token(token)) = probe.last().1;
    assert_eq!(params.name.unwrap().as_str(), "nsm-1");
    assert_eq!(token, "sriov-1");
    let mut hostile = kernel("sriov-1");
    let m = hostile.connection.as_mut().unwrap().mechanism.as_mut();
    m.unwrap()
        .parameters
        .insert(params::NAME.into(), "a/b".into());
    let e = chain.request(&mut Ctx::new(), hostile).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(probe.requests(), 1, "refused before the rest");
    let c = connection(&kernel("sriov-1"));
    chain.close(&mut Ctx::new(), c).await.unwrap();
    assert_eq!(probe.closes().len(), 1);
    probe.fail(true);
    let e = chain.request(&mut Ctx::new(), kernel("sriov-1")).await;
    assert_eq!(e.unwrap_err().code(), Code::Unavailable);
}

#[tokio::test]
async fn bindvf_binds_a_vf_and_returns_it_on_close_and_when_the_rest_fails() {
    let node = Node::new();
    let token = node.allocate(1).remove(0);
    let probe = Probe::<(VfBinding, UndoLog)>::new();
    let chain = checked(
        Chain::new()
            .with(Validate::Vfio)
            .with(node.bindvf(DriverKind::Vfio, LIFETIME))
            .with(probe.clone()),
    );
    let driver = |vf| node.sysfs().driver(vf).unwrap();
    let mut ctx = Ctx::new();
    let conn = chain.request(&mut ctx, vfio(&token)).await.unwrap();
    let vf = probe.last().1.0.lease.vf;
    let p = &conn.mechanism.as_ref().unwrap().parameters;
    assert_eq!(p[params::PCI_ADDRESS], vf.to_string());
    assert_eq!(driver(vf).as_deref(), Some("vfio-pci"));
    assert_eq!(node.in_use(), 1);
    chain.close(&mut ctx, conn).await.unwrap();
    assert_eq!(driver(vf).as_deref(), Some("iavf"));
    assert_eq!(node.in_use(), 0);
    probe.fail(true);
    chain
        .request(&mut Ctx::new(), vfio(&token))
        .await
        .unwrap_err();
    assert_eq!(probe.last().1.0.lease.vf, vf);
    assert_eq!(driver(vf).as_deref(), Some("iavf"), "driver restored");
    assert_eq!(node.in_use(), 0, "VF returned");
}

#[tokio::test]
async fn vfconfig_sets_mac_and_vlan_on_the_way_back_and_restores_them() {
    let node = Node::new();
    let token = node.allocate(1).remove(0);
    let ops = RecordingOps::new();
    let probe = Probe::<()>::new();
    let chain = checked(
        Chain::new()
            .with(Validate::Kernel)
            .with(node.bindvf(DriverKind::Kernel, LIFETIME))
            .with(VfConfigElement::new(Arc::new(ops.clone())))
            .with(probe.clone()),
    );
    let mut r = kernel(&token);
    r.connection.as_mut().unwrap().context = Some(ConnectionContext {
        ethernet_context: Some(EthernetContext {
            src_mac: "02:00:00:00:00:01".into(),
            vlan_tag: 100,
            ..Default::default()
        }),
        ..Default::default()
    });
    let set = |c: &Call| matches!(c, Call::SetVf { .. });
    let restored = |c: &Call| matches!(c, Call::RestoreVf(_));
    let mut ctx = Ctx::new();
    let conn = chain.request(&mut ctx, r.clone()).await.unwrap();
    assert_eq!(count(&ops, set), 1);
    chain.close(&mut ctx, conn).await.unwrap();
    assert_eq!(count(&ops, restored), 1);

    probe.fail(true);
    chain.request(&mut Ctx::new(), r.clone()).await.unwrap_err();
    assert_eq!(count(&ops, set), 1, "nothing set when the rest failed");

    probe.fail(false);
    ops.fail("set_vf");
    chain.request(&mut Ctx::new(), r).await.unwrap_err();
    assert_eq!(probe.closes().len(), 2, "its own failure closes the rest");
    assert_eq!(node.in_use(), 0);
}

#[tokio::test]
async fn inject_moves_the_netdev_on_the_way_back_and_brings_it_home() {
    let node = Node::new();
    let token = node.allocate(1).remove(0);
    let ops = RecordingOps::new();
    let probe = Probe::<()>::new();
    let chain = checked(
        Chain::new()
            .with(Validate::Kernel)
            .with(node.bindvf(DriverKind::Kernel, LIFETIME))
            .with(Inject::new(Arc::new(ops.clone())).with_proc_scan(true))
            .with(probe.clone()),
    );
    let moved = |c: &Call| matches!(c, Call::MoveInto(_));
    let back = |c: &Call| matches!(c, Call::BackOut(_));
    let mut ctx = Ctx::new();
    let conn = chain.request(&mut ctx, kernel(&token)).await.unwrap();
    let Some(Call::MoveInto(link)) = ops.calls().into_iter().find(moved) else {
        unreachable!("moved")
    };
    assert_eq!(link.link.to_string(), "enp59s2");
    assert_eq!(link.name.unwrap().as_str(), "nsm-1");
    chain.close(&mut ctx, conn).await.unwrap();
    assert_eq!(count(&ops, back), 1);

    probe.fail(true);
    chain
        .request(&mut Ctx::new(), kernel(&token))
        .await
        .unwrap_err();
    assert_eq!(count(&ops, moved), 1, "nothing moved when the rest failed");

    probe.fail(false);
    ops.fail("move_into");
    chain
        .request(&mut Ctx::new(), kernel(&token))
        .await
        .unwrap_err();
    assert_eq!(probe.closes().len(), 2, "its own failure closes the rest");
    assert_eq!(node.in_use(), 0);
}

/// A node with one allocated token, and a chain that binds a VF and moves its netdev through
/// the recording fake.
fn bindvf_and_inject() -> (Node, String, RecordingOps, Chain) {
    let node = Node::new();
    let token = node.allocate(1).remove(0);
    let ops = RecordingOps::new();
    let chain = checked(
        Chain::new()
            .with(Validate::Kernel)
            .with(node.bindvf(DriverKind::Kernel, LIFETIME))
            .with(Inject::new(Arc::new(ops.clone())).with_proc_scan(true))
            .with(Probe::<()>::new()),
    );
    (node, token, ops, chain)
}

#[tokio::test]
async fn inject_keeps_the_vf_in_use_while_its_netdev_could_not_be_brought_home() {
    let (node, token, ops, chain) = bindvf_and_inject();
    let back = |c: &Call| matches!(c, Call::BackOut(_));

    // The move's own rollback failed; one more try brings the link home.
    ops.strand_moves();
    chain
        .request(&mut Ctx::new(), kernel(&token))
        .await
        .unwrap_err();
    assert_eq!(count(&ops, back), 1, "tried once more at once");
    assert_eq!(node.in_use(), 0, "home: the VF is free again");
    assert!(node.pool.expired().unwrap().is_empty());

    // That try fails too: the link is still in the client.
    ops.fail("back_out");
    chain
        .request(&mut Ctx::new(), kernel(&token))
        .await
        .unwrap_err();
    assert_eq!(
        node.in_use(),
        1,
        "a VF whose netdev sits in a client is not handed out"
    );
    let mut expired = node.pool.expired().unwrap();
    assert_eq!(expired.len(), 1, "left for the next sweep at once");
    let (connection, lease) = expired.remove(0);
    let record = UndoRecord::of(&lease).unwrap();
    assert!(record.moving.is_none(), "{record:?}");
    let stranded = record.moved.expect("the record of where the link is");
    assert_eq!(
        stranded.client_index, 100,
        "the move's own record, not the plan"
    );

    // The sweep's undo from the record brings it home, then frees the VF.
    let later = RecordingOps::new();
    Reclaim::new(node.pool.clone(), node.sysfs(), Arc::new(later.clone()))
        .connection(&connection)
        .await
        .unwrap();
    assert_eq!(later.calls(), [Call::BackOut(stranded)]);
    assert_eq!(node.in_use(), 0);
}

#[tokio::test]
async fn a_close_that_cannot_bring_the_netdev_home_keeps_the_vf_for_the_sweep() {
    let (node, token, ops, chain) = bindvf_and_inject();
    let mut ctx = Ctx::new();
    let conn = chain.request(&mut ctx, kernel(&token)).await.unwrap();
    ops.fail("back_out");
    chain.close(&mut ctx, conn).await.unwrap_err();
    assert_eq!(node.in_use(), 1, "still in use: its netdev is not home");
    let expired = node.pool.expired().unwrap();
    assert_eq!(expired.len(), 1, "left for the next sweep at once");
    assert!(UndoRecord::of(&expired[0].1).unwrap().moved.is_some());
}

#[tokio::test]
async fn ipcontext_plans_the_clients_addresses_and_closes_the_rest_on_a_bad_context() {
    let probe = Probe::<()>::new();
    let chain = checked(Chain::new().with(IpContext).with(probe.clone()));
    let mut r = request("c1", MECH_KERNEL, &[]);
    r.connection.as_mut().unwrap().context = Some(ip_context());
    let mut ctx = Ctx::new();
    let conn = chain.request(&mut ctx, r.clone()).await.unwrap();
    let plan = ctx.get::<IpPlan>().unwrap();
    let addresses: Vec<_> = plan.addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(addresses, ["172.16.1.2/30"]);
    assert_eq!(plan.mtu, Some(1450));
    chain.close(&mut ctx, conn).await.unwrap();
    assert!(ctx.get::<IpPlan>().is_none());
    assert_eq!(probe.closes().len(), 1);

    let mut bad = r.clone();
    let cc = bad.connection.as_mut().unwrap().context.as_mut().unwrap();
    cc.ip_context.as_mut().unwrap().src_ip_addrs = vec!["nonsense".into()];
    let mut ctx = Ctx::new();
    let e = chain.request(&mut ctx, bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(probe.closes().len(), 2, "the rest closed");

    probe.fail(true);
    let mut ctx = Ctx::new();
    chain.request(&mut ctx, r).await.unwrap_err();
    assert!(ctx.get::<IpPlan>().is_none());
}

#[tokio::test]
async fn vfio_grants_the_devices_and_revokes_them_on_close_and_when_the_rest_fails() {
    let node = Node::new();
    let token = node.allocate(1).remove(0);
    let probe = Probe::<()>::new();
    let chain = checked(
        Chain::new()
            .with(Validate::Vfio)
            .with(node.bindvf(DriverKind::Vfio, LIFETIME))
            .with(node.vfio())
            .with(probe.clone()),
    );
    let written = |file: &str| {
        let prefix = format!("{file}: ");
        node.rules()
            .iter()
            .filter(|r| r.starts_with(&prefix))
            .count()
    };
    let mut ctx = Ctx::new();
    let conn = chain.request(&mut ctx, vfio(&token)).await.unwrap();
    let p = &conn.mechanism.as_ref().unwrap().parameters;
    assert!(p.contains_key(params::IOMMU_GROUP), "{p:?}");
    assert_eq!(written("devices.allow"), 2);
    chain.close(&mut ctx, conn).await.unwrap();
    assert_eq!(written("devices.deny"), 2);

    probe.fail(true);
    chain
        .request(&mut Ctx::new(), vfio(&token))
        .await
        .unwrap_err();
    assert_eq!(written("devices.allow"), 4);
    assert_eq!(written("devices.deny"), 4, "revoked when the rest failed");
    assert_eq!(node.in_use(), 0);
}

#[tokio::test]
async fn connect_offers_the_next_hop_noop_and_closes_it_when_the_rest_fails() {
    let node = Node::new();
    let probe = Probe::<()>::new();
    let hop = node.next_hop.clone();
    let chain = checked(
        Chain::new()
            .with(Connect::new(hop.clone()))
            .with(probe.clone()),
    );
    let mut ctx = Ctx::new();
    let conn = chain
        .request(&mut ctx, chosen(MECH_KERNEL, &[]))
        .await
        .unwrap();
    let onward = hop.requests.lock().unwrap()[0].clone();
    assert_eq!(onward.mechanism_preferences[0].r#type, MECH_NOOP);
    assert_eq!(conn.mechanism.as_ref().unwrap().r#type, MECH_KERNEL);
    chain.close(&mut ctx, conn).await.unwrap();
    assert_eq!(hop.closes.lock().unwrap().len(), 1);
    assert_eq!(probe.closes().len(), 1);

    probe.fail(true);
    chain
        .request(&mut Ctx::new(), chosen(MECH_KERNEL, &[]))
        .await
        .unwrap_err();
    assert_eq!(hop.closes.lock().unwrap().len(), 2, "next hop closed");
}
