//! SPIFFE identity for the forwarder's secure mode (issue #15): what lets it
//! join a real NSM cluster (nsmgr, registry-k8s, SPIRE).
//!
//! - [`Identity`] holds our X.509 SVID from the SPIFFE Workload API
//!   (`SPIFFE_ENDPOINT_SOCKET`) and follows its rotation;
//! - it builds the rustls mTLS configs (peers must hold an SVID of a trust
//!   domain in our bundle set; host names are not checked) and runs
//!   handshakes over any stream, naming the [`Peer`];
//! - it signs NSM path tokens (ES256 JWTs with the SVID key), and
//!   [`token`] reads and verifies them.
//!
//! Feature `testing` adds `testing::FakeWorkloadApi`, a Workload API
//! stand-in with its own CA.
//!
//! ```no_run
//! # async fn run(io: tokio::net::UnixStream) -> Result<(), sriov_identity::Error> {
//! use std::time::Duration;
//! use sriov_identity::Identity;
//!
//! let me = Identity::from_workload_api(
//!     "unix:///run/spire/sockets/agent.sock",
//!     Duration::from_secs(30),
//! )
//! .await?;
//! let (tls, peer) = me.connect(io, "localhost").await?;
//! let (token, expires) = me.sign_token_for(&peer, Duration::from_secs(600))?;
//! # let _ = (tls, token, expires);
//! # Ok(())
//! # }
//! ```

mod cert;
mod error;
mod identity;
pub mod token;

#[cfg(feature = "testing")]
pub mod testing;

#[doc(hidden)]
pub mod fuzzing;

pub use error::Error;
pub use identity::{Identity, Peer, peer_of};
pub use token::{Claims, TokenError};
