//! A fake NSM manager for tests, demos and the VM test: the registry
//! (`registry.NetworkServiceEndpointRegistry`) and the next hop
//! (`networkservice.NetworkService`) on one unix socket, in memory.
//!
//! - **Registry.** Register stores the endpoint (stamping
//!   `initial_registration_time` on first sight), Unregister removes it,
//!   Find matches like the Go SDK's `matchutils` (exact name, subset of
//!   service names, labels per service, URL substring) and, with
//!   `watch: true`, keeps streaming updates and deletions. The expiry is
//!   the registry's: `now + expiration` (one minute unless
//!   [`FakeNsmgr::set_expiration`] says otherwise), or the client's if
//!   sooner, as the SDK's `expire` server does; entries whose
//!   `expiration_time` passes are dropped (and watchers told). Register
//!   and Unregister read the `path` header and answer with the updated
//!   one, as nsmgr's registry `grpcmetadata` and `updatepath` do. An
//!   `inode://` URL must name a socket the caller's connection sent by fd
//!   (the sdk's registry `recvfd`): the fd is kept, and the endpoint is
//!   stored (and found) as `unix:///proc/<our pid>/fd/<n>`, so whoever
//!   dials what Find returns reaches the endpoint through it.
//! - **Next hop.** Request answers with the connection it was sent, path
//!   and all, with a NOOP mechanism (the one already on the connection, or
//!   the first NOOP preference, or NOOP/LOCAL) and state UP. It can be told
//!   to fail the next N requests, and to answer with a given connection
//!   context (addresses, routes, MTU) as an endpoint with IPAM would.
//! - **Calls.** Every call is recorded as a [`Call`] (whose `Display` is
//!   the one-line form `fake-nsmgr` prints) and published to subscribers.
//! - **Going away.** [`FakeNsmgr::stop`] ends every stream, stops serving
//!   and removes the socket; [`FakeNsmgr::restart`] serves again on the
//!   same path, with the registry's memory kept unless
//!   [`FakeNsmgr::clear_registry`] wiped it (a registry that restarted
//!   empty).
//!
//! ```no_run
//! # async fn demo() -> Result<(), sriov_nsm::Error> {
//! use sriov_nsm::fake::FakeNsmgr;
//!
//! let mut nsmgr = FakeNsmgr::start("/tmp/test/nsm.io.sock").await?;
//! // NSM_CONNECT_TO for the code under test:
//! let connect_to = nsmgr.url();
//! # let _ = connect_to;
//! nsmgr.stop().await; // the registry goes away ...
//! nsmgr.restart().await?; // ... and comes back
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use sriov_api::nsm::connection::{Connection, Mechanism, State};
use sriov_api::nsm::connectioncontext::ConnectionContext;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_api::nsm::networkservice::network_service_server::{
    NetworkService, NetworkServiceServer,
};
use sriov_api::nsm::registry::network_service_endpoint_registry_server::{
    NetworkServiceEndpointRegistry, NetworkServiceEndpointRegistryServer,
};
use sriov_api::nsm::registry::{
    NetworkServiceEndpoint, NetworkServiceEndpointQuery, NetworkServiceEndpointResponse,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::grpcmetadata::{RegistryPath, RegistryPathSegment};
use crate::mechanism::{CLS_LOCAL, NOOP, is_noop};
use crate::security::Security;
use crate::{Error, NsmUrl, transport};
use sriov_chain::caller::{Caller, PeerIdentity};
use sriov_chain::elements::updatetoken::TokenSigner;

/// One call the fake received.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `NetworkServiceEndpointRegistry.Register`.
    Register(NetworkServiceEndpoint),
    /// `NetworkServiceEndpointRegistry.Find`.
    Find(NetworkServiceEndpointQuery),
    /// `NetworkServiceEndpointRegistry.Unregister`.
    Unregister(NetworkServiceEndpoint),
    /// `NetworkService.Request`.
    Request(NetworkServiceRequest),
    /// `NetworkService.Close`.
    Close(Connection),
}

fn services(nse: &NetworkServiceEndpoint) -> String {
    nse.network_service_names.join(",")
}

fn expires_in(nse: &NetworkServiceEndpoint) -> String {
    let Some(t) = nse
        .expiration_time
        .and_then(|t| SystemTime::try_from(t).ok())
    else {
        return "never".into();
    };
    match t.duration_since(SystemTime::now()) {
        Ok(d) => format!("{:.1}s", d.as_secs_f64()),
        Err(_) => "past".into(),
    }
}

