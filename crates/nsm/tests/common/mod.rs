//! One fixture for every test: a temp dir holding a fake NSM manager's
//! socket, and the forwarder's registration.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::path::PathBuf;
use std::time::Duration;

use sriov_nsm::fake::FakeNsmgr;
use sriov_nsm::{Backoff, NsmUrl, Registration, RegistryClient};

/// Generous bound on waits for background work, so a broken build fails
/// instead of hanging; tests never assert on how long things took.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub nsmgr: FakeNsmgr,
}

impl Fixture {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nsmgr = FakeNsmgr::start(dir.path().join("nsm/nsm.io.sock"))
            .await
            .unwrap();
        Self { dir, nsmgr }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A registry client with a short backoff so restarts are noticed
    /// soon. The forwarder socket of these tests is only a name, so its URL
    /// is sent as it is (fd passing has its own tests).
    pub fn registry(&self) -> RegistryClient {
        RegistryClient::new(self.nsmgr.url(), Duration::from_millis(200))
            .unwrap()
            .with_fd_passing(false)
            .with_backoff(Backoff::new(
                Duration::from_millis(20),
                Duration::from_millis(100),
            ))
    }

    /// Our registration, with the fake registry set to let it live
    /// `lifetime`.
    pub fn registration(&self, lifetime: Duration) -> Registration {
        self.nsmgr.set_expiration(lifetime);
        registration(
            "forwarder-sriov-node1",
            NsmUrl::Unix(self.path("forwarder.sock")),
            lifetime,
        )
    }
}

pub fn registration(name: &str, url: NsmUrl, lifetime: Duration) -> Registration {
    Registration {
        name: name.into(),
        network_service: "forwarder".into(),
        labels: [
            ("p2p".to_string(), "true".to_string()),
            ("node".to_string(), "node1".to_string()),
        ]
        .into(),
        url,
        lifetime,
    }
}

/// Polls `cond` until it holds or [`PATIENCE`] runs out.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
