//! Secure mode (the default): the forwarder's SVID from the SPIFFE
//! Workload API, and the signer of its path tokens.
//!
//! As the Go forwarder's main.go ("phase 5: retrieving svid"), start-up
//! waits for the first SVID before serving anything, but for at most
//! [`SVID_WAIT`]: a node whose SPIRE agent never answers shows a start-up
//! error naming the socket instead of a forwarder that hangs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sriov_chain::elements::authorize::Authorization;
use sriov_chain::elements::monitor::Monitor;
use sriov_chain::elements::updatetoken::TokenSigner;
use sriov_chain::server::MonitorServer;
use sriov_config::EnvConfig;
use sriov_identity::Identity;
use sriov_nsm::security::{Security, SvidSigner};
use sriov_policy::{ConnectionOwners, Policies, TokenCheck};

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

/// Checks path-token signatures for the policies' `io.jwt.verify_es256`
/// with the identity crate's ES256 verifier.
#[derive(Debug, Clone, Copy)]
pub struct SvidTokens;

impl TokenCheck for SvidTokens {
    fn signed_by(&self, token: &str, certificate_der: &[u8]) -> bool {
        // OPA's verify_es256 checks the signature only; expiry is
        // `tokens_expired`'s to judge (and to name when it denies), so the
        // token is checked as of the epoch.
        sriov_identity::token::verify_at(token, certificate_der, SystemTime::UNIX_EPOCH).is_ok()
    }
}

/// What secure mode adds to the forwarder: all `None`/plaintext with
/// `NSM_INSECURE=true`.
pub(crate) struct Secure {
    /// How the NSM sockets are served and dialed.
    pub(crate) security: Security,
    /// Signs our path tokens.
    pub(crate) signer: Option<Arc<dyn TokenSigner>>,
    /// The server policies and connection owners (`authorize`).
    pub(crate) server: Option<Authorization>,
    /// The monitor policies, with the same owners.
    pub(crate) monitor: Option<Authorization>,
    /// `NSM_REGISTRY_CLIENT_POLICIES`.
    pub(crate) registry_policies: Option<Arc<Policies>>,
}

impl Secure {
    /// Gets the SVID and loads the policies, or nothing in plaintext mode.
    pub(crate) async fn start(env: &EnvConfig, wait: Duration) -> Result<Self, StartError> {
        let endpoint = match (&env.spiffe_endpoint_socket, env.insecure) {
            (Some(endpoint), false) => endpoint,
            _ => {
                return Ok(Self {
                    security: Security::Plaintext,
                    signer: None,
                    server: None,
                    monitor: None,
                    registry_policies: None,
                });
            }
        };
        let identity = fetch_identity(endpoint, wait).await?;
        let tokens: Arc<dyn TokenCheck> = Arc::new(SvidTokens);
        let policy = |what: &'static str| move |source| StartError::Policy { what, source };
        let owners = Arc::new(ConnectionOwners::new());
        let server = Policies::defaults_server(tokens.clone()).map_err(policy("server"))?;
        let monitor = Policies::defaults_monitor(tokens.clone()).map_err(policy("monitor"))?;
        let registry = Policies::load_masks(&env.registry_client_policies, tokens)
            .map_err(policy("NSM_REGISTRY_CLIENT_POLICIES"))?;
        tracing::info!(
            server = ?server.names().collect::<Vec<_>>(),
            registry_client = ?registry.names().collect::<Vec<_>>(),
            "policies loaded"
        );
        Ok(Self {
            signer: Some(Arc::new(SvidSigner::new(
                identity.clone(),
                env.max_token_lifetime,
            ))),
            security: Security::Mtls(identity),
            server: Some(Authorization {
                policies: Arc::new(server),
                owners: owners.clone(),
            }),
            monitor: Some(Authorization {
                policies: Arc::new(monitor),
                owners,
            }),
            registry_policies: Some(Arc::new(registry)),
        })
    }

    /// The MonitorConnection server, with the monitor policies in secure mode.
    pub(crate) fn monitor_server(&self, monitor: Monitor) -> MonitorServer {
        let server = MonitorServer::new(monitor);
        match &self.monitor {
            Some(a) => server.with_policies(a.clone()),
            None => server,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env(vars: &[(&str, &str)]) -> EnvConfig {
        EnvConfig::from_vars(vars.iter().copied()).unwrap().config
    }

    #[tokio::test]
    async fn no_svid_within_the_wait_stops_the_start_naming_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = format!("unix://{}/agent.sock", dir.path().display());
        let err = Secure::start(
            &env(&[("SPIFFE_ENDPOINT_SOCKET", &socket)]),
            Duration::from_millis(200),
        )
        .await
        .err()
        .expect("no Workload API answers");
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(matches!(err, StartError::Identity(_)), "{chain}");
        assert!(chain.contains("agent.sock"), "{chain}");
    }

    #[tokio::test]
    async fn plaintext_mode_adds_nothing() {
        let s = Secure::start(&env(&[("NSM_INSECURE", "true")]), Duration::ZERO)
            .await
            .unwrap();
        assert!(!s.security.is_mtls());
        assert!(s.signer.is_none() && s.server.is_none() && s.registry_policies.is_none());
    }

    #[tokio::test]
    async fn secure_mode_has_an_identity_a_signer_and_the_policies() {
        let dir = tempfile::tempdir().unwrap();
        let api = sriov_identity::testing::FakeWorkloadApi::start(
            dir.path().join("agent.sock"),
            "spiffe://example.org/forwarder",
        )
        .unwrap();
        let s = Secure::start(
            &env(&[("SPIFFE_ENDPOINT_SOCKET", &api.endpoint())]),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert!(s.security.is_mtls());
        let token = s.signer.as_ref().unwrap().sign(None).unwrap();
        let claims = sriov_identity::token::decode_unverified(&token.token).unwrap();
        assert_eq!(claims.sub, "spiffe://example.org/forwarder");
        let names: Vec<String> = s
            .server
            .as_ref()
            .unwrap()
            .policies
            .names()
            .map(str::to_string)
            .collect();
        assert!(
            names.iter().any(|n| n.ends_with("prev_token_signed.rego")),
            "{names:?}"
        );
        let registry: Vec<String> = s
            .registry_policies
            .as_ref()
            .unwrap()
            .names()
            .map(str::to_string)
            .collect();
        assert!(
            registry.iter().any(|n| n.ends_with("client_allowed.rego")),
            "{registry:?}"
        );
    }

    #[tokio::test]
    async fn a_registry_policy_mask_matching_nothing_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let api = sriov_identity::testing::FakeWorkloadApi::start(
            dir.path().join("agent.sock"),
            "spiffe://example.org/forwarder",
        )
        .unwrap();
        let err = Secure::start(
            &env(&[
                ("SPIFFE_ENDPOINT_SOCKET", &api.endpoint()),
                ("NSM_REGISTRY_CLIENT_POLICIES", "/nonexistent/dir/.*.rego"),
            ]),
            Duration::from_secs(10),
        )
        .await
        .err()
        .expect("a mask matching nothing");
        assert!(
            matches!(
                err,
                StartError::Policy {
                    what: "NSM_REGISTRY_CLIENT_POLICIES",
                    ..
                }
            ),
            "{err}"
        );
    }
}
