//! Registration, refresh, re-registration, unregistration and Find
//! against the fake NSM manager over real unix sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::{Fixture, PATIENCE, eventually, registration};
use sriov_api::nsm::registry::{NetworkServiceEndpoint, NetworkServiceLabels};
use sriov_chain::{EndpointFinder, EndpointQuery};
use sriov_nsm::fake::{Call, FakeNsmgr};
use sriov_nsm::{NsmUrl, RegistrationState, RegistryClient};
use tokio::time::timeout;
use tonic::Code;

const LONG: Duration = Duration::from_secs(600);

#[tokio::test]
async fn registration_carries_name_service_labels_url_and_expiry() {
    let fx = Fixture::new().await;
    let before = SystemTime::now();
    let handle = fx.registry().keep_registered(fx.registration(LONG));
    let state = timeout(PATIENCE, handle.registered())
        .await
        .unwrap()
        .unwrap();

    let sent = fx.nsmgr.registers();
    assert_eq!(sent.len(), 1);
    let nse = &sent[0];
    assert_eq!(nse.name, "forwarder-sriov-node1");
    assert_eq!(nse.network_service_names, vec!["forwarder".to_string()]);
    assert_eq!(nse.network_service_labels.len(), 1);
    let labels = &nse.network_service_labels["forwarder"].labels;
    assert_eq!(labels["p2p"], "true");
    assert_eq!(labels["node"], "node1");
    assert_eq!(
        nse.url,
        format!("unix://{}", fx.path("forwarder.sock").display())
    );
    // The expiry is the registry's to choose, as for the Go forwarder.
    assert_eq!(nse.expiration_time, None);
    let expires = SystemTime::try_from(
        fx.nsmgr
            .endpoint(&nse.name)
            .unwrap()
            .expiration_time
            .unwrap(),
    )
    .unwrap();
    assert!(
        expires >= before + LONG,
        "expiry {expires:?} is not the registry's now + expiration"
    );

    let RegistrationState::Registered {
        registrations,
        expires: state_expires,
    } = state
    else {
        panic!("not registered: {state:?}");
    };
    assert_eq!(registrations, 1);
    assert_eq!(state_expires, expires);
    let stored = fx.nsmgr.endpoint("forwarder-sriov-node1").unwrap();
    assert!(stored.initial_registration_time.is_some());
}

