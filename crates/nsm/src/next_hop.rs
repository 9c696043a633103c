//! [`GrpcNextHop`]: the forwarder's connect client to `NSM_CONNECT_TO`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use sriov_api::nsm::connection::{Connection, Mechanism};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_api::nsm::networkservice::network_service_client::NetworkServiceClient;
use sriov_chain::NextHop;
use tonic::Status;
use tonic::transport::Channel;

use crate::credentials::CallCredentials;
use crate::mechanism::{is_noop, noop_preferences};
use crate::security::Security;
use crate::{Error, NsmUrl, transport};
use sriov_chain::elements::updatetoken::TokenSigner;

/// Sends the forwarder's requests on to the NSM manager's
/// `networkservice.NetworkService` at `NSM_CONNECT_TO`, like the connect
/// client of the Go forwarder:
///
/// - the request keeps the connection (id, path, context, labels) but not
///   the client's mechanism: the forwarder's side is KERNEL or VFIO, the
///   next hop's side is offered only NOOP (LOCAL, then REMOTE);
/// - on a refresh, the NOOP mechanism the next hop chose last time is sent
///   back, and on Close the next hop gets its own mechanism, not the
///   client's (the Go SDK's `mechanismtranslation`);
/// - the returned connection is the next hop's, with its mechanism; the
///   chain puts the client's mechanism back.
///
/// The channel connects lazily and reconnects after the peer restarts;
/// each connection attempt is bounded by the dial timeout, so an absent
/// manager fails a request quickly with `UNAVAILABLE`.
#[derive(Clone)]
pub struct GrpcNextHop {
    url: NsmUrl,
    client: NetworkServiceClient<Channel>,
    call_timeout: Option<Duration>,
    credentials: Option<CallCredentials>,
    chosen: Arc<Mutex<Chosen>>,
}

/// The mechanism the next hop chose per connection, findable by the id the
/// forwarder sent and by the id the next hop answered with (an NSM manager
/// answers with the sender's id, but a Close may carry either).
#[derive(Default)]
struct Chosen {
    /// id -> (mechanism, the connection's other id, whether this is the
    /// id the forwarder sent).
    by_id: HashMap<String, (Mechanism, String, bool)>,
}

impl Chosen {
    fn get(&self, id: &str) -> Option<Mechanism> {
        self.by_id.get(id).map(|(m, _, _)| m.clone())
    }

    fn insert(&mut self, sent: String, answered: String, mechanism: Mechanism) {
        if sent != answered {
            self.by_id
                .insert(answered.clone(), (mechanism.clone(), sent.clone(), false));
        }
        self.by_id.insert(sent, (mechanism, answered, true));
    }

    fn remove(&mut self, id: &str) -> Option<Mechanism> {
        let (mechanism, other, _) = self.by_id.remove(id)?;
        if other != id {
            self.by_id.remove(&other);
        }
        Some(mechanism)
    }

    fn connections(&self) -> usize {
        self.by_id.values().filter(|(_, _, sent)| *sent).count()
    }
}

impl GrpcNextHop {
    /// A next hop at `url` (`NSM_CONNECT_TO`), each connection attempt
    /// bounded by `dial_timeout` (`NSM_DIAL_TIMEOUT`). Must be called in a
    /// tokio runtime; fails only for a URL tonic cannot express.
    pub fn new(url: NsmUrl, dial_timeout: Duration) -> Result<Self, Error> {
        Self::secure(url, dial_timeout, &Security::Plaintext, None)
    }

    /// [`GrpcNextHop::new`] with `security`; with a `signer`, every call
    /// carries our token for the next hop (NSM's per-RPC credentials).
    pub fn secure(
        url: NsmUrl,
        dial_timeout: Duration,
        security: &Security,
        signer: Option<Arc<dyn TokenSigner>>,
    ) -> Result<Self, Error> {
        let dialed = transport::dial_lazy_secure(&url, dial_timeout, security)?;
        let channel = dialed.channel;
        let credentials = signer.map(|s| CallCredentials::new(s, dialed.server));
        Ok(Self {
            credentials,
            url,
            client: NetworkServiceClient::new(channel)
                .max_decoding_message_size(sriov_api::NSM_MAX_MESSAGE_BYTES)
                .max_encoding_message_size(sriov_api::NSM_MAX_MESSAGE_BYTES),
            call_timeout: None,
            chosen: Arc::default(),
        })
    }

