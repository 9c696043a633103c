//! Secure mode for the driver (the default; `--insecure` for plaintext): a
//! SPIRE stand-in serving the forwarder its SVID, and the driver's own
//! identity as the NSM manager of the same trust domain. The fake nsmgr
//! serves mTLS with it and signs its registry segments; the driver's
//! NetworkService calls go over mTLS and carry the token an nsmgr sends
//! for its segment (`nsm-client-token`), so the forwarder's policies
//! judge exactly what a stock nsmgr would send them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sriov_chain::elements::updatetoken::TokenSigner;
use sriov_identity::Identity;
use sriov_identity::testing::FakeWorkloadApi;
use sriov_nsm::credentials::{CallCredentials, ServerIdentity};
use sriov_nsm::fake::FakeNsmgr;
use sriov_nsm::security::{Security, SvidSigner};
use tonic::service::Interceptor;

/// The forwarder's SPIFFE ID in the stand-in's trust domain.
pub(crate) const FORWARDER_ID: &str = "spiffe://example.org/ns/nsm-system/sa/forwarder-sriov";
/// The driver's (the NSM manager's) SPIFFE ID.
pub(crate) const NSMGR_ID: &str = "spiffe://example.org/ns/nsm-system/sa/nsmgr";

/// The SPIRE stand-in and the driver's identity.
pub(crate) struct Spire {
    forwarder_api: FakeWorkloadApi,
    _nsmgr_api: FakeWorkloadApi,
    security: Security,
    signer: Arc<dyn TokenSigner>,
}

static SPIRE: OnceLock<Spire> = OnceLock::new();

/// Starts the stand-in under `dir` (sockets `forwarder.sock` and
/// `nsmgr.sock`) for the rest of the process. Must run inside the
/// driver's runtime.
pub(crate) async fn start(dir: &Path) -> Result<(), String> {
    if SPIRE.get().is_some() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let sock = |n: &str| -> PathBuf {
        let p = dir.join(n);
        let _ = std::fs::remove_file(&p);
        p
    };
    let forwarder_api =
        FakeWorkloadApi::start(sock("forwarder.sock"), FORWARDER_ID).map_err(|e| e.to_string())?;
    let nsmgr_api = forwarder_api
        .sibling(sock("nsmgr.sock"), NSMGR_ID)
        .map_err(|e| e.to_string())?;
    let nsmgr = Identity::from_workload_api(&nsmgr_api.endpoint(), Duration::from_secs(10))
        .await
        .map_err(|e| format!("the driver's SVID: {e}"))?;
    let spire = Spire {
        forwarder_api,
        _nsmgr_api: nsmgr_api,
        signer: Arc::new(SvidSigner::new(nsmgr.clone(), Duration::from_secs(600))),
        security: Security::Mtls(nsmgr),
    };
    let _ = SPIRE.set(spire);
    crate::checks::say(format!(
        "secure mode: SPIRE stand-in in {} (forwarder {FORWARDER_ID}, nsmgr {NSMGR_ID})",
        dir.display()
    ));
    Ok(())
}

/// The stand-in, when the driver runs in secure mode.
pub(crate) fn get() -> Option<&'static Spire> {
    SPIRE.get()
}

impl Spire {
    /// `SPIFFE_ENDPOINT_SOCKET` for the forwarder.
    pub(crate) fn forwarder_endpoint(&self) -> String {
        self.forwarder_api.endpoint()
    }
}

/// How the driver's clients are secured: mTLS in secure mode.
pub(crate) fn security() -> Security {
    get().map(|s| s.security.clone()).unwrap_or_default()
}

/// The fake NSM manager, secured like the driver.
pub(crate) async fn nsmgr(socket: &Path) -> Result<FakeNsmgr, String> {
    let (security, signer) = match get() {
        Some(s) => (s.security.clone(), Some(s.signer.clone())),
        None => (Security::Plaintext, None),
    };
    FakeNsmgr::start_secure(socket, security, signer)
        .await
        .map_err(|e| e.to_string())
}

/// Puts the token the NSM manager sends for its segment on every call:
/// signed for the server the channel authenticated.
#[derive(Clone, Default)]
pub(crate) struct Tokens(Option<CallCredentials>);

impl Tokens {
    /// Tokens for the server `server` names, in secure mode; none otherwise.
    pub(crate) fn for_server(server: ServerIdentity) -> Self {
        Self(get().map(|s| CallCredentials::new(s.signer.clone(), server)))
    }
}

