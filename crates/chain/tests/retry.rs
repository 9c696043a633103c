#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A client whose answer was lost retries without our segment's id: it takes
//! its connection over (before and after a restart); nobody else can. And a
//! restart's undo of one VFIO connection leaves the container's other ones
//! their shared `/dev/vfio/vfio`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_api::nsm::networkservice::network_service_server::NetworkService;
use sriov_chain::Ctx;
use sriov_chain::caller::{Caller, PeerIdentity};
use sriov_chain::params::{self, MECH_KERNEL, MECH_VFIO};
use sriov_chain::reclaim::Reclaim;
use sriov_netlink::testing::{Call, RecordingOps};
use sriov_token_pool::TokenState;
use support::*;
use tonic::Code;

fn kernel(client: &str, token: &str) -> NetworkServiceRequest {
    request(
        client,
        MECH_KERNEL,
        &[
            (params::TOKEN_ID, token),
            (params::INODE_URL, "inode://4/4026532999"),
            (params::NAME, "nsm-1"),
        ],
    )
}

/// The same request again as NSM delivers a client's retry: the manager
/// before us gave its own segment a new id (its first attempt failed too),
/// and there is no segment of ours.
fn retried(mut r: NetworkServiceRequest) -> NetworkServiceRequest {
    let conn = r.connection.as_mut().unwrap();
    let path = conn.path.as_mut().unwrap();
    path.path_segments[1].id = format!("{}-again", path.path_segments[1].id);
    conn.id = path.path_segments[1].id.clone();
    r
}

fn ours(c: &Connection) -> String {
    c.path.as_ref().unwrap().path_segments[2].id.clone()
}

/// The connection id the pool records `token` in use by.
fn user_of(h: &Harness, token: &str) -> Option<String> {
    h.pool
        .tokens()
        .unwrap()
        .into_iter()
        .find(|t| t.id == token)
        .and_then(|t| match t.state {
            TokenState::InUse(u) => Some(u.connection),
            _ => None,
        })
}

fn moves(ops: &RecordingOps) -> usize {
    ops.calls()
        .iter()
        .filter(|c| matches!(c, Call::MoveInto(_)))
        .count()
}

#[tokio::test]
async fn a_retry_after_a_cancelled_call_refreshes_the_connection_its_answer_named() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    let token = h.allocate(1).remove(0);
    *h.next_hop.delay.lock().unwrap() = Duration::from_millis(300);
    let server = sriov_chain::server::NetworkServiceServer::new(h.chain.clone());
    let call = server.request(tonic::Request::new(kernel("c1", &token)));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), call)
            .await
            .is_err(),
        "the client gave up before the answer"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let standing = user_of(&h, &token).expect("established without its client");
    *h.next_hop.delay.lock().unwrap() = Duration::ZERO;

    let conn = server
        .request(tonic::Request::new(retried(kernel("c1", &token))))
        .await
        .expect("the retry takes its connection over")
        .into_inner();
    assert_eq!(
        ours(&conn),
        standing,
        "the answer names the standing connection"
    );
    assert_eq!(conn.id, "c1-mgr-again", "the caller's own view");
    assert_eq!(user_of(&h, &token), Some(standing.clone()));
    assert_eq!(moves(&ops), 1, "a refresh: nothing plumbed again");
    assert_eq!(h.monitor.connections().len(), 1);

    // Now it knows the id: its refresh and Close are the usual ones.
    h.close(conn).await.unwrap();
    assert!(ops.calls().iter().any(|c| matches!(c, Call::BackOut(_))));
    assert_eq!(h.in_use(), 0);
}

#[tokio::test]
async fn another_client_presenting_the_token_is_still_refused() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    let token = h.allocate(1).remove(0);
    let first = h.request(kernel("c1", &token)).await.unwrap();

    for other in [
        kernel("intruder", &token),
        // The same segment name with another id is another client.
        {
            let mut r = kernel("c2", &token);
            let p = r.connection.as_mut().unwrap().path.as_mut().unwrap();
            p.path_segments[0].name = "client".into();
            r
        },
    ] {
        let e = h.request(retried(other)).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("in use"), "{}", e.message());
    }
    assert_eq!(user_of(&h, &token), Some(ours(&first)));
    assert_eq!(moves(&ops), 1);
}

