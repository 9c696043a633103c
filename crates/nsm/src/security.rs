//! How NSM's sockets are secured: plaintext (`NSM_INSECURE=true`), or
//! mutual TLS with the forwarder's SPIFFE SVID, as the Go forwarder's
//! `grpcfd.TransportCredentials(credentials.NewTLS(tlsconfig.MTLS…(source,
//! source, tlsconfig.AuthorizeAny())))`: any peer with an SVID of a trust
//! domain in our bundle is authenticated; what it may do is decided by the
//! policies.
//!
//! TLS runs inside fd passing, as grpcfd wraps the TLS credentials: the
//! fds ride on the unix socket beside the TLS records, so a peer sends its
//! namespaces by fd over an mTLS connection. The peer a handshake
//! authenticated reaches handlers as a [`PeerIdentity`] in the
//! connection's `sriov_authority::ConnInfo`, and a client's in the
//! channel's [`ServerIdentity`].

use std::io;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use sriov_chain::caller::{PeerIdentity, SignedToken};
use sriov_chain::elements::updatetoken::TokenSigner;
use sriov_grpcfd::FdStream;
use sriov_identity::{Identity, Peer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

use crate::credentials::ServerIdentity;

/// The `:authority`/SNI our client handshakes send: SVIDs are verified by
/// SPIFFE ID, never by host name.
const SERVER_NAME: &str = "localhost";

/// How a socket is served or dialed.
#[derive(Debug, Clone, Default)]
pub enum Security {
    /// Plaintext gRPC (`NSM_INSECURE=true`, development only).
    #[default]
    Plaintext,
    /// Mutual TLS with this identity's SVID.
    Mtls(Identity),
}

/// An established connection, plaintext or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connection of either kind, for tonic's connectors.
pub(crate) type BoxIo = Pin<Box<dyn Io>>;

/// The chain's view of a peer a handshake authenticated.
pub fn peer_identity(peer: Peer) -> PeerIdentity {
    PeerIdentity {
        spiffe_id: peer.spiffe_id,
        cert_der: peer.cert_der.into(),
    }
}

impl Security {
    /// The server side of an accepted connection: fds received go to its
    /// table, and with mTLS the handshake must succeed before any byte
    /// reaches gRPC. The extensions carry the table and the peer.
    pub(crate) async fn accept(&self, stream: UnixStream) -> io::Result<(BoxIo, http::Extensions)> {
        let stream = FdStream::new(stream);
        let mut extensions = http::Extensions::new();
        extensions.insert(stream.table());
        match self {
            Self::Plaintext => Ok((Box::pin(stream), extensions)),
            Self::Mtls(identity) => {
                let (tls, peer) = identity.accept(stream).await.map_err(io::Error::other)?;
                tracing::debug!(peer = %peer.spiffe_id, "mTLS connection accepted");
                extensions.insert(peer_identity(peer));
                Ok((Box::pin(tls), extensions))
            }
        }
    }

    /// The client side of a dialed connection: with mTLS, the handshake,
    /// whose authenticated server is recorded in `server`.
    pub(crate) async fn connect(
        &self,
        stream: FdStream,
        server: &ServerIdentity,
    ) -> io::Result<BoxIo> {
        match self {
            Self::Plaintext => Ok(Box::pin(stream)),
            Self::Mtls(identity) => {
                let (tls, peer) = identity
                    .connect(stream, SERVER_NAME)
                    .await
                    .map_err(io::Error::other)?;
                server.set(peer_identity(peer));
                Ok(Box::pin(tls))
            }
        }
    }

    /// Whether this is mutual TLS.
    pub fn is_mtls(&self) -> bool {
        matches!(self, Self::Mtls(_))
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
