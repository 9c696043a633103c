//! Our SPIFFE identity: the SVID source, mTLS configs and token signing.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, CommonState, ServerConfig};
use spiffe::{X509Source, X509SourceError, X509Svid};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Error;
use crate::token::{self, Claims};

/// The ALPN both sides offer: gRPC is HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// Our workload identity from the SPIFFE Workload API, kept current.
///
/// Cheap to clone (one `Arc`). The source follows the agent's stream, so a
/// rotated SVID or bundle is used by every handshake and token after it
/// arrives, with no restart.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: String,
    source: X509Source,
    /// The SPIFFE ID of the first SVID: what [`Identity::spiffe_id`] says
    /// while the source has none (withdrawn).
    first_id: String,
    // Built once: their resolvers and verifiers read the source live, and
    // each build spawns a watcher task.
    server: OnceLock<Arc<ServerConfig>>,
    client: OnceLock<Arc<ClientConfig>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("endpoint", &self.inner.endpoint)
            .field("spiffe_id", &self.spiffe_id())
            .finish_non_exhaustive()
    }
}

/// The authenticated peer of a TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The SPIFFE ID in the leaf certificate's URI SAN.
    pub spiffe_id: String,
    /// The leaf certificate, DER: what verifies the peer's path tokens.
    pub cert_der: Vec<u8>,
}

/// The peer of an established TLS connection, from its leaf certificate's
/// URI SAN; `None` before the handshake or without a SPIFFE ID.
pub fn peer_of(conn: &CommonState) -> Option<Peer> {
    let leaf = conn.peer_certificates()?.first()?;
    Some(Peer {
        spiffe_id: crate::cert::spiffe_id(leaf.as_ref())?,
        cert_der: leaf.as_ref().to_vec(),
    })
}

