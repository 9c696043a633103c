#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A rotated SVID is used by new handshakes without a restart; connections
//! made before keep working.

use std::time::Duration;

use sriov_identity::Identity;
use sriov_identity::testing::{FakeWorkloadApi, serial_of};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

const FORWARDER: &str = "spiffe://example.org/forwarder-sriov";
const NSMGR: &str = "spiffe://example.org/nsmgr";

/// One handshake as the NSM manager's client: the serial our server showed,
/// and both ends.
async fn handshake(
    me: &Identity,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> (
    Vec<u8>,
    tokio_rustls::server::TlsStream<UnixStream>,
    tokio_rustls::client::TlsStream<UnixStream>,
) {
    let (a, b) = UnixStream::pair().unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let (server, client) = tokio::join!(
        me.accept(a),
        tokio_rustls::TlsConnector::from(config).connect(name, b)
    );
    let (server, _) = server.unwrap();
    let client = client.unwrap();
    let shown = client.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (serial_of(&shown).unwrap(), server, client)
}

#[tokio::test]
async fn rotation_reaches_new_handshakes_and_spares_old_connections() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeWorkloadApi::start(dir.path().join("agent.sock"), FORWARDER).unwrap();
    let me = Identity::from_workload_api(&fake.endpoint(), Duration::from_secs(30))
        .await
        .unwrap();
    let nsmgr = fake.mint(NSMGR).unwrap().client_config().unwrap();

    let old_serial = fake.current().serial();
    let (before, mut old_server, mut old_client) = handshake(&me, nsmgr.clone()).await;
    assert_eq!(before, old_serial);

    let rotated = fake.rotate().unwrap();
    assert_ne!(rotated.serial(), old_serial);

    // The agent's push reaches the source, then the TLS material, in the
    // background: try handshakes until one shows the new certificate.
    let mut seen = Vec::new();
    for _ in 0..400 {
        let (serial, _, _) = handshake(&me, nsmgr.clone()).await;
        if serial == rotated.serial() {
            seen = serial;
            break;
        }
        assert_eq!(serial, old_serial, "a certificate neither old nor new");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        seen,
        rotated.serial(),
        "no handshake showed the rotated SVID"
    );
    assert_eq!(me.certificate_der().unwrap(), rotated.leaf_der());
    assert_eq!(me.spiffe_id(), FORWARDER);

    // The connection made before rotation still carries data both ways.
    old_client.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    old_server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"before");
    old_server.write_all(b"after!").await.unwrap();
    old_client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after!");

    // Tokens are signed with the new key: the new certificate verifies them.
    let (token, _) = me.sign_token(None, Duration::from_secs(60)).unwrap();
    sriov_identity::token::verify(&token, rotated.leaf_der()).unwrap();
}