impl Interceptor for Tokens {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(c) = &self.0 {
            c.sign_into(req.metadata_mut())?;
        }
        Ok(req)
    }
}

/// A client over mTLS with an arbitrary rustls config (an untrusted SVID),
/// for the refusals below.
async fn channel_with(
    socket: &Path,
    config: Arc<rustls::ClientConfig>,
) -> Result<tonic::transport::Channel, String> {
    let socket = socket.to_path_buf();
    let connector = tower::service_fn(move |_: http::Uri| {
        let (socket, config) = (socket.clone(), config.clone());
        async move {
            let stream = tokio::net::UnixStream::connect(socket).await?;
            let name = rustls::pki_types::ServerName::try_from("localhost")
                .map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
        .map_err(|e| e.to_string())
}

/// A call that died in the transport (the handshake refused), not one a
/// handler answered.
fn transport_failure(e: &tonic::Status) -> bool {
    use tonic::Code::{Cancelled, Internal, Unavailable, Unknown};
    matches!(e.code(), Unavailable | Internal | Unknown | Cancelled)
}

fn refused_with<T>(
    got: Result<tonic::Response<T>, tonic::Status>,
    ok: impl Fn(&tonic::Status) -> bool,
) -> Result<String, String> {
    match got {
        Ok(_) => Err("accepted".into()),
        Err(e) if ok(&e) => Ok(format!("{:?}: {}", e.code(), e.message())),
        Err(e) => Err(format!("{:?}: {}", e.code(), e.message())),
    }
}

/// Secure mode's refusals, through the real daemon at `socket`: no SVID,
/// an SVID of a CA outside the bundle, no token, an expired token.
pub(crate) async fn hostile(socket: &Path, r: &mut crate::checks::Report) -> Result<(), String> {
    use sriov_api::nsm::networkservice::network_service_client::NetworkServiceClient;
    let Some(spire) = get() else {
        return Ok(());
    };
    let url = sriov_nsm::NsmUrl::parse(&format!("unix://{}", socket.display()))
        .map_err(|e| e.to_string())?;
    let request = || crate::client::request("evil-token", "NOOP", &[], false);

    // Plaintext to an mTLS socket: the handshake never completes.
    let plain = match sriov_nsm::dial(&url, Duration::from_secs(2)).await {
        Ok(ch) => {
            let got = NetworkServiceClient::new(ch).request(request()).await;
            refused_with(got, transport_failure)
        }
        Err(e) => Ok(format!("dial refused: {e}")),
    };
    r.check("secure-plaintext-refused", plain);

    // An SVID from a CA not in the forwarder's bundle.
    let untrusted = spire
        .forwarder_api
        .untrusted_mint(NSMGR_ID)
        .and_then(|svid| svid.client_config())
        .map_err(|e| e.to_string())?;
    let got = match channel_with(socket, untrusted).await {
        Ok(ch) => {
            let got = NetworkServiceClient::new(ch).request(request()).await;
            refused_with(got, transport_failure)
        }
        Err(e) => Ok(format!("handshake refused: {e}")),
    };
    r.check("secure-untrusted-svid-refused", got);

    // A trusted peer whose calls carry no token: the previous segment's is
    // the path's own (unsigned), which the policies refuse.
    let dialed = sriov_nsm::dial_secure(&url, Duration::from_secs(2), &spire.security)
        .await
        .map_err(|e| e.to_string())?;
    let got = NetworkServiceClient::new(dialed.channel.clone())
        .request(request())
        .await;
    r.check(
        "secure-unsigned-token-refused",
        refused_with(got, |e| {
            e.code() == tonic::Code::PermissionDenied && e.message().contains("policy")
        }),
    );

    // A token that has already expired when it arrives.
    let Security::Mtls(identity) = &spire.security else {
        return Err("secure mode without an identity".into());
    };
    let expired = Tokens(Some(CallCredentials::new(
        Arc::new(SvidSigner::new(identity.clone(), Duration::ZERO)),
        dialed.server.clone(),
    )));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let got = NetworkServiceClient::with_interceptor(dialed.channel, expired)
        .request(request())
        .await;
    r.check(
        "secure-expired-token-refused",
        refused_with(got, |e| {
            e.code() == tonic::Code::PermissionDenied && e.message().contains("tokens_expired")
        }),
    );
    Ok(())
}
