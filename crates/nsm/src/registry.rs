//! [`RegistryClient`]: registering the forwarder as an NSE and finding
//! endpoints, through `registry.NetworkServiceEndpointRegistry` at
//! `NSM_CONNECT_TO`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use sriov_api::Backoff;
use sriov_api::nsm::registry::network_service_endpoint_registry_client::NetworkServiceEndpointRegistryClient;
use sriov_api::nsm::registry::{
    NetworkServiceEndpoint, NetworkServiceEndpointQuery, NetworkServiceLabels,
};
use sriov_chain::{EndpointFinder, EndpointQuery};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::credentials::CallCredentials;
use crate::grpcmetadata::RegistryPath;
use crate::security::Security;
use crate::transport::ChannelFds;
use crate::{Error, NsmUrl, transport};
use sriov_chain::elements::updatetoken::TokenSigner;
use sriov_policy::{Input, Peer as PolicyPeer, Policies};

/// What the forwarder registers, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `NSM_NAME`: the endpoint name.
    pub name: String,
    /// `NSM_NSNAME`: the one network service the forwarder provides.
    pub network_service: String,
    /// `NSM_LABELS`: registered as the labels of that network service.
    pub labels: BTreeMap<String, String>,
    /// `NSM_LISTEN_ON`: where the forwarder serves `NetworkService`.
    pub url: NsmUrl,
    /// When to refresh if the registry answers without an
    /// `expiration_time` (`NSM_MAX_TOKEN_LIFETIME`). The expiry itself is
    /// the registry's to choose, as for the Go forwarder.
    pub lifetime: Duration,
}

impl Registration {
    /// The `NetworkServiceEndpoint` sent, with the fields the Go forwarder
    /// fills (cmd-forwarder-sriov `main.go`): name, `network_service_names`,
    /// `network_service_labels` keyed by the service, `url` in gRPC target
    /// form, and no `expiration_time` (the registry sets its own).
    pub fn endpoint(&self) -> NetworkServiceEndpoint {
        NetworkServiceEndpoint {
            name: self.name.clone(),
            network_service_names: vec![self.network_service.clone()],
            network_service_labels: [(
                self.network_service.clone(),
                NetworkServiceLabels {
                    labels: self.labels.clone().into_iter().collect(),
                },
            )]
            .into_iter()
            .collect(),
            url: self.url.to_target(),
            ..Default::default()
        }
    }
}

/// The registry client's retry waits: 100 ms doubling up to 5 s.
const DEFAULT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Where a [`RegistrationHandle`]'s background task is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not registered yet; the first attempt is under way.
    Pending,
    /// The registry holds the endpoint.
    Registered {
        /// When the registry will drop it unless refreshed.
        expires: SystemTime,
        /// Successful Register calls so far (first one plus refreshes and
        /// re-registrations).
        registrations: u64,
    },
    /// The last attempt failed; retrying with backoff.
    Retrying {
        /// Consecutive failed attempts.
        attempts: u32,
        /// The last failure.
        error: String,
    },
    /// Stopped by [`RegistrationHandle::shutdown`].
    Stopped,
}

/// The registry at `NSM_CONNECT_TO`: Register, Find and Unregister of
/// network service endpoints, plus [`RegistryClient::keep_registered`],
/// the background task that keeps the forwarder registered.
#[derive(Clone)]
pub struct RegistryClient {
    url: NsmUrl,
    client: NetworkServiceEndpointRegistryClient<Channel>,
    call_timeout: Duration,
    backoff: Backoff,
    /// The registry path sent as the `path` header and updated from the
    /// answer's (see [`crate::grpcmetadata`]); shared by clones, so the
    /// background task's refreshes and the final Unregister carry it.
    path: Arc<Mutex<RegistryPath>>,
    /// The channel's connections, for sending our socket by fd.
    fds: ChannelFds,
    /// Whether a `unix://` URL is registered as the `inode://` of its
    /// socket, sent by fd (see [`RegistryClient::with_fd_passing`]).
    fd_passing: bool,
    /// Our token beside every call (secure mode).
    credentials: Option<CallCredentials>,
    /// `NSM_REGISTRY_CLIENT_POLICIES`, checked on every Register and
    /// Unregister answer (secure mode).
    policies: Option<Arc<Policies>>,
    /// The path ids of the names we registered, for `client_allowed`.
    path_ids: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
}