impl Identity {
    /// Connects to the Workload API at `endpoint` (`unix:///path` or
    /// `unix:/path`, as in `SPIFFE_ENDPOINT_SOCKET`) and waits up to
    /// `timeout` for the first SVID. Must run inside a tokio runtime: the
    /// source keeps a task that follows rotation.
    pub async fn from_workload_api(endpoint: &str, timeout: Duration) -> Result<Self, Error> {
        let timed_out = || Error::Timeout {
            endpoint: endpoint.to_owned(),
            timeout,
        };
        let build = X509Source::builder()
            .endpoint(endpoint)
            .initial_sync_timeout(timeout)
            .build();
        // The outer bound also covers what the builder does before its own
        // timer starts (resolving and dialing the endpoint).
        let source = match tokio::time::timeout(timeout, build).await {
            Err(_) | Ok(Err(X509SourceError::InitialSyncTimeout)) => return Err(timed_out()),
            Ok(Err(cause)) => {
                return Err(Error::WorkloadApi {
                    endpoint: endpoint.to_owned(),
                    cause,
                });
            }
            Ok(Ok(source)) => source,
        };
        let first_id = source
            .svid()
            .map_err(|cause| Error::NoSvid {
                endpoint: endpoint.to_owned(),
                cause,
            })?
            .spiffe_id()
            .to_string();
        tracing::info!(endpoint, spiffe_id = %first_id, "X.509 SVID received from the SPIFFE Workload API");
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint: endpoint.to_owned(),
                source,
                first_id,
                server: OnceLock::new(),
                client: OnceLock::new(),
            }),
        })
    }

    /// Our SPIFFE ID, from the current SVID.
    pub fn spiffe_id(&self) -> String {
        self.inner.source.try_svid().map_or_else(
            || self.inner.first_id.clone(),
            |s| s.spiffe_id().to_string(),
        )
    }

    /// The Workload API endpoint this identity follows.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    fn svid(&self) -> Result<Arc<X509Svid>, Error> {
        self.inner.source.svid().map_err(|cause| Error::NoSvid {
            endpoint: self.inner.endpoint.clone(),
            cause,
        })
    }

    /// Our current SVID's leaf certificate, DER.
    pub fn certificate_der(&self) -> Result<Vec<u8>, Error> {
        Ok(self.svid()?.leaf().as_bytes().to_vec())
    }

    /// A server config for mTLS: requires a client certificate that is an
    /// X.509 SVID of a trust domain in our bundle set (any SPIFFE ID of
    /// those: authorization is the policies' job), presents our current
    /// SVID, offers ALPN `h2`, TLS 1.2 and 1.3. Session resumption is off:
    /// rustls does not re-verify a resumed client, so a rotated-out bundle
    /// would still let it in.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        if let Some(config) = self.inner.server.get() {
            return Ok(Arc::clone(config));
        }
        let config = spiffe_rustls::mtls_server(self.inner.source.clone())
            .with_alpn_protocols([ALPN_H2])
            .build()
            .map_err(|cause| Error::TlsConfig {
                side: "server",
                spiffe_id: self.spiffe_id(),
                cause,
            })?;
        Ok(Arc::clone(
            self.inner.server.get_or_init(|| Arc::new(config)),
        ))
    }

    /// A client config for mTLS: presents our current SVID and accepts a
    /// server whose certificate is an X.509 SVID of a trust domain in our
    /// bundle set, whatever the TLS server name (SPIFFE verification, not
    /// host names); ALPN `h2`, TLS 1.2 and 1.3.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        if let Some(config) = self.inner.client.get() {
            return Ok(Arc::clone(config));
        }
        let config = spiffe_rustls::mtls_client(self.inner.source.clone())
            .with_alpn_protocols([ALPN_H2])
            .build()
            .map_err(|cause| Error::TlsConfig {
                side: "client",
                spiffe_id: self.spiffe_id(),
                cause,
            })?;
        Ok(Arc::clone(
            self.inner.client.get_or_init(|| Arc::new(config)),
        ))
    }

    /// Runs the server side of an mTLS handshake on `io` (any stream, e.g. a
    /// unix socket that also passes fds) and names the authenticated client.
    pub async fn accept<IO>(
        &self,
        io: IO,
    ) -> Result<(tokio_rustls::server::TlsStream<IO>, Peer), Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config()?);
        let stream = acceptor
            .accept(io)
            .await
            .map_err(|cause| self.handshake_error("server", cause))?;
        let peer = peer_of(stream.get_ref().1).ok_or_else(|| Error::NoPeerId {
            spiffe_id: self.spiffe_id(),
        })?;
        Ok((stream, peer))
    }

    /// Runs the client side of an mTLS handshake on `io`, sending
    /// `server_name` as SNI (`localhost` or a host name; it is not what is
    /// verified), and names the authenticated server.
    pub async fn connect<IO>(
        &self,
        io: IO,
        server_name: &str,
    ) -> Result<(tokio_rustls::client::TlsStream<IO>, Peer), Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let name =
            ServerName::try_from(server_name.to_owned()).map_err(|cause| Error::ServerName {
                server_name: server_name.to_owned(),
                cause,
            })?;
        let connector = tokio_rustls::TlsConnector::from(self.client_config()?);
        let stream = connector
            .connect(name, io)
            .await
            .map_err(|cause| self.handshake_error("client", cause))?;
        let peer = peer_of(stream.get_ref().1).ok_or_else(|| Error::NoPeerId {
            spiffe_id: self.spiffe_id(),
        })?;
        Ok((stream, peer))
    }

    fn handshake_error(&self, side: &'static str, cause: std::io::Error) -> Error {
        Error::Handshake {
            side,
            spiffe_id: self.spiffe_id(),
            cause,
        }
    }

    /// Signs an NSM path token as NSM's `spiffejwt` does: ES256 with our
    /// SVID's key, `sub` our SPIFFE ID, `aud` `[audience]` when given, `exp`
    /// the earlier of now + `lifetime` and our certificate's expiry, in whole
    /// seconds. Returns the token and that expiry (for the path segment's
    /// `expires`). With a TLS peer, prefer [`Identity::sign_token_for`].
    pub fn sign_token(
        &self,
        audience: Option<&str>,
        lifetime: Duration,
    ) -> Result<(String, SystemTime), Error> {
        self.sign(audience, None, lifetime)
    }

    /// [`Identity::sign_token`] for the TLS peer we talk to: `aud` its SPIFFE
    /// ID, and `exp` also capped by its certificate's expiry, as NSM does
    /// when the gRPC context has a TLS peer.
    pub fn sign_token_for(
        &self,
        peer: &Peer,
        lifetime: Duration,
    ) -> Result<(String, SystemTime), Error> {
        let peer_expiry =
            crate::cert::not_after(&peer.cert_der).map_err(|cause| Error::Certificate {
                spiffe_id: peer.spiffe_id.clone(),
                cause,
            })?;
        self.sign(Some(&peer.spiffe_id), Some(peer_expiry), lifetime)
    }

    fn sign(
        &self,
        audience: Option<&str>,
        cap: Option<i64>,
        lifetime: Duration,
    ) -> Result<(String, SystemTime), Error> {
        let svid = self.svid()?;
        let spiffe_id = svid.spiffe_id().to_string();
        let own_expiry =
            crate::cert::not_after(svid.leaf().as_bytes()).map_err(|cause| Error::Certificate {
                spiffe_id: spiffe_id.clone(),
                cause,
            })?;
        let wanted = token::unix_seconds(SystemTime::now())
            .saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
        let exp = [Some(wanted), Some(own_expiry), cap]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(wanted);
        let claims = Claims {
            sub: spiffe_id.clone(),
            aud: audience.map(str::to_owned).into_iter().collect(),
            exp,
            iat: None,
            iss: None,
        };
        let token = token::sign(&claims, svid.private_key().as_bytes())
            .map_err(|cause| Error::TokenKey { spiffe_id, cause })?;
        let expiry = UNIX_EPOCH + Duration::from_secs(u64::try_from(exp).unwrap_or(0));
        Ok((token, expiry))
    }
}
