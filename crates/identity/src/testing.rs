//! A SPIFFE Workload API stand-in for tests (feature `testing`): the real
//! protocol on a unix socket, certificates minted with rcgen, rotation on
//! demand, and rustls configs for test peers with or without a valid SVID.

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
    SerialNumber,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tonic::{Request, Response, Status};

/// The Workload API messages, server and client, generated from our
/// hand-written `proto/spiffe/workload.proto` (for tests that speak it
/// directly, e.g. without the security header).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    // Upstream's proto has no package: prost names the file `_`.
    tonic::include_proto!("_");
}

use pb::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use proto as pb;

/// The trust domain the fake serves.
pub const TRUST_DOMAIN: &str = "example.org";

/// How long minted SVIDs live, like SPIRE's default X.509 SVID TTL.
pub const SVID_TTL: Duration = Duration::from_secs(3600);

/// What the fake refuses with when a call lacks `workload.spiffe.io: true`
/// (SPIRE's agent answers InvalidArgument with this message).
pub const MISSING_HEADER: &str = "security header missing from request";

/// An error of the fake Workload API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FakeError {
    /// rcgen could not mint a certificate.
    #[error("cannot mint a certificate for {spiffe_id}: {cause}")]
    Mint {
        /// The SPIFFE ID (or trust domain, for a CA) being minted.
        spiffe_id: String,
        /// What rcgen said.
        cause: rcgen::Error,
    },
    /// The socket could not be bound.
    #[error("cannot listen on {path}: {cause}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// rustls refused the minted material.
    #[error("cannot build a TLS config for {spiffe_id}: {cause}")]
    Tls {
        /// Whose SVID.
        spiffe_id: String,
        /// What rustls said.
        cause: rustls::Error,
    },
}

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(trust_domain: &str, serial: u64) -> Result<Self, FakeError> {
        let mint_error = |cause| FakeError::Mint {
            spiffe_id: format!("spiffe://{trust_domain}"),
            cause,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(mint_error)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "SPIFFE");
        name.push(DnType::CommonName, format!("{trust_domain} fake CA"));
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{trust_domain}")
                .try_into()
                .map_err(mint_error)?,
        )];
        params.serial_number = Some(SerialNumber::from(serial));
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(mint_error)?;
        Ok(Self { issuer })
    }

    fn der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    fn mint(&self, spiffe_id: &str, serial: u64, bundle: Vec<u8>) -> Result<MintedSvid, FakeError> {
        let mint_error = |cause| FakeError::Mint {
            spiffe_id: spiffe_id.to_owned(),
            cause,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(mint_error)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "SPIRE");
        params.distinguished_name = name;
        // X.509-SVID: one URI SAN, not a CA, digitalSignature, both TLS ends.
        params.subject_alt_names = vec![SanType::URI(
            spiffe_id.to_owned().try_into().map_err(mint_error)?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + SVID_TTL;
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.issuer).map_err(mint_error)?;
        Ok(MintedSvid {
            spiffe_id: spiffe_id.to_owned(),
            cert_chain_der: vec![cert.der().to_vec()],
            key_der: key.serialize_der(),
            bundle_der: bundle,
        })
    }
}

/// An X.509 SVID minted by the fake, with what a test peer needs to act
/// with it.
#[derive(Clone)]
pub struct MintedSvid {
    /// Its SPIFFE ID.
    pub spiffe_id: String,
    /// DER certificates, the leaf first.
    pub cert_chain_der: Vec<Vec<u8>>,
    /// The private key, PKCS#8 DER (EC P-256).
    pub key_der: Vec<u8>,
    /// The fake's trust domain CA, DER: what this peer checks the other
    /// side against (also for an untrusted SVID, so that only the other
    /// side has a reason to refuse).
    pub bundle_der: Vec<u8>,
}

impl fmt::Debug for MintedSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial())
            .finish_non_exhaustive()
    }
}

impl MintedSvid {
    /// The leaf certificate, DER.
    pub fn leaf_der(&self) -> &[u8] {
        self.cert_chain_der.first().map_or(&[], Vec::as_slice)
    }

    /// The leaf's serial number.
    pub fn serial(&self) -> Vec<u8> {
        serial_of(self.leaf_der()).unwrap_or_default()
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.cert_chain_der
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect()
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    fn tls_error(&self, cause: rustls::Error) -> FakeError {
        FakeError::Tls {
            spiffe_id: self.spiffe_id.clone(),
            cause,
        }
    }

    /// A client config presenting this SVID and accepting a server whose
    /// certificate chains to the fake's CA, whatever its name.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, FakeError> {
        let config = client_builder(&self.bundle_der)
            .map_err(|e| self.tls_error(e))?
            .with_client_auth_cert(self.chain(), self.key())
            .map_err(|e| self.tls_error(e))?;
        Ok(Arc::new(with_h2(config)))
    }