impl RegistryClient {
    /// A client of the registry at `url`, each connection attempt bounded
    /// by `dial_timeout`. Connects lazily and again after the registry
    /// restarts. Must be called inside a tokio runtime.
    pub fn new(url: NsmUrl, dial_timeout: Duration) -> Result<Self, Error> {
        Self::secure(url, dial_timeout, &Security::Plaintext, None, None)
    }

    /// [`RegistryClient::new`] with `security`; with a `signer`, every call
    /// carries our token for the registry (NSM's per-RPC credentials), and
    /// with `policies` every Register and Unregister answer is checked
    /// against them (the Go forwarder's
    /// `registryauthorize.WithPolicies(NSM_REGISTRY_CLIENT_POLICIES)`).
    pub fn secure(
        url: NsmUrl,
        dial_timeout: Duration,
        security: &Security,
        signer: Option<Arc<dyn TokenSigner>>,
        policies: Option<Arc<Policies>>,
    ) -> Result<Self, Error> {
        let dialed = transport::dial_lazy_secure(&url, dial_timeout, security)?;
        let (channel, fds) = (dialed.channel, dialed.fds);
        let credentials = signer.map(|s| CallCredentials::new(s, dialed.server));
        Ok(Self {
            credentials,
            policies,
            path_ids: Arc::default(),
            url,
            client: NetworkServiceEndpointRegistryClient::new(channel)
                .max_decoding_message_size(sriov_api::NSM_MAX_MESSAGE_BYTES)
                .max_encoding_message_size(sriov_api::NSM_MAX_MESSAGE_BYTES),
            call_timeout: Duration::from_secs(5),
            backoff: DEFAULT_BACKOFF,
            path: Arc::default(),
            fds,
            fd_passing: true,
        })
    }

    /// With `on` (the default, as the Go forwarder's registry chain does
    /// with the sdk's `sendfd`), an endpoint whose URL is `unix://<path>` is
    /// registered as `inode://<dev>/<ino>` of that socket, and the socket
    /// goes to the registry by fd (opened `O_PATH`) on every connection the
    /// call may use: the NSM manager dials us through the fd it received,
    /// with no need to see our mount namespace. The registry's answer gets
    /// the `unix://` URL back. Off, the URL is sent as it is.
    pub fn with_fd_passing(mut self, on: bool) -> Self {
        self.fd_passing = on;
        self
    }

    /// `nse` as sent: with fd passing, its `unix://` URL replaced by the
    /// socket's `inode://` one and the socket queued to go with the call.
    /// Returns the URL replaced, to restore in the answer.
    fn outgoing(
        &self,
        mut nse: NetworkServiceEndpoint,
    ) -> Result<(NetworkServiceEndpoint, Option<String>), Error> {
        if !self.fd_passing || !matches!(self.url, NsmUrl::Unix(_)) {
            return Ok((nse, None));
        }
        let Ok(NsmUrl::Unix(path)) = NsmUrl::parse(&nse.url) else {
            return Ok((nse, None));
        };
        let send_err = |cause: String| Error::SendFd {
            path: path.clone(),
            cause,
        };
        let meta = std::fs::metadata(&path).map_err(|e| send_err(e.to_string()))?;
        let inode = sriov_grpcfd::inode_url(meta.dev(), meta.ino());
        self.fds.send_on_connect(path.clone());
        if let Some(sender) = self.fds.current() {
            sender
                .send_file(&path)
                .map_err(|e| send_err(e.to_string()))?;
        }
        let unix = std::mem::replace(&mut nse.url, inode);
        Ok((nse, Some(unix)))
    }

    /// Bounds each Register, Unregister and Find call (default 5 s).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Sets the retry backoff of [`RegistryClient::keep_registered`].
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The registry's URL.
    pub fn url(&self) -> &NsmUrl {
        &self.url
    }