#[tokio::test]
async fn the_same_segment_from_another_spiffe_id_is_another_client() {
    let h = Harness::new(Arc::new(RecordingOps::new()));
    let token = h.allocate(1).remove(0);
    let as_peer = |id: &str| {
        let mut ctx = Ctx::new();
        ctx.insert(Caller {
            peer: Some(PeerIdentity {
                spiffe_id: id.into(),
                cert_der: Arc::from(&b"cert"[..]),
            }),
            token: None,
        });
        ctx
    };
    let first = h
        .chain
        .request(
            &mut as_peer("spiffe://example.org/nsmgr"),
            kernel("c1", &token),
        )
        .await
        .unwrap();
    let e = h
        .chain
        .request(
            &mut as_peer("spiffe://example.org/other"),
            retried(kernel("c1", &token)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let again = h
        .chain
        .request(
            &mut as_peer("spiffe://example.org/nsmgr"),
            retried(kernel("c1", &token)),
        )
        .await
        .unwrap();
    assert_eq!(ours(&again), ours(&first));
}

#[tokio::test]
async fn after_a_restart_a_retry_without_our_id_adopts_the_recorded_connection() {
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    let token = h.allocate(1).remove(0);
    // Established, then killed before the answer left.
    let lost = h.request(kernel("c1", &token)).await.unwrap();
    let vf: sriov_pci::PciAddress = lost.mechanism.as_ref().unwrap().parameters
        [params::PCI_ADDRESS]
        .parse()
        .unwrap();
    // The netdev is in the client's namespace: our sysfs no longer lists it.
    std::fs::remove_dir_all(h.sysfs().device_dir(vf).join("net")).unwrap();

    let ops2 = RecordingOps::new();
    let h = h.restart(Arc::new(ops2.clone()));
    let e = h
        .request(retried(kernel("other", &token)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    let conn = h.request(retried(kernel("c1", &token))).await.unwrap();
    assert_eq!(ours(&conn), ours(&lost), "the recorded connection, adopted");
    assert_eq!(
        conn.mechanism.as_ref().unwrap().parameters[params::PCI_ADDRESS],
        vf.to_string()
    );
    assert_eq!(
        moves(&ops2),
        0,
        "adopted, not moved again: {:?}",
        ops2.calls()
    );
    assert_eq!(h.in_use(), 1);

    h.close(conn).await.unwrap();
    let backs = ops2
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::BackOut(_)))
        .count();
    assert_eq!(backs, 1, "{:?}", ops2.calls());
    assert_eq!(h.in_use(), 0);
}

fn vfio(client: &str, token: &str) -> NetworkServiceRequest {
    request(
        client,
        MECH_VFIO,
        &[(params::TOKEN_ID, token), (params::CGROUP_DIR, CGROUP)],
    )
}

fn denied(h: &Harness, rule: &str) -> usize {
    h.rules()
        .iter()
        .filter(|r| *r == &format!("devices.deny: {rule}"))
        .count()
}

#[tokio::test]
async fn after_a_restart_closing_one_vfio_connection_leaves_the_others_container_node() {
    let h = Harness::new(Arc::new(RecordingOps::new()));
    let tokens = h.allocate(2);
    let a = h.request(vfio("a", &tokens[0])).await.unwrap();
    let b = h.request(vfio("b", &tokens[1])).await.unwrap();
    let group =
        |c: &Connection| c.mechanism.as_ref().unwrap().parameters[params::IOMMU_GROUP].clone();
    assert_ne!(group(&a), group(&b), "{:?}", h.rules());

    let ops2 = RecordingOps::new();
    let h = h.restart(Arc::new(ops2.clone()));
    // What the forwarder does at start, before serving.
    let rolled_back = Reclaim::new(h.pool.clone(), h.sysfs(), Arc::new(ops2.clone()))
        .with_cgroups(h.cgroups.clone())
        .unfinished()
        .await;
    assert!(rolled_back.is_empty(), "both established: {rolled_back:?}");

    h.close(a.clone()).await.unwrap();
    assert_eq!(denied(&h, &format!("c 243:{} rw", group(&a))), 1);
    assert_eq!(
        denied(&h, "c 10:196 rw"),
        0,
        "b's container still opens /dev/vfio/vfio: {:?}",
        h.rules()
    );
    assert_eq!(denied(&h, &format!("c 243:{} rw", group(&b))), 0);

    h.close(b.clone()).await.unwrap();
    assert_eq!(denied(&h, &format!("c 243:{} rw", group(&b))), 1);
    assert_eq!(denied(&h, "c 10:196 rw"), 1, "{:?}", h.rules());
    assert_eq!(h.in_use(), 0);
}
