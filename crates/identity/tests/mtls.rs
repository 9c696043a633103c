#![allow(clippy::unwrap_used, clippy::expect_used)]
//! mTLS between our identity and test peers over unix socket pairs.

use std::sync::Arc;
use std::time::Duration;

use sriov_identity::testing::FakeWorkloadApi;
use sriov_identity::{Error, Identity, peer_of};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

const FORWARDER: &str = "spiffe://example.org/forwarder-sriov";
const NSMGR: &str = "spiffe://example.org/nsmgr";

async fn setup() -> (tempfile::TempDir, FakeWorkloadApi, Identity) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeWorkloadApi::start(dir.path().join("agent.sock"), FORWARDER).unwrap();
    let me = Identity::from_workload_api(&fake.endpoint(), Duration::from_secs(30))
        .await
        .unwrap();
    (dir, fake, me)
}

/// A test peer dialing `io` with `config`.
async fn dial(
    config: Arc<rustls::ClientConfig>,
    io: UnixStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<UnixStream>> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
}

#[tokio::test]
async fn valid_svid_is_accepted_and_both_sides_see_the_peer() {
    let (_dir, fake, me) = setup().await;
    let nsmgr = fake.mint(NSMGR).unwrap();
    let (a, b) = UnixStream::pair().unwrap();

    let (server, client) = tokio::join!(me.accept(a), dial(nsmgr.client_config().unwrap(), b));
    let (mut server, peer) = server.unwrap();
    let mut client = client.unwrap();

    assert_eq!(peer.spiffe_id, NSMGR);
    assert_eq!(peer.cert_der, nsmgr.leaf_der());
    let seen_by_client = peer_of(client.get_ref().1).unwrap();
    assert_eq!(seen_by_client.spiffe_id, FORWARDER);
    assert_eq!(server.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn we_connect_to_a_valid_server_whatever_its_name() {
    let (_dir, fake, me) = setup().await;
    let nsmgr = fake.mint(NSMGR).unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(nsmgr.server_config().unwrap());

    let (client, server) = tokio::join!(me.connect(a, "nsmgr.nsm-system"), acceptor.accept(b));
    let (client, peer) = client.unwrap();
    let server = server.unwrap();

    assert_eq!(peer.spiffe_id, NSMGR);
    assert_eq!(peer_of(server.get_ref().1).unwrap().spiffe_id, FORWARDER);
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn untrusted_svid_is_refused() {
    let (_dir, fake, me) = setup().await;
    let impostor = fake.untrusted_mint(NSMGR).unwrap();
    let (a, b) = UnixStream::pair().unwrap();

    let (server, client) = tokio::join!(me.accept(a), async {
        // TLS 1.3 reports a refused client certificate after the client's
        // Finished: the client sees it on its first read.
        let mut tls = dial(impostor.client_config().unwrap(), b).await?;
        let mut buf = [0u8; 1];
        tls.read(&mut buf).await
    });
    let err = server.unwrap_err();
    assert!(
        matches!(err, Error::Handshake { side: "server", .. }),
        "{err:?}"
    );
    assert!(client.is_err(), "{client:?}");
}

#[tokio::test]
async fn we_refuse_an_untrusted_server() {
    let (_dir, fake, me) = setup().await;
    let impostor = fake.untrusted_mint(NSMGR).unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(impostor.server_config().unwrap());

    let (client, server) = tokio::join!(me.connect(a, "localhost"), acceptor.accept(b));
    let err = client.unwrap_err();
    assert!(
        matches!(err, Error::Handshake { side: "client", .. }),
        "{err:?}"
    );
    assert!(server.is_err());
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let (_dir, fake, me) = setup().await;
    let (a, b) = UnixStream::pair().unwrap();

    let (server, client) = tokio::join!(me.accept(a), async {
        let mut tls = dial(fake.anonymous_client_config().unwrap(), b).await?;
        let mut buf = [0u8; 1];
        tls.read(&mut buf).await
    });
    let err = server.unwrap_err();
    assert!(
        matches!(err, Error::Handshake { side: "server", .. }),
        "{err:?}"
    );
    assert!(client.is_err(), "{client:?}");
}

#[tokio::test]
async fn invalid_server_name_is_named() {
    let (_dir, _fake, me) = setup().await;
    let (a, _b) = UnixStream::pair().unwrap();
    let err = me.connect(a, "/run/nsm/nsm.io.sock").await.unwrap_err();
    assert!(matches!(err, Error::ServerName { .. }), "{err:?}");
    assert!(err.to_string().contains("/run/nsm/nsm.io.sock"), "{err}");
}

/// A TLS 1.2-only test client that accepts any server certificate: the
/// server side is what this checks.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_both_accepted() {
    let (_dir, fake, me) = setup().await;
    let nsmgr = fake.mint(NSMGR).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = nsmgr
        .cert_chain_der
        .iter()
        .map(|c| rustls::pki_types::CertificateDer::from(c.clone()))
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(nsmgr.key_der.clone().into());
    let tls12 = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(chain, key)
        .unwrap();

    let (a, b) = UnixStream::pair().unwrap();
    let (server, client) = tokio::join!(me.accept(a), dial(Arc::new(tls12), b));
    let (server, peer) = server.unwrap();
    client.unwrap();
    assert_eq!(peer.spiffe_id, NSMGR);
    assert_eq!(
        server.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );

    let (a, b) = UnixStream::pair().unwrap();
    let (server, client) = tokio::join!(me.accept(a), dial(nsmgr.client_config().unwrap(), b));
    let (server, _) = server.unwrap();
    client.unwrap();
    assert_eq!(
        server.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}