    pub(crate) async fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(self.call_timeout);
        sriov_telemetry::grpc::inject_context(req.metadata_mut());
        if let Some(c) = &self.credentials
            && let Err(e) = c.apply(&mut req).await
        {
            // The registry's policies refuse the call and say so.
            tracing::warn!(error = %e, "registry call sent without our token");
        }
        req
    }

    /// Checks the registry's answer against the client policies: the path
    /// it answered, and who it is.
    fn authorize(&self, op: &'static str, name: &str) -> Result<(), Error> {
        let Some(policies) = &self.policies else {
            return Ok(());
        };
        let path = self.current_path();
        let tokens: Vec<String> = path.segments.iter().map(|s| s.token.clone()).collect();
        let server = self.credentials.as_ref().and_then(|c| c.server().get());
        let ids = self
            .path_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let input = Input::registry(
            name,
            path.index,
            &tokens,
            &ids,
            &PolicyPeer {
                spiffe_id: server.as_ref().map(|p| p.spiffe_id.as_str()),
                certificate_der: server.as_ref().map(|p| &*p.cert_der),
            },
        );
        policies.check(&input).map_err(|d| Error::Registry {
            url: self.url.to_string(),
            op,
            name: name.to_string(),
            status: Status::permission_denied(format!(
                "the registry's answer is denied by policy {}: {}",
                d.policy, d.reason
            )),
        })?;
        let mut ids = self.path_ids.lock().unwrap_or_else(PoisonError::into_inner);
        if op == "Unregister" {
            ids.remove(name);
        } else if !tokens.is_empty() {
            // The id the policies judged: the first token's subject, as
            // the input read it.
            let id = input.as_json()["resource_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            ids.insert(name.to_string(), vec![id]);
        }
        Ok(())
    }

    /// A Register or Unregister request: [`Self::request`] plus the path.
    async fn with_path<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = self.request(msg).await;
        self.current_path().insert_into(req.metadata_mut());
        req
    }

    /// Keeps the path the registry answered with, if it sent one.
    fn keep_path(&self, answer: &tonic::metadata::MetadataMap) {
        if let Some(path) = RegistryPath::from_metadata(answer) {
            *self.path.lock().unwrap_or_else(PoisonError::into_inner) = path;
        }
    }

    /// The registry path as last answered (empty before the first call).
    pub fn current_path(&self) -> RegistryPath {
        self.path
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn error(&self, op: &'static str, name: &str, status: Status) -> Error {
        Error::Registry {
            url: self.url.to_string(),
            op,
            name: name.to_string(),
            status,
        }
    }

    /// One Register call, with the registry path as the `path` header;
    /// returns what the registry stored, with the `expiration_time` it
    /// chose.
    pub async fn register(
        &self,
        nse: NetworkServiceEndpoint,
    ) -> Result<NetworkServiceEndpoint, Error> {
        let name = nse.name.clone();
        let (nse, unix) = self.outgoing(nse)?;
        let sent = nse.url.clone();
        let answer = self
            .client
            .clone()
            .register(self.with_path(nse).await)
            .await
            .map_err(|s| self.error("Register", &name, s))?;
        self.keep_path(answer.metadata());
        if let Err(denied) = self.authorize("Register", &name) {
            // As the SDK: a registration the policies refuse is not kept.
            let nse = answer.into_inner();
            let _ = self
                .client
                .clone()
                .unregister(self.with_path(nse).await)
                .await;
            return Err(denied);
        }
        let mut stored = answer.into_inner();
        if let Some(unix) = unix
            && stored.url == sent
        {
            stored.url = unix;
        }
        Ok(stored)
    }

    /// One Unregister call.
    pub async fn unregister(&self, nse: NetworkServiceEndpoint) -> Result<(), Error> {
        let name = nse.name.clone();
        // Leaving needs no fd: a socket gone already must not keep us registered.
        let nse = match self.outgoing(nse.clone()) {
            Ok((sent, _)) => sent,
            Err(e) => {
                tracing::debug!(error = %e, "unregistering with the URL as it is");
                nse
            }
        };
        let answer = self
            .client
            .clone()
            .unregister(self.with_path(nse).await)
            .await
            .map_err(|s| self.error("Unregister", &name, s))?;
        self.keep_path(answer.metadata());
        self.authorize("Unregister", &name)?;
        Ok(())
    }

    /// Endpoints matching `query` that are neither deleted nor expired: by
    /// exact name when the query names one, else every endpoint of the
    /// network service.
    pub async fn find_endpoints(
        &self,
        query: &EndpointQuery,
    ) -> Result<Vec<NetworkServiceEndpoint>, Error> {
        let name = query.endpoint_name.clone().unwrap_or_default();
        let wanted = match &query.endpoint_name {
            Some(name) => NetworkServiceEndpoint {
                name: name.clone(),
                ..Default::default()
            },
            None => NetworkServiceEndpoint {
                network_service_names: vec![query.network_service.clone()],
                ..Default::default()
            },
        };
        let find = self
            .request(NetworkServiceEndpointQuery {
                network_service_endpoint: Some(wanted),
                watch: false,
            })
            .await;
        let mut stream = self
            .client
            .clone()
            .find(find)
            .await
            .map_err(|s| self.error("Find", &name, s))?
            .into_inner();
        let now = SystemTime::now();
        let mut found: Vec<NetworkServiceEndpoint> = Vec::new();
        while let Some(resp) = stream
            .message()
            .await
            .map_err(|s| self.error("Find", &name, s))?
        {
            let Some(nse) = resp.network_service_endpoint else {
                continue;
            };
            let wrong_name = query.endpoint_name.as_ref().is_some_and(|n| *n != nse.name);
            // A registry may announce one endpoint more than once; the
            // last word about it wins.
            found.retain(|f| f.name != nse.name);
            if resp.deleted || wrong_name || expired(&nse, now) {
                continue;
            }
            found.push(nse);
        }
        Ok(found)
    }

    /// Registers `registration` in the background and keeps it registered
    /// until [`RegistrationHandle::shutdown`]. See the crate docs for the
    /// lifecycle. Must be called inside a tokio runtime.
    pub fn keep_registered(&self, registration: Registration) -> RegistrationHandle {
        let (state_tx, state_rx) = watch::channel(RegistrationState::Pending);
        let (stop_tx, stop_rx) = oneshot::channel();
        let name = registration.name.clone();
        let task = tokio::spawn(keep(self.clone(), registration, state_tx, stop_rx));
        RegistrationHandle {
            name,
            client: self.clone(),
            state: state_rx,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Resolves when the registry no longer holds `name`: the watch stream
    /// ends or fails (the registry went away) or reports the entry deleted
    /// (expired there, or removed by someone else). Never resolves when the
    /// registry cannot watch, so the refresh timer alone is used then.
    async fn lost(&self, name: &str) {
        let query = NetworkServiceEndpointQuery {
            network_service_endpoint: Some(NetworkServiceEndpoint {
                name: name.to_string(),
                ..Default::default()
            }),
            watch: true,
        };
        // No deadline: this stream lives as long as the registration.
        let mut stream = match self.client.clone().find(query).await {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == Code::Unimplemented => {
                return std::future::pending().await;
            }
            Err(s) => {
                tracing::debug!(registry = %self.url, error = %s, "watch could not start");
                return;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    let ours = resp
                        .network_service_endpoint
                        .as_ref()
                        .is_some_and(|n| n.name == name);
                    if ours && resp.deleted {
                        tracing::warn!(registry = %self.url, endpoint = name, "registry dropped our endpoint");
                        return;
                    }
                }
                Ok(None) => {
                    tracing::warn!(registry = %self.url, endpoint = name, "registry closed the watch");
                    return;
                }
                Err(s) => {
                    tracing::warn!(registry = %self.url, endpoint = name, error = %s, "registry connection lost");
                    return;
                }
            }
        }
    }
}

fn expired(nse: &NetworkServiceEndpoint, now: SystemTime) -> bool {
    nse.expiration_time
        .and_then(|t| SystemTime::try_from(t).ok())
        .is_some_and(|t| t <= now)
}

impl EndpointFinder for RegistryClient {
    fn find(
        &self,
        query: EndpointQuery,
    ) -> BoxFuture<'static, Result<Vec<NetworkServiceEndpoint>, Status>> {
        let this = self.clone();
        Box::pin(async move { this.find_endpoints(&query).await.map_err(Status::from) })
    }
}

