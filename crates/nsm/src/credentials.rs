//! NSM's per-RPC credentials: the token we sign for the hop we call, sent
//! beside every call as the Go SDK's `token.NewPerRPCCredentials` sends
//! it (`nsm-client-token` and `nsm-client-token-expires` headers). The
//! hop we call puts it in our segment of its path (its `updatetoken`), so
//! its audience must be that hop's SPIFFE ID: the identity the mTLS
//! handshake of the channel authenticated, kept in a [`ServerIdentity`]
//! the dialer fills on every (re)connection.

use std::sync::{Arc, PoisonError, RwLock};

use futures::future::BoxFuture;

use sriov_chain::caller::{PeerIdentity, TOKEN_EXPIRES_HEADER, TOKEN_HEADER, format_expiry};
use sriov_chain::elements::updatetoken::TokenSigner;
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

/// A handshake with the channel's server made only to learn who it is,
/// recording it in the identity it is given.
pub(crate) type Probe =
    Arc<dyn Fn(ServerIdentity) -> BoxFuture<'static, std::io::Result<()>> + Send + Sync>;

/// The identity of the server a channel is connected to, as its last
/// mTLS handshake showed it; shared by the channel's connector (which
/// writes it) and the calls made on it (which read it).
///
/// A lazy channel connects during its first call, after that call's
/// headers are made; the token in them must already name the server (the
/// Go SDK dials with `WithBlock`, so its first call knows its peer). So
/// the first call that finds the identity unknown runs a probe handshake
/// through the channel's own connector.
#[derive(Clone, Default)]
pub struct ServerIdentity {
    slot: Arc<RwLock<Option<PeerIdentity>>>,
    probe: Option<Probe>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("known", &self.get())
            .finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// An identity learned by `probe` when no connection told it yet.
    pub(crate) fn with_probe(probe: Probe) -> Self {
        Self {
            slot: Arc::default(),
            probe: Some(probe),
        }
    }

    /// Records the identity a handshake authenticated.
    pub fn set(&self, peer: PeerIdentity) {
        *self.slot.write().unwrap_or_else(PoisonError::into_inner) = Some(peer);
    }

    /// The last identity recorded, if any connection was made.
    pub fn get(&self) -> Option<PeerIdentity> {
        self.slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The identity, running the probe handshake first when none is known
    /// (a failed probe leaves it unknown: the call then fails on its own).
    pub async fn learn(&self) -> Option<PeerIdentity> {
        if let Some(known) = self.get() {
            return Some(known);
        }
        let record = Self {
            slot: self.slot.clone(),
            probe: None,
        };
        if let Some(probe) = &self.probe
            && let Err(e) = probe(record).await
        {
            tracing::debug!(error = %e, "probe handshake failed");
        }
        self.get()
    }
}

/// Signs a token for each call on one channel.
#[derive(Clone)]
pub struct CallCredentials {
    signer: Arc<dyn TokenSigner>,
    server: ServerIdentity,
}

impl std::fmt::Debug for CallCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCredentials")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl CallCredentials {
    /// Tokens from `signer`, for the server `server` names.
    pub fn new(signer: Arc<dyn TokenSigner>, server: ServerIdentity) -> Self {
        Self { signer, server }
    }

    /// The channel's server identity.
    pub fn server(&self) -> &ServerIdentity {
        &self.server
    }

    /// Puts a fresh token for the channel's server in `request`'s headers.
    /// A token that cannot be made fails the call (`UNAVAILABLE`) rather
    /// than sending it without one, which the server's policies refuse.
    pub async fn apply<T>(&self, request: &mut tonic::Request<T>) -> Result<(), Status> {
        self.server.learn().await;
        self.sign_into(request.metadata_mut())
    }

    /// [`CallCredentials::apply`] for the server already known (no probe):
    /// for interceptors, which cannot wait, on an eagerly dialed channel.
    pub fn sign_into(&self, md: &mut MetadataMap) -> Result<(), Status> {
        let signed = self
            .signer
            .sign(self.server.get().as_ref())
            .map_err(|why| Status::unavailable(format!("cannot sign the call's token: {why}")))?;
        let token = MetadataValue::try_from(signed.token.as_str())
            .map_err(|_| Status::internal("our token is not a valid header value"))?;
        let expires = MetadataValue::try_from(format_expiry(signed.expires).as_str())
            .map_err(|_| Status::internal("our token's expiry is not a valid header value"))?;
        md.insert(TOKEN_HEADER, token);
        md.insert(TOKEN_EXPIRES_HEADER, expires);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sriov_chain::caller::{Caller, SignedToken};
    use std::time::{Duration, SystemTime};

    struct ForAudience;
    impl TokenSigner for ForAudience {
        fn sign(&self, peer: Option<&PeerIdentity>) -> Result<SignedToken, String> {
            Ok(SignedToken {
                token: format!("for:{}", peer.map_or("-", |p| p.spiffe_id.as_str())),
                expires: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            })
        }
    }

    #[tokio::test]
    async fn the_token_names_the_server_and_reads_back_as_a_caller_token() {
        let server = ServerIdentity::default();
        let creds = CallCredentials::new(Arc::new(ForAudience), server.clone());
        let mut before = tonic::Request::new(());
        creds.apply(&mut before).await.unwrap();
        assert_eq!(before.metadata().get(TOKEN_HEADER).unwrap(), "for:-");

        server.set(PeerIdentity {
            spiffe_id: "spiffe://example.org/nsmgr".into(),
            cert_der: Arc::from(&b"c"[..]),
        });
        let mut req = tonic::Request::new(());
        creds.apply(&mut req).await.unwrap();
        let caller = Caller::from_call(None, req.metadata());
        let token = caller.token.unwrap();
        assert_eq!(token.token, "for:spiffe://example.org/nsmgr");
        assert_eq!(
            token.expires,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
        );
    }

    #[tokio::test]
    async fn an_unknown_server_is_learned_by_the_probe_before_the_first_token() {
        let probing = ServerIdentity::with_probe(Arc::new(|slot: ServerIdentity| {
            Box::pin(async move {
                slot.set(PeerIdentity {
                    spiffe_id: "spiffe://example.org/probed".into(),
                    cert_der: Arc::from(&b"c"[..]),
                });
                Ok(())
            })
        }));
        let creds = CallCredentials::new(Arc::new(ForAudience), probing);
        let mut req = tonic::Request::new(());
        creds.apply(&mut req).await.unwrap();
        assert_eq!(
            req.metadata().get(TOKEN_HEADER).unwrap(),
            "for:spiffe://example.org/probed"
        );
    }
}
