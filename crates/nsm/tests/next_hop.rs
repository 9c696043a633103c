//! The forwarder's next hop against the fake NSM manager over a real unix
//! socket: NOOP offers, path kept, mechanism translation, failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Fixture, PATIENCE};
use sriov_api::nsm::connection::{Connection, Mechanism, Path, PathSegment, State};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use std::sync::Arc;

use sriov_chain::elements::connect::Connect;
use sriov_chain::{Chain, Ctx, NextHop};
use sriov_nsm::mechanism::{CLS_LOCAL, CLS_REMOTE, NOOP};
use sriov_nsm::{GrpcNextHop, NsmUrl};
use tokio::time::timeout;
use tonic::Code;

fn kernel() -> Mechanism {
    Mechanism {
        cls: CLS_LOCAL.into(),
        r#type: "KERNEL".into(),
        parameters: [("name".to_string(), "nsm-1".to_string())].into(),
    }
}

/// A request as the forwarder's chain hands it to `connect`: its own
/// segment at the index, the client's KERNEL mechanism on the connection.
fn request(id: &str) -> NetworkServiceRequest {
    NetworkServiceRequest {
        connection: Some(Connection {
            id: id.into(),
            network_service: "forwarder".into(),
            mechanism: Some(kernel()),
            path: Some(Path {
                index: 1,
                path_segments: vec![
                    PathSegment {
                        name: "nsc".into(),
                        id: "nsc-conn".into(),
                        token: "t0".into(),
                        ..Default::default()
                    },
                    PathSegment {
                        name: "forwarder-sriov".into(),
                        id: id.into(),
                        token: "t1".into(),
                        ..Default::default()
                    },
                ],
            }),
            labels: [("app".to_string(), "nsc".to_string())].into(),
            ..Default::default()
        }),
        mechanism_preferences: vec![kernel()],
    }
}

fn next_hop(fx: &Fixture) -> GrpcNextHop {
    GrpcNextHop::new(fx.nsmgr.url(), Duration::from_millis(200)).unwrap()
}

