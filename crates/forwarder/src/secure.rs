//! Secure mode (the default): the forwarder's SVID from the SPIFFE
//! Workload API, and the signer of its path tokens.
//!
//! As the Go forwarder's main.go ("phase 5: retrieving svid"), start-up
//! waits for the first SVID before serving anything, but for at most
//! [`SVID_WAIT`]: a node whose SPIRE agent never answers shows a start-up
//! error naming the socket instead of a forwarder that hangs.

use std::time::{Duration, SystemTime};

use sriov_chain::caller::{PeerIdentity, SignedToken};
use sriov_chain::elements::updatetoken::TokenSigner;
use sriov_identity::{Identity, Peer};

use crate::StartError;

/// How long start-up waits for the first SVID.
pub const SVID_WAIT: Duration = Duration::from_secs(60);

/// Connects to the Workload API at `endpoint` and waits for the first SVID.
pub async fn fetch_identity(endpoint: &str, wait: Duration) -> Result<Identity, StartError> {
    tracing::info!(
        endpoint,
        wait_s = wait.as_secs(),
        "waiting for our SVID from the SPIFFE Workload API (check the SPIRE agent's log if this \
         is the last line)"
    );
    let identity = Identity::from_workload_api(endpoint, wait)
        .await
        .map_err(StartError::Identity)?;
    tracing::info!(spiffe_id = %identity.spiffe_id(), "SVID received");
    Ok(identity)
}

/// The chain's view of a peer the transport authenticated.
pub fn peer_identity(peer: Peer) -> PeerIdentity {
    PeerIdentity {
        spiffe_id: peer.spiffe_id,
        cert_der: peer.cert_der.into(),
    }
}

/// Signs path tokens with the SVID's key, valid for at most
/// `NSM_MAX_TOKEN_LIFETIME` (`spiffejwt.TokenGeneratorFunc`).
#[derive(Debug, Clone)]
pub struct SvidSigner {
    identity: Identity,
    lifetime: Duration,
}

impl SvidSigner {
    /// Tokens from `identity`'s current SVID, living `lifetime` at most.
    pub fn new(identity: Identity, lifetime: Duration) -> Self {
        Self { identity, lifetime }
    }
}

impl TokenSigner for SvidSigner {
    fn sign(&self, peer: Option<&PeerIdentity>) -> Result<SignedToken, String> {
        let signed: Result<(String, SystemTime), _> = match peer {
            Some(p) => self.identity.sign_token_for(
                &Peer {
                    spiffe_id: p.spiffe_id.clone(),
                    cert_der: p.cert_der.to_vec(),
                },
                self.lifetime,
            ),
            None => self.identity.sign_token(None, self.lifetime),
        };
        signed
            .map(|(token, expires)| SignedToken { token, expires })
            .map_err(|e| e.to_string())
    }
}
