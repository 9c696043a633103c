//! The forwarder's side of NSM's gRPC: dialing and serving unix sockets,
//! the next hop the chain's `connect` element sends requests to, and the
//! registry the forwarder registers itself in and finds endpoints through.
//!
//! Everything goes through the NSM manager at `NSM_CONNECT_TO` (usually
//! `unix:///var/lib/networkservicemesh/nsm.io.sock`):
//!
//! - [`NsmUrl`] parses `unix:///path`, `tcp://host:port` and `host:port`;
//!   [`dial`]/[`dial_lazy`] open tonic channels (each connection attempt
//!   bounded by `NSM_DIAL_TIMEOUT`, [`DEFAULT_DIAL_TIMEOUT`] = 50 ms), and
//!   [`listen_unix`] binds the forwarder's `NSM_LISTEN_ON` socket.
//! - [`GrpcNextHop`] implements [`sriov_chain::NextHop`] over
//!   `networkservice.NetworkService`, offering the next hop only NOOP
//!   mechanisms as the Go forwarder does.
//! - [`RegistryClient`] implements [`sriov_chain::EndpointFinder`] over
//!   `registry.NetworkServiceEndpointRegistry.Find` and keeps the
//!   forwarder registered.
//! - `fake` (feature `testing`, never in a production build) is a fake
//!   NSM manager (registry plus next hop) for tests, also served by the
//!   `fake-nsmgr` binary, which prints each call it
//!   receives on one line (`fake-nsmgr /tmp/nsm.io.sock --src-ip
//!   172.16.1.2/31` answers Requests with that client address).
//!
//! `cargo bench -p sriov-nsm` prints the transport's own figures against
//! the fake: next-hop Request+Close p50/p99, 256 concurrent Requests, time
//! to the first registration.
//!
//! # Lifecycle of the registration
//!
//! [`RegistryClient::keep_registered`] spawns a task that:
//!
//! 1. **Registers** the endpoint: name `NSM_NAME`, `network_service_names
//!    = [NSM_NSNAME]`, `network_service_labels = {NSM_NSNAME: NSM_LABELS}`,
//!    `url = NSM_LISTEN_ON` (`unix:///path`, the Go SDK's target form) and
//!    no `expiration_time`: the registry chooses it, as for the Go
//!    forwarder. The registry path travels as the `path` header
//!    ([`grpcmetadata`]).
//!    Failures (registry absent, refusing) are retried with exponential
//!    [`Backoff`]; [`RegistrationState::Retrying`] says why.
//! 2. **Refreshes** when a third of the lifetime is left (the Go SDK's
//!    refresh client's point), using the expiry the registry answered
//!    (`NSM_MAX_TOKEN_LIFETIME` from now if it answered none).
//! 3. **Watches** its own entry with a `Find(watch: true)` stream. The
//!    stream breaking (the registry went away) or reporting the entry
//!    deleted starts re-registration at once, with backoff until the
//!    registry is back, instead of waiting for the next refresh. A
//!    registry that cannot watch leaves the refresh timer in charge.
//! 4. **Unregisters** on [`RegistrationHandle::shutdown`]. Dropping the
//!    handle only stops the task; the entry then expires by itself.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use sriov_nsm::fake::FakeNsmgr;
//! use sriov_nsm::{NsmUrl, Registration, RegistryClient, DEFAULT_DIAL_TIMEOUT};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let nsmgr = FakeNsmgr::start(dir.path().join("nsm.io.sock")).await.unwrap();
//!
//! // The socket named below does not exist here, so it cannot go by fd.
//! let registry = RegistryClient::new(nsmgr.url(), DEFAULT_DIAL_TIMEOUT)
//!     .unwrap()
//!     .with_fd_passing(false);
//! let handle = registry.keep_registered(Registration {
//!     name: "forwarder-sriov-node1".into(),
//!     network_service: "forwarder".into(),
//!     labels: [("p2p".to_string(), "true".to_string())].into(),
//!     url: NsmUrl::parse("unix:///var/lib/networkservicemesh/forwarder.sock").unwrap(),
//!     lifetime: Duration::from_secs(600),
//! });
//! handle.registered().await.unwrap();
//! assert!(nsmgr.endpoint("forwarder-sriov-node1").is_some());
//!
//! handle.shutdown().await.unwrap();
//! assert!(nsmgr.endpoint("forwarder-sriov-node1").is_none());
//! # });
//! ```

// This crate reads client, kubelet or file input: a panic here is a denial
// of service of a node agent, so the panicking shortcuts are refused.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod credentials;
mod error;
#[cfg(feature = "testing")]
pub mod fake;
pub mod grpcmetadata;
pub mod mechanism;
mod next_hop;
mod registry;
pub mod security;
mod transport;

pub use error::Error;
pub use next_hop::GrpcNextHop;
pub use registry::{Registration, RegistrationHandle, RegistrationState, RegistryClient};
pub use sriov_api::Backoff;
pub use sriov_config::{NsmUrl, UrlError};
pub use transport::{
    ChannelFds, DEFAULT_DIAL_TIMEOUT, Dialed, dial, dial_lazy, dial_lazy_secure,
    dial_lazy_with_fds, dial_secure, dial_with_fds, fds_of, listen_unix, listen_unix_for_group,
    listen_unix_secure,
};