#[tokio::test]
async fn request_offers_only_noop_and_keeps_the_path() {
    let fx = Fixture::new().await;
    let hop = next_hop(&fx);
    let sent = request("conn-1");
    let conn = timeout(PATIENCE, hop.request(sent.clone()))
        .await
        .unwrap()
        .unwrap();

    let got = fx.nsmgr.requests();
    assert_eq!(got.len(), 1);
    let prefs: Vec<(&str, &str)> = got[0]
        .mechanism_preferences
        .iter()
        .map(|m| (m.cls.as_str(), m.r#type.as_str()))
        .collect();
    assert_eq!(prefs, [(CLS_LOCAL, NOOP), (CLS_REMOTE, NOOP)]);
    let onward = got[0].connection.as_ref().unwrap();
    assert_eq!(onward.mechanism, None, "the client's KERNEL must not go on");
    assert_eq!(onward.path, sent.connection.as_ref().unwrap().path);
    assert_eq!(onward.id, "conn-1");
    assert_eq!(onward.labels["app"], "nsc");

    // The answer is the next hop's connection, NOOP and all.
    let mechanism = conn.mechanism.clone().unwrap();
    assert_eq!(
        (mechanism.cls.as_str(), mechanism.r#type.as_str()),
        (CLS_LOCAL, NOOP)
    );
    assert_eq!(conn.path, sent.connection.unwrap().path);
    assert_eq!(conn.state(), State::Up);
}

#[tokio::test]
async fn refresh_and_close_carry_the_mechanism_the_next_hop_chose() {
    let fx = Fixture::new().await;
    let hop = next_hop(&fx);
    let first = hop.request(request("conn-2")).await.unwrap();
    let chosen = first.mechanism.clone().unwrap();

    // A refresh comes with the client's mechanism again; the next hop
    // sees its own.
    hop.request(request("conn-2")).await.unwrap();
    let refresh = &fx.nsmgr.requests()[1];
    assert_eq!(
        refresh.connection.as_ref().unwrap().mechanism.as_ref(),
        Some(&chosen)
    );

    // Close as the chain does: the client's connection, KERNEL mechanism.
    let mut closing = request("conn-2").connection.unwrap();
    closing.mechanism = Some(kernel());
    assert_eq!(hop.open_connections(), 1);
    hop.close(closing).await.unwrap();
    assert_eq!(hop.open_connections(), 0);
    let closes = fx.nsmgr.closes();
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].id, "conn-2");
    assert_eq!(closes[0].mechanism.as_ref(), Some(&chosen));
    assert_eq!(closes[0].path, first.path);
}

#[tokio::test]
async fn close_of_a_connection_never_requested_sends_noop() {
    let fx = Fixture::new().await;
    let hop = next_hop(&fx);
    hop.close(request("stranger").connection.unwrap())
        .await
        .unwrap();
    let closes = fx.nsmgr.closes();
    assert_eq!(closes[0].mechanism.as_ref().unwrap().r#type, NOOP);
}

#[tokio::test]
async fn failing_next_hop_returns_its_status_then_recovers() {
    let fx = Fixture::new().await;
    let hop = next_hop(&fx);
    fx.nsmgr.fail_next_requests(2, Code::ResourceExhausted);

    for _ in 0..2 {
        let status = hop.request(request("conn-3")).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("nsm.io.sock"), "{status:?}");
    }
    let conn = hop.request(request("conn-3")).await.unwrap();
    assert_eq!(conn.mechanism.unwrap().r#type, NOOP);
    assert_eq!(fx.nsmgr.requests().len(), 3);
}

#[tokio::test]
async fn absent_next_hop_is_unavailable_and_reached_once_it_appears() {
    let mut fx = Fixture::new().await;
    let hop = next_hop(&fx);
    fx.nsmgr.stop().await;

    let status = timeout(PATIENCE, hop.request(request("conn-4")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = hop
        .close(request("conn-4").connection.unwrap())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // The same next hop reconnects when the manager is back.
    fx.nsmgr.restart().await.unwrap();
    let conn = timeout(PATIENCE, hop.request(request("conn-4")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conn.id, "conn-4");
}

#[tokio::test]
async fn call_timeout_bounds_a_next_hop_that_never_answers() {
    // A socket that is bound but never served: connections queue in the
    // backlog and no HTTP/2 answer ever comes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let _silent = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let hop = GrpcNextHop::new(NsmUrl::Unix(path), Duration::from_millis(50))
        .unwrap()
        .with_call_timeout(Duration::from_millis(200));
    let status = timeout(PATIENCE, hop.request(request("conn-5")))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::DeadlineExceeded | Code::Unavailable | Code::Cancelled
        ),
        "{status:?}"
    );
}

#[tokio::test]
async fn chain_connect_element_over_grpc_gives_the_client_its_own_mechanism_back() {
    let fx = Fixture::new().await;
    let hop = next_hop(&fx);
    let chain = Chain::new().with(Connect::new(Arc::new(hop.clone())));
    let mut ctx = Ctx::new();

    let conn = timeout(PATIENCE, chain.request(&mut ctx, request("conn-6")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conn.mechanism, Some(kernel()));
    assert_eq!(conn.id, "conn-6");
    let onward = fx.nsmgr.requests()[0].connection.clone().unwrap();
    assert_eq!(onward.mechanism, None);
    assert_eq!(hop.open_connections(), 1);

    chain.close(&mut ctx, conn).await.unwrap();
    let closes = fx.nsmgr.closes();
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].mechanism.as_ref().unwrap().r#type, NOOP);
    assert_eq!(hop.open_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_connection() {
    let fx = Fixture::new().await;
    let hop = next_hop(&fx);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let hop = hop.clone();
            tokio::spawn(async move { hop.request(request(&format!("conn-{i}"))).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let conn = timeout(PATIENCE, task).await.unwrap().unwrap().unwrap();
        assert_eq!(conn.id, format!("conn-{i}"));
    }
    assert_eq!(fx.nsmgr.requests().len(), 64);
    assert_eq!(hop.open_connections(), 64);
    let closes: Vec<_> = (0..64)
        .map(|i| {
            let hop = hop.clone();
            tokio::spawn(async move {
                hop.close(request(&format!("conn-{i}")).connection.unwrap())
                    .await
            })
        })
        .collect();
    for task in closes {
        timeout(PATIENCE, task).await.unwrap().unwrap().unwrap();
    }
    assert_eq!(hop.open_connections(), 0);
    assert_eq!(fx.nsmgr.closes().len(), 64);
}