    /// Bounds every Request and Close call as a whole (the next hop may
    /// itself be dialing the endpoint, so this is much longer than the dial
    /// timeout). Without it a call waits as long as the peer takes.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Sends every call with a token signed for the next hop (NSM's
    /// per-RPC credentials); without, calls carry none (plaintext mode).
    pub fn with_credentials(mut self, credentials: CallCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The URL requests go to.
    pub fn url(&self) -> &NsmUrl {
        &self.url
    }

    fn outgoing(&self, mut request: NetworkServiceRequest) -> NetworkServiceRequest {
        if let Some(conn) = request.connection.as_mut() {
            conn.mechanism = self.chosen_for(&conn.id);
        }
        request.mechanism_preferences = noop_preferences();
        request
    }

    fn chosen_for(&self, id: &str) -> Option<Mechanism> {
        self.chosen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
    }

    /// How many next-hop connections this client remembers a mechanism
    /// for: requested and not yet closed through it.
    pub fn open_connections(&self) -> usize {
        self.chosen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .connections()
    }

    async fn prepared<T>(&self, message: T) -> Result<tonic::Request<T>, Status> {
        let mut req = tonic::Request::new(message);
        if let Some(t) = self.call_timeout {
            req.set_timeout(t);
        }
        // The next hop joins our trace (W3C `traceparent`), as Go's otelgrpc does.
        sriov_telemetry::grpc::inject_context(req.metadata_mut());
        if let Some(c) = &self.credentials {
            c.apply(&mut req).await?;
        }
        Ok(req)
    }
}

/// Names the URL in a failed call's message while keeping its code, so a
/// client sees `UNAVAILABLE ... unix:///var/lib/...` and knows where.
fn annotate(url: &NsmUrl, op: &str, status: Status) -> Status {
    Status::new(
        status.code(),
        format!("next hop {url}: {op}: {}", status.message()),
    )
}

impl NextHop for GrpcNextHop {
    fn request(
        &self,
        request: NetworkServiceRequest,
    ) -> BoxFuture<'static, Result<Connection, Status>> {
        let this = self.clone();
        Box::pin(async move {
            let sent_id = request
                .connection
                .as_ref()
                .map(|c| c.id.clone())
                .unwrap_or_default();
            let outgoing = this.outgoing(request);
            let mut client = this.client.clone();
            let conn = client
                .request(this.prepared(outgoing).await?)
                .await
                .map_err(|s| annotate(&this.url, "Request", s))?
                .into_inner();
            if let Some(m) = conn.mechanism.as_ref().filter(|m| is_noop(m)) {
                this.chosen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(sent_id, conn.id.clone(), m.clone());
            }
            Ok(conn)
        })
    }

    fn close(&self, mut connection: Connection) -> BoxFuture<'static, Result<(), Status>> {
        let this = self.clone();
        Box::pin(async move {
            let chosen = this
                .chosen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&connection.id);
            // The next hop never saw the client's mechanism; give it its
            // own (or, if it never answered, the first one it was offered).
            connection.mechanism = chosen.or_else(|| {
                connection
                    .mechanism
                    .take()
                    .filter(is_noop)
                    .or_else(|| noop_preferences().into_iter().next())
            });
            let mut client = this.client.clone();
            client
                .close(this.prepared(connection).await?)
                .await
                .map_err(|s| annotate(&this.url, "Close", s))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use opentelemetry_sdk::trace::SdkTracerProvider;
    use sriov_telemetry::logging::{LogConfig, build};
    use tracing::Instrument;

    use super::*;

    /// Runs `f` under a subscriber whose spans have OpenTelemetry contexts.
    fn traced<T>(f: impl FnOnce() -> T) -> T {
        let config = LogConfig {
            level: "info".into(),
            traces: Some(SdkTracerProvider::builder().build()),
            ..LogConfig::default()
        };
        let (subscriber, _levels) = build(config, std::io::sink, false).unwrap();
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn next_hop_and_registry_calls_carry_the_current_spans_traceparent() {
        traced(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let url = NsmUrl::parse("unix:///nonexistent/nsm.sock").unwrap();
                let hop = GrpcNextHop::new(url.clone(), Duration::from_millis(50)).unwrap();
                let registry = crate::RegistryClient::new(url, Duration::from_millis(50)).unwrap();
                let span = tracing::info_span!("chain.connect");
                let (hop_req, reg_req) =
                    async { (hop.prepared(()).await.unwrap(), registry.request(()).await) }
                        .instrument(span.clone())
                        .await;
                let ours = {
                    use opentelemetry::trace::TraceContextExt;
                    use tracing_opentelemetry::OpenTelemetrySpanExt;
                    let cx = span.context();
                    let sc = cx.span().span_context().clone();
                    format!("00-{}-{}-01", sc.trace_id(), sc.span_id())
                };
                for req in [hop_req.metadata(), reg_req.metadata()] {
                    assert_eq!(
                        req.get("traceparent").map(|v| v.to_str().unwrap()),
                        Some(ours.as_str())
                    );
                }
                // Outside a span, nothing is made up.
                assert!(
                    hop.prepared(())
                        .await
                        .unwrap()
                        .metadata()
                        .get("traceparent")
                        .is_none()
                );
            });
        });
    }
}