#[tokio::test]
async fn registration_is_refreshed_before_it_expires() {
    let fx = Fixture::new().await;
    let lifetime = Duration::from_millis(1200);
    let handle = fx.registry().keep_registered(fx.registration(lifetime));
    let expiry = |s: RegistrationState| match s {
        RegistrationState::Registered { expires, .. } => expires,
        other => panic!("not registered: {other:?}"),
    };
    let first = expiry(
        timeout(PATIENCE, handle.registered())
            .await
            .unwrap()
            .unwrap(),
    );

    // Three refreshes span more than two lifetimes: without them the fake
    // would have dropped the entry.
    assert!(
        fx.nsmgr
            .wait_for_calls(PATIENCE, |calls| {
                calls
                    .iter()
                    .filter(|c| matches!(c, Call::Register(_)))
                    .count()
                    >= 4
            })
            .await
    );
    let registers = fx.nsmgr.registers();
    // Each refresh is given a later expiry by the registry.
    assert!(expiry(handle.state()) > first);
    // The first-registration stamp the registry gave is sent back.
    let stamp = fx
        .nsmgr
        .endpoint("forwarder-sriov-node1")
        .unwrap()
        .initial_registration_time;
    assert_eq!(registers[1].initial_registration_time, stamp);
    assert!(fx.nsmgr.endpoint("forwarder-sriov-node1").is_some());
    // The fake records a call before the client sees the answer.
    timeout(
        PATIENCE,
        handle
            .subscribe()
            .wait_for(|s| matches!(s, RegistrationState::Registered { registrations, .. } if *registrations >= 4)),
    )
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test]
async fn registry_restarted_empty_gets_the_endpoint_back() {
    let mut fx = Fixture::new().await;
    // A lifetime so long that only noticing the restart can re-register.
    let handle = fx.registry().keep_registered(fx.registration(LONG));
    timeout(PATIENCE, handle.registered())
        .await
        .unwrap()
        .unwrap();
    let mut states = handle.subscribe();

    fx.nsmgr.stop().await;
    fx.nsmgr.clear_registry();
    // While it is gone, the task retries and says so.
    timeout(
        PATIENCE,
        states.wait_for(|s| matches!(s, RegistrationState::Retrying { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    fx.nsmgr.restart().await.unwrap();

    eventually("endpoint registered again", || {
        fx.nsmgr.endpoint("forwarder-sriov-node1").is_some()
    })
    .await;
    timeout(
        PATIENCE,
        states.wait_for(|s| matches!(s, RegistrationState::Registered { registrations, .. } if *registrations >= 2)),
    )
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test]
async fn endpoint_deleted_by_the_registry_is_registered_again() {
    let fx = Fixture::new().await;
    let handle = fx.registry().keep_registered(fx.registration(LONG));
    timeout(PATIENCE, handle.registered())
        .await
        .unwrap()
        .unwrap();

    // Someone else unregisters us; the watch reports it.
    let other = fx.registry();
    other
        .unregister(NetworkServiceEndpoint {
            name: "forwarder-sriov-node1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        fx.nsmgr
            .wait_for_calls(PATIENCE, |calls| {
                calls
                    .iter()
                    .filter(|c| matches!(c, Call::Register(_)))
                    .count()
                    >= 2
            })
            .await
    );
    eventually("endpoint back", || {
        fx.nsmgr.endpoint("forwarder-sriov-node1").is_some()
    })
    .await;
}

#[tokio::test]
async fn registry_that_cannot_watch_is_not_hammered() {
    let fx = Fixture::new().await;
    fx.nsmgr.hold_watches(false);
    let handle = fx.registry().keep_registered(fx.registration(LONG));
    timeout(PATIENCE, handle.registered())
        .await
        .unwrap()
        .unwrap();

    // Each ended watch looks like a lost registry at first; after a few
    // the task stops watching and waits for the (ten-minute) refresh.
    assert!(
        fx.nsmgr
            .wait_for_calls(PATIENCE, |calls| {
                calls
                    .iter()
                    .filter(|c| matches!(c, Call::Register(_)))
                    .count()
                    >= 4
            })
            .await
    );
    let mut calls = fx.nsmgr.subscribe();
    let later = timeout(Duration::from_millis(500), calls.recv()).await;
    assert!(later.is_err(), "still calling: {later:?}");
    assert_eq!(fx.nsmgr.registers().len(), 4);
    assert!(fx.nsmgr.endpoint("forwarder-sriov-node1").is_some());
}

#[tokio::test]
async fn absent_registry_is_retried_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("late/nsm.io.sock");
    let client = RegistryClient::new(NsmUrl::Unix(socket.clone()), Duration::from_millis(50))
        .unwrap()
        .with_fd_passing(false)
        .with_backoff(sriov_nsm::Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
        ));
    let handle = client.keep_registered(registration(
        "late-forwarder",
        NsmUrl::Unix(dir.path().join("fwd.sock")),
        LONG,
    ));
    let mut states = handle.subscribe();
    let retrying = timeout(
        PATIENCE,
        states.wait_for(
            |s| matches!(s, RegistrationState::Retrying { attempts, .. } if *attempts >= 2),
        ),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    let RegistrationState::Retrying { error, .. } = retrying else {
        unreachable!()
    };
    assert!(error.contains(&socket.display().to_string()), "{error}");

    let nsmgr = FakeNsmgr::start(&socket).await.unwrap();
    timeout(PATIENCE, handle.registered())
        .await
        .unwrap()
        .unwrap();
    assert!(nsmgr.endpoint("late-forwarder").is_some());
}

#[tokio::test]
async fn shutdown_unregisters_the_endpoint_and_stops_refreshing() {
    let fx = Fixture::new().await;
    let handle = fx
        .registry()
        .keep_registered(fx.registration(Duration::from_millis(300)));
    timeout(PATIENCE, handle.registered())
        .await
        .unwrap()
        .unwrap();
    let mut states = handle.subscribe();

    handle.shutdown().await.unwrap();
    assert!(fx.nsmgr.endpoint("forwarder-sriov-node1").is_none());
    let unregisters = fx.nsmgr.unregisters();
    assert_eq!(unregisters.len(), 1);
    assert_eq!(unregisters[0].name, "forwarder-sriov-node1");
    assert_eq!(*states.borrow_and_update(), RegistrationState::Stopped);

    // Nothing registers after the unregister, even past a refresh point.
    let mut calls = fx.nsmgr.subscribe();
    let later = timeout(Duration::from_millis(600), calls.recv()).await;
    assert!(later.is_err(), "call after shutdown: {later:?}");
    assert!(matches!(fx.nsmgr.calls().last(), Some(Call::Unregister(_))));
}

#[tokio::test]
async fn shutdown_with_the_registry_gone_reports_unavailable() {
    let mut fx = Fixture::new().await;
    let handle = fx.registry().keep_registered(fx.registration(LONG));
    timeout(PATIENCE, handle.registered())
        .await
        .unwrap()
        .unwrap();
    fx.nsmgr.stop().await;

    let err = handle.shutdown().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.to_string().contains("Unregister"), "{err}");
}

fn endpoint(name: &str, services: &[&str], expires_in: Option<i64>) -> NetworkServiceEndpoint {
    let expiration_time = expires_in.map(|secs| {
        let now = SystemTime::now();
        let t = if secs >= 0 {
            now + Duration::from_secs(secs.unsigned_abs())
        } else {
            now - Duration::from_secs(secs.unsigned_abs())
        };
        t.into()
    });
    NetworkServiceEndpoint {
        name: name.into(),
        network_service_names: services.iter().map(|s| s.to_string()).collect(),
        network_service_labels: services
            .iter()
            .map(|s| (s.to_string(), NetworkServiceLabels::default()))
            .collect(),
        url: format!("unix:///run/{name}.sock"),
        expiration_time,
        ..Default::default()
    }
}

async fn fixture_with_endpoints() -> Fixture {
    let fx = Fixture::new().await;
    fx.nsmgr
        .insert_endpoint(endpoint("nse-a", &["icmp"], Some(600)));
    fx.nsmgr
        .insert_endpoint(endpoint("nse-ab", &["icmp", "vl3"], None));
    fx.nsmgr
        .insert_endpoint(endpoint("nse-b", &["vl3"], Some(600)));
    fx.nsmgr
        .insert_endpoint(endpoint("nse-old", &["icmp"], Some(-5)));
    fx
}

fn names(found: &[NetworkServiceEndpoint]) -> Vec<&str> {
    let mut n: Vec<&str> = found.iter().map(|e| e.name.as_str()).collect();
    n.sort_unstable();
    n
}

#[tokio::test]
async fn find_by_service_returns_its_unexpired_endpoints() {
    let fx = fixture_with_endpoints().await;
    let found = fx
        .registry()
        .find(EndpointQuery {
            network_service: "icmp".into(),
            endpoint_name: None,
        })
        .await
        .unwrap();
    assert_eq!(names(&found), ["nse-a", "nse-ab"]);
    assert_eq!(found[0].url, "unix:///run/nse-a.sock");
    assert!(matches!(
        fx.nsmgr.calls().last(),
        Some(Call::Find(q)) if !q.watch
            && q.network_service_endpoint.as_ref().unwrap().network_service_names == ["icmp"]
    ));
}

#[tokio::test]
async fn find_by_name_returns_only_that_endpoint() {
    let fx = fixture_with_endpoints().await;
    let registry = fx.registry();
    let by_name = |name: &str| EndpointQuery {
        network_service: "icmp".into(),
        endpoint_name: Some(name.into()),
    };
    let found = registry.find(by_name("nse-a")).await.unwrap();
    assert_eq!(names(&found), ["nse-a"]);
    // Expired and unknown endpoints are not found.
    assert!(registry.find(by_name("nse-old")).await.unwrap().is_empty());
    assert!(registry.find(by_name("nse")).await.unwrap().is_empty());
}

#[tokio::test]
async fn find_against_an_absent_registry_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(
        NsmUrl::Unix(dir.path().join("nobody.sock")),
        Duration::from_millis(50),
    )
    .unwrap();
    let status = client
        .find(EndpointQuery {
            network_service: "icmp".into(),
            endpoint_name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("nobody.sock"), "{status:?}");
}

#[tokio::test]
async fn the_registry_path_goes_out_as_the_path_header_and_comes_back() {
    let fx = Fixture::new().await;
    let registry = fx.registry();
    let handle = registry.keep_registered(fx.registration(Duration::from_millis(600)));
    timeout(PATIENCE, handle.registered())
        .await
        .unwrap()
        .unwrap();
    // A refresh carries the path the first answer gave.
    eventually("a refresh", || fx.nsmgr.registers().len() >= 2).await;
    handle.shutdown().await.unwrap();

    let paths = fx.nsmgr.registry_paths();
    assert!(paths.len() >= 3, "{paths:?}");
    let first = paths[0]
        .clone()
        .expect("the first Register has a path header");
    assert!(
        first.segments.is_empty(),
        "a first call sends an empty path"
    );
    let second = paths[1].clone().expect("the refresh has a path header");
    assert_eq!(second.index, 0);
    assert_eq!(
        second
            .segments
            .iter()
            .map(|s| s.token.as_str())
            .collect::<Vec<_>>(),
        ["peer-token-1", "fake-nsmgr-token-1"],
        "the refresh sends what the registry answered"
    );
    let last = paths
        .last()
        .unwrap()
        .clone()
        .expect("Unregister has a path header");
    assert_eq!(last.segments.len(), 2);
    assert_eq!(registry.current_path(), {
        let mut p = last;
        p.segments[0].token = format!("peer-token-{}", paths.len());
        p.segments[1].token = format!("fake-nsmgr-token-{}", paths.len());
        p
    });
}

#[tokio::test]
async fn a_registration_sends_the_listen_socket_by_fd_and_nsmgr_dials_us_through_it() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let fx = Fixture::new().await;
    // The forwarder's socket, served as the forwarder serves it.
    let listen = NsmUrl::Unix(fx.path("listen/forwarder.sock"));
    let incoming = sriov_nsm::listen_unix(&listen).unwrap();
    let (_health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .serve_with_incoming(incoming),
    );
    let registry = RegistryClient::new(fx.nsmgr.url(), Duration::from_millis(200)).unwrap();
    let registration = common::registration("fwd-by-fd", listen.clone(), LONG);
    let stored = registry.register(registration.endpoint()).await.unwrap();
    // We sent the socket's inode; the answer gives our URL back, as the sdk's sendfd does.
    let sent = fx.nsmgr.registers();
    let NsmUrl::Unix(path) = &listen else {
        unreachable!()
    };
    let meta = std::fs::metadata(path).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        sent[0].url,
        format!("inode://{}/{}", meta.dev(), meta.ino())
    );
    assert_eq!(stored.url, listen.to_target());
    assert_eq!(fx.nsmgr.sockets_received(), 1);
    // nsmgr stores, and finds, the path of the fd it received; dialling it reaches us.
    let found = fx.nsmgr.endpoint("fwd-by-fd").unwrap();
    assert!(found.url.starts_with("unix:///proc/"), "{}", found.url);
    let via = NsmUrl::parse(&found.url).unwrap();
    let channel = sriov_nsm::dial(&via, Duration::from_secs(2)).await.unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    // A refresh on the same connection names the same inode.
    registry.register(registration.endpoint()).await.unwrap();
    assert_eq!(fx.nsmgr.registers()[1].url, sent[0].url);
    registry.unregister(registration.endpoint()).await.unwrap();
    assert_eq!(fx.nsmgr.sockets_received(), 0);
}

#[tokio::test]
async fn an_inode_url_without_its_fd_is_refused_by_the_registry() {
    let fx = Fixture::new().await;
    let client = fx.registry();
    let mut nse = common::registration("liar", fx.nsmgr.url(), LONG).endpoint();
    nse.url = "inode://4/4026531992".into();
    let err = client.register(nse).await.unwrap_err();
    assert!(
        matches!(&err, sriov_nsm::Error::Registry { status, .. } if status.code() == Code::InvalidArgument),
        "{err}"
    );
    assert!(fx.nsmgr.endpoint("liar").is_none());
}