fn mechanism_text(m: Option<&Mechanism>) -> String {
    m.map_or_else(|| "none".into(), |m| format!("{}/{}", m.r#type, m.cls))
}

fn path_text(conn: &Connection) -> String {
    let path = conn.path.clone().unwrap_or_default();
    let names: Vec<&str> = path.path_segments.iter().map(|s| s.name.as_str()).collect();
    format!("[{}]@{}", names.join(","), path.index)
}

/// The one-line form `fake-nsmgr` prints, `<verb> key=value ...`.
impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Register(nse) => {
                let labels: Vec<String> = nse
                    .network_service_labels
                    .iter()
                    .flat_map(|(svc, l)| {
                        let mut kv: Vec<_> = l.labels.iter().collect();
                        kv.sort();
                        kv.into_iter()
                            .map(move |(k, v)| format!("{svc}:{k}={v}"))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                write!(
                    f,
                    "register name={} services={} labels={} url={} expires_in={}",
                    nse.name,
                    services(nse),
                    labels.join(","),
                    nse.url,
                    expires_in(nse)
                )
            }
            Call::Find(q) => {
                let nse = q.network_service_endpoint.clone().unwrap_or_default();
                write!(
                    f,
                    "find name={} services={} watch={}",
                    nse.name,
                    services(&nse),
                    q.watch
                )
            }
            Call::Unregister(nse) => write!(f, "unregister name={}", nse.name),
            Call::Request(req) => {
                let conn = req.connection.clone().unwrap_or_default();
                let prefs: Vec<String> = req
                    .mechanism_preferences
                    .iter()
                    .map(|m| mechanism_text(Some(m)))
                    .collect();
                write!(
                    f,
                    "request id={} service={} mechanism={} preferences={} path={}",
                    conn.id,
                    conn.network_service,
                    mechanism_text(conn.mechanism.as_ref()),
                    prefs.join(","),
                    path_text(&conn)
                )
            }
            Call::Close(conn) => write!(
                f,
                "close id={} service={} mechanism={} path={}",
                conn.id,
                conn.network_service,
                mechanism_text(conn.mechanism.as_ref()),
                path_text(conn)
            ),
        }
    }
}

/// State shared by the servers, kept across stop and restart.
struct Shared {
    /// mTLS and the signer of the fake's own path tokens (secure mode).
    security: Security,
    signer: Option<Arc<dyn TokenSigner>>,
    endpoints: Mutex<BTreeMap<String, NetworkServiceEndpoint>>,
    calls: Mutex<Vec<Call>>,
    call_count: watch::Sender<usize>,
    events: broadcast::Sender<Call>,
    changes: broadcast::Sender<NetworkServiceEndpointResponse>,
    fail_next: Mutex<(u32, Code)>,
    /// Requests still to leave unanswered (the caller's deadline ends them).
    hang_next: Mutex<u32>,
    hold_watches: std::sync::atomic::AtomicBool,
    answer_context: Mutex<Option<ConnectionContext>>,
    expiration: Mutex<Duration>,
    /// The `path` header of each Register and Unregister, in order (`None`
    /// when a call carried none).
    paths: Mutex<Vec<Option<RegistryPath>>>,
    /// The socket each endpoint registered by fd (`inode://` URL) sent, as
    /// the sdk's registry `recvfd` keeps it: its `/proc/self/fd` path is the
    /// URL stored and found, through which anyone in this process dials it.
    received: Mutex<BTreeMap<String, OwnedFd>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_expired(nse: &NetworkServiceEndpoint, now: SystemTime) -> bool {
    nse.expiration_time
        .and_then(|t| SystemTime::try_from(t).ok())
        .is_some_and(|t| t <= now)
}

/// The Go SDK's `MatchNetworkServiceEndpoints(query, candidate)`.
fn matches(query: &NetworkServiceEndpoint, nse: &NetworkServiceEndpoint) -> bool {
    (query.name.is_empty() || query.name == nse.name)
        && query
            .network_service_names
            .iter()
            .all(|s| nse.network_service_names.contains(s))
        && query.network_service_labels.iter().all(|(svc, want)| {
            nse.network_service_labels.get(svc).is_some_and(|have| {
                want.labels
                    .iter()
                    .all(|(k, v)| have.labels.get(k) == Some(v))
            })
        })
        && (query.url.is_empty() || nse.url.contains(&query.url))
}

impl Shared {
    fn record(&self, call: Call) {
        let n = {
            let mut calls = lock(&self.calls);
            calls.push(call.clone());
            calls.len()
        };
        let _ = self.events.send(call);
        self.call_count.send_replace(n);
    }

    /// Records the caller's `path` header and advances it as nsmgr's
    /// registry `updatepath` does: an empty path gets the caller's segment
    /// and ours, a known one has both tokens refreshed, and the answer's
    /// index is the caller's.
    fn enter_path<T>(&self, request: &Request<T>) -> RegistryPath {
        let md = request.metadata();
        let sent = RegistryPath::from_metadata(md);
        lock(&self.paths).push(sent.clone());
        let mut path = sent.unwrap_or_default();
        let n = lock(&self.paths).len();
        // Secure mode, as nsmgr: the caller's segment gets the token it
        // sent beside the call, ours one signed for the caller.
        let caller_peer = request
            .extensions()
            .get::<sriov_authority::ConnInfo>()
            .and_then(|i| i.get::<PeerIdentity>())
            .cloned();
        let peer_token = Caller::from_call(None, md)
            .token
            .map(|t| t.token)
            .unwrap_or_else(|| format!("peer-token-{n}"));
        let our_token = self
            .signer
            .as_ref()
            .and_then(|s| s.sign(caller_peer.as_ref()).ok())
            .map(|t| t.token)
            .unwrap_or_else(|| format!("fake-nsmgr-token-{n}"));
        let peer = RegistryPathSegment { token: peer_token };
        let ours = RegistryPathSegment { token: our_token };
        let caller = path.index as usize;
        if path.segments.is_empty() {
            path.segments = vec![peer, ours];
            path.index = 0;
            return path;
        }
        if let Some(s) = path.segments.get_mut(caller) {
            *s = peer;
        }
        match path.segments.get_mut(caller + 1) {
            Some(s) => *s = ours,
            None => path.segments.push(ours),
        }
        path
    }

    /// Drops expired entries, telling watchers.
    fn sweep(&self) {
        let now = SystemTime::now();
        let gone: Vec<NetworkServiceEndpoint> = {
            let mut eps = lock(&self.endpoints);
            let names: Vec<String> = eps
                .values()
                .filter(|n| is_expired(n, now))
                .map(|n| n.name.clone())
                .collect();
            names.iter().filter_map(|n| eps.remove(n)).collect()
        };
        for nse in gone {
            let _ = self.changes.send(NetworkServiceEndpointResponse {
                network_service_endpoint: Some(nse),
                deleted: true,
            });
        }
    }

    fn current(&self, query: &NetworkServiceEndpoint) -> Vec<NetworkServiceEndpoint> {
        self.sweep();
        lock(&self.endpoints)
            .values()
            .filter(|n| matches(query, n))
            .cloned()
            .collect()
    }
}

#[derive(Clone)]
struct Registry {
    shared: Arc<Shared>,
    stopping: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl NetworkServiceEndpointRegistry for Registry {
    async fn register(
        &self,
        request: Request<NetworkServiceEndpoint>,
    ) -> Result<Response<NetworkServiceEndpoint>, Status> {
        let path = self.shared.enter_path(&request);
        let fd = match sriov_grpcfd::parse_inode_url(&request.get_ref().url) {
            Some((dev, ino)) => {
                let got = crate::transport::fds_of(&request)
                    .map(|t| t.get(dev, ino))
                    .transpose()
                    .map_err(|e| Status::resource_exhausted(e.to_string()))?
                    .flatten();
                match got {
                    Some(fd) => Some(fd),
                    None => {
                        let url = request.get_ref().url.clone();
                        self.shared.record(Call::Register(request.into_inner()));
                        return Err(Status::invalid_argument(format!(
                            "url {url}: no such file was sent by fd on this connection"
                        )));
                    }
                }
            }
            None => None,
        };
        let mut nse = request.into_inner();
        // Calls are recorded once handled, so a test that saw the call
        // also sees its effect.
        let received = Call::Register(nse.clone());
        if nse.name.is_empty() {
            self.shared.record(received);
            return Err(Status::invalid_argument("endpoint name is empty"));
        }
        // Stored under the path it can be dialled by; answered as sent.
        let sent_url = nse.url.clone();
        if let Some(fd) = fd {
            nse.url = format!("unix:///proc/{}/fd/{}", std::process::id(), fd.as_raw_fd());
            lock(&self.shared.received).insert(nse.name.clone(), fd);
        }
        {
            let mut eps = lock(&self.shared.endpoints);
            nse.initial_registration_time = eps
                .get(&nse.name)
                .and_then(|old| old.initial_registration_time)
                .or(nse.initial_registration_time)
                .or_else(|| Some(SystemTime::now().into()));
            let now = SystemTime::now();
            let ours = now + *lock(&self.shared.expiration);
            let sent = nse
                .expiration_time
                .and_then(|t| SystemTime::try_from(t).ok());
            nse.expiration_time = Some(sent.filter(|t| *t < ours).unwrap_or(ours).into());
            eps.insert(nse.name.clone(), nse.clone());
        }
        let _ = self.shared.changes.send(NetworkServiceEndpointResponse {
            network_service_endpoint: Some(nse.clone()),
            deleted: false,
        });
        self.shared.record(received);
        let mut answer = nse;
        answer.url = sent_url;
        Ok(with_path(Response::new(answer), &path))
    }

    type FindStream = ReceiverStream<Result<NetworkServiceEndpointResponse, Status>>;

    async fn find(
        &self,
        request: Request<NetworkServiceEndpointQuery>,
    ) -> Result<Response<Self::FindStream>, Status> {
        let query = request.into_inner();
        self.shared.record(Call::Find(query.clone()));
        let wanted = query.network_service_endpoint.clone().unwrap_or_default();
        // Subscribe before the snapshot so no change falls in between.
        let mut changes = self.shared.changes.subscribe();
        let now = self.shared.current(&wanted);
        let (tx, rx) = mpsc::channel(now.len() + 16);
        for nse in now {
            let _ = tx.try_send(Ok(NetworkServiceEndpointResponse {
                network_service_endpoint: Some(nse),
                deleted: false,
            }));
        }
        let hold = self
            .shared
            .hold_watches
            .load(std::sync::atomic::Ordering::Relaxed);
        if query.watch && hold {
            let mut stopping = self.stopping.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        // The guard wait_for yields is not Send: dropped here.
                        _ = stopping.wait_for(|s| *s).map(drop) => break,
                        () = tx.closed() => break,
                        change = changes.recv() => match change {
                            Ok(resp) => {
                                let relevant = resp
                                    .network_service_endpoint
                                    .as_ref()
                                    .is_some_and(|n| matches(&wanted, n));
                                if relevant && tx.send(Ok(resp)).await.is_err() {
                                    break;
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(broadcast::error::RecvError::Closed) => break,
                        },
                    }
                }
            });
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn unregister(
        &self,
        request: Request<NetworkServiceEndpoint>,
    ) -> Result<Response<()>, Status> {
        let path = self.shared.enter_path(&request);
        let nse = request.into_inner();
        let removed = lock(&self.shared.endpoints).remove(&nse.name);
        lock(&self.shared.received).remove(&nse.name);
        self.shared.record(Call::Unregister(nse));
        if let Some(old) = removed {
            let _ = self.shared.changes.send(NetworkServiceEndpointResponse {
                network_service_endpoint: Some(old),
                deleted: true,
            });
        }
        Ok(with_path(Response::new(()), &path))
    }
}

fn with_path<T>(mut resp: Response<T>, path: &RegistryPath) -> Response<T> {
    path.insert_into(resp.metadata_mut());
    resp
}

#[derive(Clone)]
struct NextHop {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl NetworkService for NextHop {
    async fn request(
        &self,
        request: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let req = request.into_inner();
        self.shared.record(Call::Request(req.clone()));
        let hang = {
            let mut h = lock(&self.shared.hang_next);
            let hang = *h > 0;
            *h = h.saturating_sub(1);
            hang
        };
        if hang {
            std::future::pending::<()>().await;
        }
        {
            let mut fail = lock(&self.shared.fail_next);
            if fail.0 > 0 {
                fail.0 -= 1;
                return Err(Status::new(
                    fail.1,
                    "fake next hop: told to fail this request",
                ));
            }
        }
        let mut conn = req.connection.unwrap_or_default();
        let mechanism = conn
            .mechanism
            .take()
            .filter(is_noop)
            .or_else(|| req.mechanism_preferences.into_iter().find(is_noop))
            .unwrap_or_else(|| Mechanism {
                cls: CLS_LOCAL.into(),
                r#type: NOOP.into(),
                parameters: Default::default(),
            });
        conn.mechanism = Some(mechanism);
        conn.state = State::Up.into();
        if let Some(context) = lock(&self.shared.answer_context).clone() {
            conn.context = Some(context);
        }
        Ok(Response::new(conn))
    }

    async fn close(&self, request: Request<Connection>) -> Result<Response<()>, Status> {
        self.shared.record(Call::Close(request.into_inner()));
        Ok(Response::new(()))
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    stopping: watch::Sender<bool>,
    server: JoinHandle<()>,
    sweeper: JoinHandle<()>,
}

/// The fake NSM manager. See the [module docs](self).
pub struct FakeNsmgr {
    socket: PathBuf,
    shared: Arc<Shared>,
    running: Option<Running>,
}

impl FakeNsmgr {
    /// Serves the fake on the unix socket `socket` (its directory is
    /// created; a stale socket is replaced). Must be called inside a tokio
    /// runtime.
    pub async fn start(socket: impl Into<PathBuf>) -> Result<Self, Error> {
        Self::start_secure(socket, Security::Plaintext, None).await
    }

    /// [`FakeNsmgr::start`], served with `security` (mTLS with the fake's
    /// own SVID) and signing its registry path segment with `signer`, as
    /// a stock nsmgr in a SPIRE cluster does.
    pub async fn start_secure(
        socket: impl Into<PathBuf>,
        security: Security,
        signer: Option<Arc<dyn TokenSigner>>,
    ) -> Result<Self, Error> {
        let (call_count, _) = watch::channel(0);
        let mut fake = Self {
            socket: socket.into(),
            shared: Arc::new(Shared {
                security,
                signer,
                endpoints: Mutex::default(),
                calls: Mutex::default(),
                call_count,
                events: broadcast::channel(1024).0,
                changes: broadcast::channel(1024).0,
                fail_next: Mutex::new((0, Code::Unavailable)),
                hang_next: Mutex::new(0),
                hold_watches: true.into(),
                answer_context: Mutex::default(),
                expiration: Mutex::new(Duration::from_secs(60)),
                paths: Mutex::default(),
                received: Mutex::default(),
            }),
            running: None,
        };
        fake.serve()?;
        Ok(fake)
    }

    fn serve(&mut self) -> Result<(), Error> {
        let incoming = transport::listen_unix_secure(&self.url(), None, &self.shared.security)?;
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (stopping, stopping_rx) = watch::channel(false);
        let registry = Registry {
            shared: self.shared.clone(),
            stopping: stopping_rx,
        };
        let next_hop = NextHop {
            shared: self.shared.clone(),
        };
        let server = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(NetworkServiceEndpointRegistryServer::new(registry))
                .add_service(NetworkServiceServer::new(next_hop))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(err) = result {
                tracing::warn!(%err, "fake nsmgr server failed");
            }
        });
        let shared = self.shared.clone();
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                shared.sweep();
            }
        });
        self.running = Some(Running {
            stop,
            stopping,
            server,
            sweeper,
        });
        Ok(())
    }

    /// `unix://<socket>`: what `NSM_CONNECT_TO` should be.
    pub fn url(&self) -> NsmUrl {
        NsmUrl::Unix(self.socket.clone())
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether it is serving.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Ends every watch stream, stops serving and removes the socket, as
    /// an NSM manager that went away. Recorded calls and registry entries
    /// are kept.
    pub async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.stopping.send_replace(true);
        let _ = running.stop.send(());
        running.sweeper.abort();
        // Graceful shutdown waits for open connections to go; clients that
        // keep theirs idle must not hold a test up.
        let abort = running.server.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), running.server)
            .await
            .is_err()
        {
            abort.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Serves again on the same socket after [`FakeNsmgr::stop`].
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.stop().await;
        self.serve()
    }

    /// Forgets every registered endpoint (without telling watchers), as a
    /// registry that restarted with empty memory.
    pub fn clear_registry(&self) {
        lock(&self.shared.endpoints).clear();
    }

    /// How many endpoints' sockets are held because they registered by fd.
    pub fn sockets_received(&self) -> usize {
        lock(&self.shared.received).len()
    }

    /// The endpoints registered and not expired.
    pub fn endpoints(&self) -> Vec<NetworkServiceEndpoint> {
        self.shared.current(&NetworkServiceEndpoint::default())
    }

    /// The endpoint named `name`, if registered and not expired.
    pub fn endpoint(&self, name: &str) -> Option<NetworkServiceEndpoint> {
        self.endpoints().into_iter().find(|n| n.name == name)
    }

    /// The forwarders nsmgr would try, in order, as the SDK's
    /// `discoverforwarder` picks them: endpoints registered for the network
    /// service `forwarder`, then, of those, the ones whose labels under
    /// that service include `match_labels` (what a NetworkService match
    /// without metadata means: `p2p: true`).
    pub fn discover_forwarders(
        &self,
        match_labels: &BTreeMap<String, String>,
    ) -> Vec<NetworkServiceEndpoint> {
        const FORWARDER: &str = "forwarder";
        let query = NetworkServiceEndpoint {
            network_service_names: vec![FORWARDER.into()],
            ..Default::default()
        };
        self.shared
            .current(&query)
            .into_iter()
            .filter(|nse| {
                nse.network_service_labels
                    .get(FORWARDER)
                    .is_some_and(|have| {
                        match_labels
                            .iter()
                            .all(|(k, v)| have.labels.get(k) == Some(v))
                    })
            })
            .collect()
    }

    /// How long a registration lasts here when the client asks for longer
    /// or for nothing (default one minute).
    pub fn set_expiration(&self, expiration: Duration) {
        *lock(&self.shared.expiration) = expiration;
    }

    /// The `path` header of every Register and Unregister received, in
    /// order; `None` for a call that carried none.
    pub fn registry_paths(&self) -> Vec<Option<RegistryPath>> {
        lock(&self.shared.paths).clone()
    }

    /// Stores `nse` as if it had been registered, without recording a call
    /// (for Find tests that need endpoints of other parties).
    pub fn insert_endpoint(&self, nse: NetworkServiceEndpoint) {
        lock(&self.shared.endpoints).insert(nse.name.clone(), nse);
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared.calls).clone()
    }

    /// The Register calls received.
    pub fn registers(&self) -> Vec<NetworkServiceEndpoint> {
        self.filter_calls(|c| match c {
            Call::Register(n) => Some(n.clone()),
            _ => None,
        })
    }

    /// The Unregister calls received.
    pub fn unregisters(&self) -> Vec<NetworkServiceEndpoint> {
        self.filter_calls(|c| match c {
            Call::Unregister(n) => Some(n.clone()),
            _ => None,
        })
    }

    /// The Request calls received (including failed ones).
    pub fn requests(&self) -> Vec<NetworkServiceRequest> {
        self.filter_calls(|c| match c {
            Call::Request(r) => Some(r.clone()),
            _ => None,
        })
    }

    /// The Close calls received.
    pub fn closes(&self) -> Vec<Connection> {
        self.filter_calls(|c| match c {
            Call::Close(c) => Some(c.clone()),
            _ => None,
        })
    }

    fn filter_calls<T>(&self, f: impl Fn(&Call) -> Option<T>) -> Vec<T> {
        lock(&self.shared.calls).iter().filter_map(f).collect()
    }

    /// Every call from now on, as it arrives.
    pub fn subscribe(&self) -> broadcast::Receiver<Call> {
        self.shared.events.subscribe()
    }

    /// Waits until `done` holds for the calls recorded, or `timeout`
    /// passes; returns whether it held.
    pub async fn wait_for_calls(&self, timeout: Duration, done: impl Fn(&[Call]) -> bool) -> bool {
        let mut count = self.shared.call_count.subscribe();
        let wait = async {
            loop {
                if done(&lock(&self.shared.calls)) {
                    return;
                }
                if count.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok() && done(&self.calls())
    }

    /// With `false`, a `watch: true` Find answers like a plain one and
    /// ends, as a registry that does not support watching (default: true).
    pub fn hold_watches(&self, hold: bool) {
        self.shared
            .hold_watches
            .store(hold, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes every Request's answer carry `context` (addresses, routes,
    /// MTU) in place of the one sent, as an endpoint with IPAM would;
    /// `None` (the default) answers with the context as sent.
    pub fn answer_with_context(&self, context: Option<ConnectionContext>) {
        *lock(&self.shared.answer_context) = context;
    }

    /// Fails the next `n` Requests with `code` (answers resume after).
    pub fn fail_next_requests(&self, n: u32, code: Code) {
        *lock(&self.shared.fail_next) = (n, code);
    }

    /// Never answers the next `n` Requests: a next hop that hangs, which
    /// only the caller's deadline ends.
    pub fn hang_next_requests(&self, n: u32) {
        *lock(&self.shared.hang_next) = n;
    }
}

impl Drop for FakeNsmgr {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stopping.send_replace(true);
            let _ = running.stop.send(());
            running.sweeper.abort();
            running.server.abort();
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}