    /// A server config presenting this SVID and requiring a client
    /// certificate that chains to the fake's CA.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, FakeError> {
        let roots = roots(&self.bundle_der).map_err(|e| self.tls_error(e))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| self.tls_error(rustls::Error::General(e.to_string())))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.tls_error(e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain(), self.key())
            .map_err(|e| self.tls_error(e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A certificate's serial number, big-endian bytes.
pub fn serial_of(cert_der: &[u8]) -> Option<Vec<u8>> {
    crate::cert::serial(cert_der)
}

// ring, not aws-lc-rs (which needs cmake to build); rustls deprecates ring's
// provider only for lacking post-quantum key exchange.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_der: &[u8]) -> Result<Arc<RootCertStore>, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    Ok(Arc::new(roots))
}

fn with_h2(mut config: ClientConfig) -> ClientConfig {
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

fn client_builder(
    ca_der: &[u8],
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, rustls::Error> {
    let webpki = WebPkiServerVerifier::builder_with_provider(roots(ca_der)?, provider())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyName(webpki))))
}

/// Verifies the chain like WebPKI but not the name: SVIDs carry a SPIFFE
/// ID, not the host name a test dials.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // WebPKI checks the name only after the chain, so a name error
        // means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

struct Shared {
    ca: Arc<Ca>,
    /// Another CA of the same trust domain name, in no bundle we serve.
    foreign: Arc<Ca>,
    serials: Arc<AtomicU64>,
    current: Mutex<MintedSvid>,
    updates: watch::Sender<u64>,
}

impl Shared {
    fn next_serial(&self) -> u64 {
        self.serials.fetch_add(1, Ordering::Relaxed)
    }