/// A watch that ends this soon after it opened did not see the registry
/// go away; it is a registry that does not hold watch streams open.
const QUICK_LOSS: Duration = Duration::from_secs(1);
/// After this many quick losses in a row, stop watching and rely on the
/// refresh timer, so such a registry is not hammered.
const MAX_QUICK_LOSSES: u32 = 3;

/// The background task of [`RegistryClient::keep_registered`]. Returns
/// the last endpoint the registry accepted, for Unregister.
async fn keep(
    client: RegistryClient,
    registration: Registration,
    state: watch::Sender<RegistrationState>,
    mut stop: oneshot::Receiver<()>,
) -> Option<NetworkServiceEndpoint> {
    let mut last: Option<NetworkServiceEndpoint> = None;
    let mut registrations = 0u64;
    let mut attempts = 0u32;
    let mut backoff = client.backoff;
    let mut quick_losses = 0u32;
    loop {
        let mut nse = registration.endpoint();
        // The registry's first-registration stamp survives refreshes.
        nse.initial_registration_time = last.as_ref().and_then(|l| l.initial_registration_time);
        let result = tokio::select! {
            _ = &mut stop => {
                // The registry may have stored this one already; make sure
                // shutdown unregisters it.
                last = Some(nse);
                break;
            }
            r = client.register(nse.clone()) => r,
        };
        match result {
            Ok(stored) => {
                registrations += 1;
                attempts = 0;
                backoff.reset();
                let now = SystemTime::now();
                let expires = stored
                    .expiration_time
                    .and_then(|t| SystemTime::try_from(t).ok())
                    .unwrap_or(now + registration.lifetime);
                tracing::debug!(registry = %client.url, endpoint = %registration.name, ?expires, "registered");
                last = Some(NetworkServiceEndpoint {
                    initial_registration_time: stored.initial_registration_time,
                    ..nse
                });
                state.send_replace(RegistrationState::Registered {
                    expires,
                    registrations,
                });
                // Refresh with a third of the lifetime left, as the Go
                // SDK's registry refresh client does, which leaves room
                // for retries before the entry expires. The floor keeps an
                // expiry already past (clock skew) from spinning.
                let refresh_in = (expires.duration_since(now).unwrap_or_default() * 2 / 3)
                    .max(backoff.initial());
                let watching = quick_losses < MAX_QUICK_LOSSES;
                let opened = Instant::now();
                tokio::select! {
                    _ = &mut stop => break,
                    () = tokio::time::sleep(refresh_in) => {
                        // A registry that would not hold a watch gets
                        // another chance each refresh.
                        if !watching {
                            quick_losses = 0;
                        }
                        continue;
                    }
                    () = client.lost(&registration.name), if watching => {
                        if opened.elapsed() < QUICK_LOSS {
                            quick_losses += 1;
                        } else {
                            quick_losses = 0;
                        }
                    }
                }
                // Give a restarting registry a moment before knocking.
                tokio::select! {
                    _ = &mut stop => break,
                    () = tokio::time::sleep(backoff.initial()) => {}
                }
            }
            Err(err) => {
                attempts = attempts.saturating_add(1);
                let delay = backoff.next_delay();
                tracing::warn!(%err, attempts, retry_in = ?delay, "registration failed");
                state.send_replace(RegistrationState::Retrying {
                    attempts,
                    error: err.to_string(),
                });
                tokio::select! {
                    _ = &mut stop => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    state.send_replace(RegistrationState::Stopped);
    last
}

/// Owns the background registration task. Dropping it stops the task
/// without unregistering (the entry then expires by itself); call
/// [`RegistrationHandle::shutdown`] to unregister.
pub struct RegistrationHandle {
    name: String,
    client: RegistryClient,
    state: watch::Receiver<RegistrationState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Option<NetworkServiceEndpoint>>>,
}

impl RegistrationHandle {
    /// The endpoint name being kept registered.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// A receiver of every state change.
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Waits until the registry holds the endpoint (returns at once if it
    /// already does) and returns that state. Wrap it in a timeout to bound
    /// start-up.
    pub async fn registered(&self) -> Result<RegistrationState, Error> {
        let mut rx = self.state.clone();
        rx.wait_for(|s| matches!(s, RegistrationState::Registered { .. }))
            .await
            .map(|s| s.clone())
            .map_err(|_| Error::TaskGone {
                name: self.name.clone(),
            })
    }

    /// Stops refreshing and unregisters the endpoint if it was ever
    /// registered. An unreachable registry is reported as an error; the
    /// entry then expires there by itself.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        let last = task.await.map_err(|_| Error::TaskGone {
            name: self.name.clone(),
        })?;
        match last {
            Some(nse) => self.client.unregister(nse).await,
            None => Ok(()),
        }
    }
}

impl Drop for RegistrationHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
