//! What can go wrong getting, using or proving our identity.

use std::time::Duration;

/// An error of [`crate::Identity`]: each variant names the socket, SPIFFE ID
/// or server name it failed on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No SVID arrived from the Workload API in time (agent down, socket
    /// missing, or the workload not yet registered with SPIRE).
    #[error("no X.509 SVID from the SPIFFE Workload API at {endpoint} within {timeout:?}")]
    Timeout {
        /// The `SPIFFE_ENDPOINT_SOCKET` value.
        endpoint: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The Workload API refused or could not be reached for good (a malformed
    /// endpoint, an agent without the RPC, a response without an SVID).
    #[error("SPIFFE Workload API at {endpoint}: {cause}")]
    WorkloadApi {
        /// The `SPIFFE_ENDPOINT_SOCKET` value.
        endpoint: String,
        /// What the spiffe client said.
        cause: spiffe::X509SourceError,
    },
    /// The source has no usable SVID right now (withdrawn or closed).
    #[error("no current X.509 SVID from {endpoint}: {cause}")]
    NoSvid {
        /// The `SPIFFE_ENDPOINT_SOCKET` value.
        endpoint: String,
        /// Why the source has none.
        cause: spiffe::X509SourceError,
    },
    /// A rustls configuration could not be built from the SVID source.
    #[error("TLS {side} config for {spiffe_id}: {cause}")]
    TlsConfig {
        /// `server` or `client`.
        side: &'static str,
        /// Our SPIFFE ID.
        spiffe_id: String,
        /// What spiffe-rustls said.
        cause: spiffe_rustls::Error,
    },
    /// The name given for the server is not a valid TLS server name.
    #[error("invalid TLS server name {server_name:?}: {cause}")]
    ServerName {
        /// The name given to [`crate::Identity::connect`].
        server_name: String,
        /// What rustls said.
        cause: rustls::pki_types::InvalidDnsNameError,
    },
    /// The TLS handshake failed (a peer without a valid SVID lands here).
    #[error("TLS handshake as {side} for {spiffe_id} failed: {cause}")]
    Handshake {
        /// `server` or `client`.
        side: &'static str,
        /// Our SPIFFE ID.
        spiffe_id: String,
        /// The I/O or TLS error.
        cause: std::io::Error,
    },
    /// The handshake passed but the peer's certificate carries no SPIFFE ID
    /// (cannot happen with our verifiers; kept so callers need no unwrap).
    #[error("TLS peer of {spiffe_id} presented no SPIFFE ID")]
    NoPeerId {
        /// Our SPIFFE ID.
        spiffe_id: String,
    },
    /// Our SVID's key cannot sign an NSM token: NSM signs with ES256 only,
    /// so the key must be EC P-256 (SPIRE's default).
    #[error("SVID key of {spiffe_id} cannot sign an ES256 token: {cause}")]
    TokenKey {
        /// Our SPIFFE ID.
        spiffe_id: String,
        /// What ring said about the PKCS#8 key.
        cause: String,
    },
    /// A certificate (ours or the peer's) could not be read.
    #[error("certificate of {spiffe_id}: {cause}")]
    Certificate {
        /// Whose certificate.
        spiffe_id: String,
        /// What the parser said.
        cause: String,
    },
}