    fn current(&self) -> MintedSvid {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn x509_svid_response(&self) -> pb::X509svidResponse {
        let svid = self.current();
        pb::X509svidResponse {
            svids: vec![pb::X509svid {
                spiffe_id: svid.spiffe_id.clone(),
                x509_svid: svid.cert_chain_der.concat(),
                x509_svid_key: svid.key_der.clone(),
                bundle: self.ca.der(),
                hint: String::new(),
            }],
            crl: Vec::new(),
            federated_bundles: Default::default(),
        }
    }

    fn x509_bundles_response(&self) -> pb::X509BundlesResponse {
        pb::X509BundlesResponse {
            crl: Vec::new(),
            bundles: [(format!("spiffe://{TRUST_DOMAIN}"), self.ca.der())]
                .into_iter()
                .collect(),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Service {
    type FetchX509SVIDStream = BoxStream<pb::X509svidResponse>;
    type FetchX509BundlesStream = BoxStream<pb::X509BundlesResponse>;
    type FetchJWTBundlesStream = BoxStream<pb::JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        _request: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let shared = Arc::clone(&self.shared);
        // The current SVID at once, then again after every rotation.
        let stream = WatchStream::new(self.shared.updates.subscribe())
            .map(move |_| Ok(shared.x509_svid_response()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_x509_bundles(
        &self,
        _request: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let shared = Arc::clone(&self.shared);
        let stream = WatchStream::new(self.shared.updates.subscribe())
            .map(move |_| Ok(shared.x509_bundles_response()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_jwtsvid(
        &self,
        _request: Request<pb::JwtsvidRequest>,
    ) -> Result<Response<pb::JwtsvidResponse>, Status> {
        Err(Status::unimplemented("the fake agent serves X.509 only"))
    }

    async fn fetch_jwt_bundles(
        &self,
        _request: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        Err(Status::unimplemented("the fake agent serves X.509 only"))
    }

    async fn validate_jwtsvid(
        &self,
        _request: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        Err(Status::unimplemented("the fake agent serves X.509 only"))
    }
}

fn require_header(request: Request<()>) -> Result<Request<()>, Status> {
    match request.metadata().get("workload.spiffe.io") {
        Some(v) if v == "true" => Ok(request),
        _ => Err(Status::invalid_argument(MISSING_HEADER)),
    }
}

/// The SPIFFE Workload API on a unix socket, as a SPIRE agent serves it to
/// one workload. Stops when dropped.
pub struct FakeWorkloadApi {
    socket: PathBuf,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl fmt::Debug for FakeWorkloadApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeWorkloadApi")
            .field("socket", &self.socket)
            .field("svid", &self.shared.current())
            .finish_non_exhaustive()
    }
}

impl FakeWorkloadApi {
    /// Serves the Workload API on `socket_path` (created; its directory must
    /// exist) for a workload with `spiffe_id` of trust domain
    /// [`TRUST_DOMAIN`]. Must run inside a tokio runtime.
    pub fn start(socket_path: impl AsRef<Path>, spiffe_id: &str) -> Result<Self, FakeError> {
        let ca = Arc::new(Ca::new(TRUST_DOMAIN, 1)?);
        let foreign = Arc::new(Ca::new(TRUST_DOMAIN, 2)?);
        Self::serve(
            socket_path.as_ref(),
            spiffe_id,
            ca,
            foreign,
            Arc::new(AtomicU64::new(3)),
        )
    }

    /// Another agent socket of the same trust domain (same CA, same
    /// bundle) handing out `spiffe_id`: a second workload on the node, such
    /// as the NSM manager the forwarder talks to.
    pub fn sibling(
        &self,
        socket_path: impl AsRef<Path>,
        spiffe_id: &str,
    ) -> Result<Self, FakeError> {
        Self::serve(
            socket_path.as_ref(),
            spiffe_id,
            Arc::clone(&self.shared.ca),
            Arc::clone(&self.shared.foreign),
            Arc::clone(&self.shared.serials),
        )
    }

    fn serve(
        socket: &Path,
        spiffe_id: &str,
        ca: Arc<Ca>,
        foreign: Arc<Ca>,
        serials: Arc<AtomicU64>,
    ) -> Result<Self, FakeError> {
        let socket = socket.to_path_buf();
        let first = ca.mint(spiffe_id, serials.fetch_add(1, Ordering::Relaxed), ca.der())?;
        let shared = Arc::new(Shared {
            ca,
            foreign,
            serials,
            current: Mutex::new(first),
            updates: watch::channel(0).0,
        });
        let listener =
            tokio::net::UnixListener::bind(&socket).map_err(|cause| FakeError::Bind {
                path: socket.clone(),
                cause,
            })?;
        let (stop, stop_rx) = oneshot::channel::<()>();
        let service = SpiffeWorkloadApiServer::with_interceptor(
            Service {
                shared: Arc::clone(&shared),
            },
            require_header,
        );
        let server = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(err) = result {
                tracing::warn!(%err, "fake SPIFFE Workload API failed");
            }
        });
        Ok(Self {
            socket,
            shared,
            stop: Some(stop),
            server,
        })
    }

    /// `unix://<socket>`: what `SPIFFE_ENDPOINT_SOCKET` should be.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The SVID currently served.
    pub fn current(&self) -> MintedSvid {
        self.shared.current()
    }

    /// Mints a new SVID (new key, new serial, same SPIFFE ID) and pushes it
    /// to every open stream, as an agent does before the old one expires.
    pub fn rotate(&self) -> Result<MintedSvid, FakeError> {
        let current = self.shared.current();
        let next = self.shared.ca.mint(
            &current.spiffe_id,
            self.shared.next_serial(),
            self.shared.ca.der(),
        )?;
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = next.clone();
        self.shared.updates.send_modify(|n| *n += 1);
        Ok(next)
    }

    /// An SVID for another workload of the trust domain (a peer that should
    /// be accepted), e.g. `spiffe://example.org/nsmgr`.
    pub fn mint(&self, spiffe_id: &str) -> Result<MintedSvid, FakeError> {
        self.shared
            .ca
            .mint(spiffe_id, self.shared.next_serial(), self.shared.ca.der())
    }

    /// An SVID with a SPIFFE ID of our trust domain but issued by a CA in no
    /// bundle we serve (a peer that must be refused).
    pub fn untrusted_mint(&self, spiffe_id: &str) -> Result<MintedSvid, FakeError> {
        self.shared
            .foreign
            .mint(spiffe_id, self.shared.next_serial(), self.shared.ca.der())
    }

    /// The trust domain's CA certificate, DER: the bundle served.
    pub fn bundle_der(&self) -> Vec<u8> {
        self.shared.ca.der()
    }

    /// A client config that trusts the fake's CA but presents no
    /// certificate (a peer without an SVID).
    pub fn anonymous_client_config(&self) -> Result<Arc<ClientConfig>, FakeError> {
        let tls_error = |cause| FakeError::Tls {
            spiffe_id: "anonymous".to_owned(),
            cause,
        };
        let config = client_builder(&self.bundle_der())
            .map_err(tls_error)?
            .with_no_client_auth();
        Ok(Arc::new(with_h2(config)))
    }
}

impl Drop for FakeWorkloadApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Open FetchX509SVID streams never end on their own, so a graceful
        // shutdown would wait for clients: stop serving now.
        self.server.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}
