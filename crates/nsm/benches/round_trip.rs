//! Figures for the transport alone, against the in-process fake NSM
//! manager over a unix socket: next-hop Request+Close latency (p50, p99),
//! 256 concurrent Requests, and time to a first registration.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use sriov_api::nsm::connection::{Connection, Path, PathSegment};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_chain::NextHop;
use sriov_nsm::fake::FakeNsmgr;
use sriov_nsm::{DEFAULT_DIAL_TIMEOUT, GrpcNextHop, NsmUrl, Registration, RegistryClient};

fn request(id: &str) -> NetworkServiceRequest {
    NetworkServiceRequest {
        connection: Some(Connection {
            id: id.into(),
            network_service: "forwarder".into(),
            path: Some(Path {
                index: 0,
                path_segments: vec![PathSegment {
                    name: "forwarder-sriov".into(),
                    id: id.into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        mechanism_preferences: vec![],
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let nsmgr = FakeNsmgr::start(dir.path().join("nsm.io.sock"))
        .await
        .unwrap();

    let started = Instant::now();
    // The forwarder socket here is only a name: nothing to send by fd.
    let registry = RegistryClient::new(nsmgr.url(), DEFAULT_DIAL_TIMEOUT)
        .unwrap()
        .with_fd_passing(false);
    let handle = registry.keep_registered(Registration {
        name: "bench-forwarder".into(),
        network_service: "forwarder".into(),
        labels: Default::default(),
        url: NsmUrl::Unix(dir.path().join("fwd.sock")),
        lifetime: Duration::from_secs(600),
    });
    handle.registered().await.unwrap();
    println!(
        "first registration: {:?} from client creation",
        started.elapsed()
    );

    let hop = GrpcNextHop::new(nsmgr.url(), DEFAULT_DIAL_TIMEOUT).unwrap();
    // Warm the connection up.
    hop.request(request("warm")).await.unwrap();
    hop.close(request("warm").connection.unwrap())
        .await
        .unwrap();

    let rounds = 2000;
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let id = format!("c{i}");
        let t = Instant::now();
        let conn = hop.request(request(&id)).await.unwrap();
        hop.close(conn).await.unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "next hop Request+Close over unix socket, {rounds} rounds: p50 {:?}, p99 {:?}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );

    let t = Instant::now();
    let tasks: Vec<_> = (0..256)
        .map(|i| {
            let hop = hop.clone();
            tokio::spawn(async move { hop.request(request(&format!("p{i}"))).await })
        })
        .collect();
    let mut errors = 0;
    for task in tasks {
        if !matches!(task.await, Ok(Ok(_))) {
            errors += 1;
        }
    }
    println!(
        "256 concurrent next-hop Requests: {:?}, {errors} errors",
        t.elapsed()
    );

    handle.shutdown().await.unwrap();
}
