#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `incoming_with`: what an upgrade learns reaches handlers; a stalled
//! upgrade does not hold its connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sriov_authority::{ConnInfo, incoming_with, incoming_with_timeout};
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};

/// What the test's upgrade stores for the handler.
#[derive(Clone, Debug)]
struct Tag(String);

/// A gRPC service that answers every call with the `Tag` its connection
/// carries, as a response header.
#[derive(Clone)]
struct Echo;

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

impl tower::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let seen = req
            .extensions()
            .get::<ConnInfo>()
            .and_then(|i| i.get::<Tag>())
            .map_or("none".to_string(), |t| t.0.clone());
        let resp = http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "0")
            .header("x-seen", seen)
            .body(tonic::body::Body::empty())
            .unwrap();
        std::future::ready(Ok(resp))
    }
}

#[tokio::test]
async fn what_the_upgrade_learnt_reaches_the_handler() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let incoming = incoming_with(
        listener,
        std::future::pending(),
        |s: UnixStream| async move {
            let mut ext = http::Extensions::new();
            ext.insert(Tag(format!("peer-{}", s.peer_cred()?.pid().unwrap_or(0))));
            Ok((s, ext))
        },
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Echo)
            .serve_with_incoming(incoming),
    );
    let answer = sriov_authority::testing::raw_call(&path, "localhost", "/test.Echo/Call", b"")
        .await
        .unwrap();
    assert_eq!(answer.header("grpc-status"), Some(&b"0"[..]));
    let want = format!("peer-{}", std::process::id());
    assert_eq!(answer.header("x-seen"), Some(want.as_bytes()));
}

/// Counts its drops: the stalled upgrade must be dropped, not leaked.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_stalled_upgrade_is_dropped_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let counter = dropped.clone();
    let incoming = incoming_with_timeout(
        listener,
        std::future::pending(),
        Duration::from_millis(100),
        move |s: UnixStream| {
            let guard = Dropped(counter.clone());
            async move {
                let _held = (s, guard);
                std::future::pending::<std::io::Result<(UnixStream, http::Extensions)>>().await
            }
        },
    );
    let mut client = UnixStream::connect(&path).await.unwrap();
    // The server ends the connection: the read sees EOF (a hang here is the bug).
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(60), client.read(&mut byte))
        .await
        .expect("the stalled connection was never dropped")
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    drop(incoming);
}
