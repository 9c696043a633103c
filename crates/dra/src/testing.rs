//! An API server stand-in for tests: the part of `resource.k8s.io/v1` the
//! plugin uses, over real HTTP/1.1 on 127.0.0.1, so the code under test goes
//! through kube-rs exactly as against a cluster.
//!
//! Served: ResourceSlices (cluster-scoped) create, get, update (409 on a
//! stale resourceVersion), delete, list with `fieldSelector` (`metadata.name`,
//! `spec.nodeName`, `spec.driver`, as the real server allows) and
//! `labelSelector`, and watch (`?watch=true`, newline-delimited
//! `WatchEvent`s, from a resourceVersion or from the current state);
//! ResourceClaims get (namespaced, preloaded with
//! [`FakeApiServer::put_claim`]) and create (`POST`, for drivers in another
//! process; the client's `metadata.uid` is kept).
//!
//! Everything written is validated more strictly than a real server: it must
//! deserialize into k8s-openapi's types and serialize back to the same JSON
//! (so an unknown or misspelled field is refused rather than silently
//! dropped), and pass the API's ResourceSlice rules (required fields, one
//! node selection, DNS names, at most 128 devices, qualified attribute
//! names, value lengths). A refusal is a 422 `Status`, as the API server's.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::attributes::{MAX_ATTRIBUTES, check_attribute, is_dns_label, is_dns_subdomain};
use crate::slices::MAX_DEVICES_PER_SLICE;

type Body = BoxBody<Bytes, Infallible>;

const SLICES: &str = "/apis/resource.k8s.io/v1/resourceslices";
const CLAIMS_PREFIX: &str = "/apis/resource.k8s.io/v1/namespaces/";
/// Longest driver name (`DriverNameMaxLength`).
const MAX_DRIVER_LEN: usize = 63;

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path.
    pub path: String,
    /// The raw query.
    pub query: String,
    /// The status answered.
    pub status: u16,
}

impl LoggedRequest {
    /// Whether it asked for a change (POST, PUT, PATCH, DELETE).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// A stored change, for watchers.
#[derive(Debug, Clone)]
struct Change {
    version: u64,
    kind: &'static str,
    slice: ResourceSlice,
}

#[derive(Default)]
struct State {
    version: u64,
    uids: u64,
    slices: BTreeMap<String, ResourceSlice>,
    history: Vec<Change>,
    claims: BTreeMap<(String, String), ResourceClaim>,
    log: Vec<LoggedRequest>,
    conflicts_to_inject: u32,
}

struct Shared {
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked mid-request must not hide later assertions.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a change and tells watchers, under one lock so no watcher
    /// misses or doubles it.
    fn record(&self, state: &mut State, kind: &'static str, slice: ResourceSlice) {
        let change = Change {
            version: state.version,
            kind,
            slice,
        };
        state.history.push(change.clone());
        let _ = self.changes.send(change);
    }
}

/// The fake API server. Stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    /// Starts serving on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (changes, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            // A real API server never lists at resourceVersion "0", which a watch reads as
            // "from any state" and would skip changes made between a list and its watch.
            state: Mutex::new(State {
                version: 1,
                ..State::default()
            }),
            changes,
        });
        let task = tokio::spawn(accept(listener, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for it (no auth, plain HTTP).
    pub fn client(&self) -> Result<kube::Client, kube::Error> {
        let uri = self
            .url()
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| kube::Error::Service(Box::new(e)))?;
        kube::Client::try_from(kube::Config::new(uri))
    }

    /// Writes a kubeconfig pointing at it into `dir`; returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        use base64::Engine as _;
        // kube builds its TLS settings even for an http:// server, and without a CA it asks
        // the platform's trust store, which a minimal host (the VM test's initramfs, a
        // scratch image) lacks. A throwaway CA, never used over plain HTTP, keeps the
        // client to the kubeconfig, as in a pod (the service account's ca.crt).
        let ca = rcgen::generate_simple_self_signed(vec!["fake-apiserver".to_string()])
            .map_err(std::io::Error::other)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = b64.encode(ca.cert.der());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        );
        let ca_data = b64.encode(pem);
        // JSON is YAML, and keeps this free of a YAML writer.
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {
                "server": self.url(),
                "certificate-authority-data": ca_data,
            }}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        });
        let path = dir.join("kubeconfig");
        std::fs::write(&path, config.to_string())?;
        Ok(path)
    }

    /// Every ResourceSlice stored, by name.
    pub fn slices(&self) -> Vec<ResourceSlice> {
        self.shared.lock().slices.values().cloned().collect()
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }

    /// Makes a ResourceClaim readable.
    pub fn put_claim(&self, claim: ResourceClaim) {
        let namespace = claim.metadata.namespace.clone().unwrap_or_default();
        let name = claim.metadata.name.clone().unwrap_or_default();
        self.shared.lock().claims.insert((namespace, name), claim);
    }

    /// The next `n` updates (PUT) are refused with 409 Conflict, as when
    /// another writer got in first.
    pub fn inject_conflicts(&self, n: u32) {
        self.shared.lock().conflicts_to_inject = n;
    }

    /// Deletes a slice as someone else would (watchers see it).
    pub fn delete_slice_behind_back(&self, name: &str) -> bool {
        let shared = &self.shared;
        let mut state = shared.lock();
        let Some(slice) = state.slices.remove(name) else {
            return false;
        };
        state.version += 1;
        shared.record(&mut state, "DELETED", slice);
        true
    }

    /// Changes a slice as someone else would (watchers see it).
    pub fn modify_slice_behind_back(
        &self,
        name: &str,
        edit: impl FnOnce(&mut ResourceSlice),
    ) -> bool {
        let shared = &self.shared;
        let mut state = shared.lock();
        state.version += 1;
        let version = state.version;
        let Some(slice) = state.slices.get_mut(name) else {
            return false;
        };
        edit(slice);
        slice.metadata.resource_version = Some(version.to_string());
        let slice = slice.clone();
        shared.record(&mut state, "MODIFIED", slice);
        true
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A `Status` object as the API server sends with every refusal.
fn status(code: StatusCode, reason: &str, message: impl Into<String>) -> Response<Body> {
    full(
        code,
        json!({
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "code": code.as_u16(),
            "reason": reason,
            "message": message.into(),
            "metadata": {},
        }),
    )
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

async fn handle(shared: Arc<Shared>, request: Request<hyper::body::Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
    };
    let params = parse_query(&query);
    let response = route(&shared, &method, &path, &params, &body);
    shared.lock().log.push(LoggedRequest {
        method: method.to_string(),
        path,
        query,
        status: response.status().as_u16(),
    });
    response
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    params: &BTreeMap<String, String>,
    body: &[u8],
) -> Response<Body> {
    if path == SLICES {
        return match *method {
            Method::GET if params.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                watch(shared, params)
            }
            Method::GET => list(shared, params),
            Method::POST => create(shared, body),
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} {path}"),
            ),
        };
    }
    if let Some(name) = path.strip_prefix(SLICES).and_then(|p| p.strip_prefix('/')) {
        if name.contains('/') {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no route {path}"),
            );
        }
        return match *method {
            Method::GET => get(shared, name),
            Method::PUT => update(shared, name, body),
            Method::DELETE => delete(shared, name),
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} {path}"),
            ),
        };
    }
    if let Some(rest) = path.strip_prefix(CLAIMS_PREFIX) {
        let parts: Vec<&str> = rest.split('/').collect();
        if let [namespace, "resourceclaims"] = parts.as_slice() {
            if *method != Method::POST {
                return status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!("{method} {path}"),
                );
            }
            return create_claim(shared, namespace, body);
        }
        if let [namespace, "resourceclaims", name] = parts.as_slice() {
            if *method != Method::GET {
                return status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!("{method} {path}"),
                );
            }
            let state = shared.lock();
            return match state.claims.get(&(namespace.to_string(), name.to_string())) {
                Some(claim) => full(StatusCode::OK, to_json(claim)),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("resourceclaims.resource.k8s.io \"{name}\" not found"),
                ),
            };
        }
    }
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("no route {path}"),
    )
}

/// A claim created over HTTP, for a test driver outside this process.
/// Unlike a real server it keeps the `metadata.uid` the client gave, so the
/// caller can name the claim to the plugin as kubelet would (by uid) without
/// reading it back.
fn create_claim(shared: &Shared, namespace: &str, body: &[u8]) -> Response<Body> {
    let refuse = |name: &str, message: String| {
        status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("ResourceClaim.resource.k8s.io \"{name}\" is invalid: {message}"),
        )
    };
    let received: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("body is not JSON: {e}"),
            );
        }
    };
    let name = received
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    for (field, want) in [
        ("apiVersion", "resource.k8s.io/v1"),
        ("kind", "ResourceClaim"),
    ] {
        if received.get(field).and_then(Value::as_str) != Some(want) {
            return refuse(&name, format!("{field}: must be {want:?}"));
        }
    }
    let mut claim: ResourceClaim = match serde_json::from_value(received.clone()) {
        Ok(c) => c,
        Err(e) => return refuse(&name, format!("does not decode as a ResourceClaim: {e}")),
    };
    if let Some(field) = unknown_field(&received, &to_json(&claim), "") {
        return refuse(&name, format!("{field}: unknown field"));
    }
    if !is_dns_subdomain(&name) {
        return refuse(
            &name,
            format!("metadata.name: {name:?} is not a DNS subdomain"),
        );
    }
    match claim.metadata.namespace.as_deref() {
        None => claim.metadata.namespace = Some(namespace.to_string()),
        Some(given) if given == namespace => {}
        Some(given) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "the namespace of the object ({given}) does not match the namespace on the request ({namespace})"
                ),
            );
        }
    }
    if claim.metadata.resource_version.is_some() {
        return refuse(
            &name,
            "metadata.resourceVersion: must not be set on create".into(),
        );
    }
    let mut state = shared.lock();
    let key = (namespace.to_string(), name.clone());
    if state.claims.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("resourceclaims.resource.k8s.io \"{name}\" already exists"),
        );
    }
    state.version += 1;
    claim.metadata.resource_version = Some(state.version.to_string());
    if claim.metadata.uid.is_none() {
        state.uids += 1;
        claim.metadata.uid = Some(format!("00000000-0000-4000-8000-{:012x}", state.uids));
    }
    let answer = to_json(&claim);
    state.claims.insert(key, claim);
    full(StatusCode::CREATED, answer)
}

fn not_found(name: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("resourceslices.resource.k8s.io \"{name}\" not found"),
    )
}

fn invalid(name: &str, message: impl Into<String>) -> Response<Body> {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!(
            "ResourceSlice.resource.k8s.io \"{name}\" is invalid: {}",
            message.into()
        ),
    )
}

fn get(shared: &Shared, name: &str) -> Response<Body> {
    match shared.lock().slices.get(name) {
        Some(slice) => full(StatusCode::OK, to_json(slice)),
        None => not_found(name),
    }
}

fn list(shared: &Shared, params: &BTreeMap<String, String>) -> Response<Body> {
    let selector = match Selector::from_params(params) {
        Ok(s) => s,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    let state = shared.lock();
    let items: Vec<Value> = state
        .slices
        .values()
        .filter(|s| selector.matches(s))
        .map(to_json)
        .collect();
    full(
        StatusCode::OK,
        json!({
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSliceList",
            "metadata": {"resourceVersion": state.version.to_string()},
            "items": items,
        }),
    )
}

fn watch(shared: &Arc<Shared>, params: &BTreeMap<String, String>) -> Response<Body> {
    let selector = match Selector::from_params(params) {
        Ok(s) => s,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(300);
    let from = params
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .map(|v| v.parse::<u64>());
    let (backlog, mut live) = {
        let state = shared.lock();
        let backlog: Vec<(&'static str, ResourceSlice)> = match from {
            // No version (or "0"): the current state, as ADDED events.
            None => state
                .slices
                .values()
                .map(|s| ("ADDED", s.clone()))
                .collect(),
            Some(Ok(from)) => state
                .history
                .iter()
                .filter(|c| c.version > from)
                .map(|c| (c.kind, c.slice.clone()))
                .collect(),
            Some(Err(_)) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "resourceVersion is not a number",
                );
            }
        };
        (backlog, shared.changes.subscribe())
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let line = |kind: &str, slice: &ResourceSlice| {
            let mut text = json!({"type": kind, "object": to_json(slice)}).to_string();
            text.push('\n');
            Bytes::from(text)
        };
        for (kind, slice) in backlog {
            if selector.matches(&slice) && tx.send(line(kind, &slice)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return,
                () = tx.closed() => return,
                change = live.recv() => match change {
                    Ok(change) => {
                        if selector.matches(&change.slice)
                            && tx.send(line(change.kind, &change.slice)).await.is_err()
                        {
                            return;
                        }
                    }
                    // A watcher that fell behind is ended, as the real server
                    // ends one whose window expired.
                    Err(_) => return,
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn create(shared: &Shared, body: &[u8]) -> Response<Body> {
    let mut slice = match decode_slice(body) {
        Ok(s) => s,
        Err(response) => return *response,
    };
    let mut state = shared.lock();
    if slice.metadata.name.is_none()
        && let Some(prefix) = slice.metadata.generate_name.clone()
    {
        state.uids += 1;
        slice.metadata.name = Some(format!("{prefix}{:05x}", state.uids));
    }
    let name = slice.metadata.name.clone().unwrap_or_default();
    if let Err(message) = validate(&slice) {
        return invalid(&name, message);
    }
    if slice.metadata.resource_version.is_some() {
        return invalid(&name, "metadata.resourceVersion: must not be set on create");
    }
    if state.slices.contains_key(&name) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("resourceslices.resource.k8s.io \"{name}\" already exists"),
        );
    }
    state.version += 1;
    state.uids += 1;
    slice.metadata.resource_version = Some(state.version.to_string());
    slice.metadata.uid = Some(format!("00000000-0000-4000-8000-{:012x}", state.uids));
    slice.metadata.generation = Some(1);
    state.slices.insert(name, slice.clone());
    let answer = to_json(&slice);
    shared_record(shared, &mut state, "ADDED", slice);
    full(StatusCode::CREATED, answer)
}

fn shared_record(shared: &Shared, state: &mut State, kind: &'static str, slice: ResourceSlice) {
    shared.record(state, kind, slice);
}

fn update(shared: &Shared, name: &str, body: &[u8]) -> Response<Body> {
    let mut slice = match decode_slice(body) {
        Ok(s) => s,
        Err(response) => return *response,
    };
    if slice.metadata.name.as_deref() != Some(name) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!(
                "the name of the object ({:?}) does not match the name on the URL ({name})",
                slice.metadata.name
            ),
        );
    }
    if let Err(message) = validate(&slice) {
        return invalid(name, message);
    }
    let mut state = shared.lock();
    let Some(stored) = state.slices.get(name).cloned() else {
        return not_found(name);
    };
    let conflict = || {
        status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on resourceslices.resource.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
    };
    if state.conflicts_to_inject > 0 {
        state.conflicts_to_inject -= 1;
        return conflict();
    }
    if slice.metadata.resource_version.is_some()
        && slice.metadata.resource_version != stored.metadata.resource_version
    {
        return conflict();
    }
    for (field, old, new) in [
        (
            "spec.driver",
            Some(stored.spec.driver.as_str()),
            Some(slice.spec.driver.as_str()),
        ),
        (
            "spec.nodeName",
            stored.spec.node_name.as_deref(),
            slice.spec.node_name.as_deref(),
        ),
        (
            "spec.pool.name",
            Some(stored.spec.pool.name.as_str()),
            Some(slice.spec.pool.name.as_str()),
        ),
    ] {
        if old != new {
            return invalid(name, format!("{field}: field is immutable"));
        }
    }
    state.version += 1;
    let generation = stored.metadata.generation.unwrap_or(1);
    slice.metadata.generation = Some(if stored.spec == slice.spec {
        generation
    } else {
        generation + 1
    });
    slice.metadata.uid = stored.metadata.uid.clone();
    slice.metadata.resource_version = Some(state.version.to_string());
    state.slices.insert(name.to_string(), slice.clone());
    let answer = to_json(&slice);
    shared_record(shared, &mut state, "MODIFIED", slice);
    full(StatusCode::OK, answer)
}

fn delete(shared: &Shared, name: &str) -> Response<Body> {
    let mut state = shared.lock();
    let Some(mut slice) = state.slices.remove(name) else {
        return not_found(name);
    };
    state.version += 1;
    slice.metadata.resource_version = Some(state.version.to_string());
    let answer = to_json(&slice);
    shared_record(shared, &mut state, "DELETED", slice);
    full(StatusCode::OK, answer)
}

/// The body as a ResourceSlice, refused (400 malformed, 422 unknown field)
/// unless it is exactly what k8s-openapi's type can say.
fn decode_slice(body: &[u8]) -> Result<ResourceSlice, Box<Response<Body>>> {
    let received: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("body is not JSON: {e}"),
        ))
    })?;
    let name = received
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    for (field, want) in [
        ("apiVersion", "resource.k8s.io/v1"),
        ("kind", "ResourceSlice"),
    ] {
        if received.get(field).and_then(Value::as_str) != Some(want) {
            return Err(Box::new(invalid(
                &name,
                format!("{field}: must be {want:?}"),
            )));
        }
    }
    let slice: ResourceSlice = serde_json::from_value(received.clone()).map_err(|e| {
        Box::new(invalid(
            &name,
            format!("does not decode as a ResourceSlice: {e}"),
        ))
    })?;
    if let Some(field) = unknown_field(&received, &to_json(&slice), "") {
        return Err(Box::new(invalid(&name, format!("{field}: unknown field"))));
    }
    Ok(slice)
}

/// The first field of `received` (nulls aside) that `canonical` (the typed
/// value serialized back) lacks or holds differently.
fn unknown_field(received: &Value, canonical: &Value, at: &str) -> Option<String> {
    match (received, canonical) {
        (Value::Object(got), Value::Object(kept)) => got.iter().find_map(|(key, value)| {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            match kept.get(key) {
                _ if value.is_null() => None,
                None => Some(path),
                Some(kept) => unknown_field(value, kept, &path),
            }
        }),
        (Value::Array(got), Value::Array(kept)) if got.len() == kept.len() => got
            .iter()
            .zip(kept)
            .enumerate()
            .find_map(|(i, (g, k))| unknown_field(g, k, &format!("{at}[{i}]"))),
        (got, kept) if got == kept => None,
        _ => Some(at.to_string()),
    }
}

/// The API server's ResourceSlice validation, as far as the plugin can go wrong.
fn validate(slice: &ResourceSlice) -> Result<(), String> {
    let name = slice.metadata.name.as_deref().unwrap_or_default();
    if !is_dns_subdomain(name) {
        return Err(format!("metadata.name: {name:?} is not a DNS subdomain"));
    }
    let spec = &slice.spec;
    if spec.driver.is_empty() {
        return Err("spec.driver: Required value".into());
    }
    if spec.driver.len() > MAX_DRIVER_LEN || !is_dns_subdomain(&spec.driver) {
        return Err(format!(
            "spec.driver: {:?} is not a DNS subdomain of at most 63 characters",
            spec.driver
        ));
    }
    let selections = [
        spec.node_name.is_some(),
        spec.node_selector.is_some(),
        spec.all_nodes == Some(true),
        spec.per_device_node_selection == Some(true),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if selections != 1 {
        return Err("spec: exactly one of nodeName, nodeSelector, allNodes, perDeviceNodeSelection is required".into());
    }
    if let Some(node) = &spec.node_name
        && !is_dns_subdomain(node)
    {
        return Err(format!("spec.nodeName: {node:?} is not a DNS subdomain"));
    }
    let pool = &spec.pool;
    if pool.name.is_empty() || pool.name.len() > 253 || !pool.name.split('/').all(is_dns_subdomain)
    {
        return Err(format!(
            "spec.pool.name: {:?} is not DNS subdomains separated by slashes",
            pool.name
        ));
    }
    if pool.generation < 0 {
        return Err("spec.pool.generation: must be greater than or equal to 0".into());
    }
    if pool.resource_slice_count <= 0 {
        return Err("spec.pool.resourceSliceCount: must be greater than zero".into());
    }
    let devices = spec.devices.as_deref().unwrap_or_default();
    if devices.len() > MAX_DEVICES_PER_SLICE {
        return Err(format!(
            "spec.devices: Too many: {}: must have at most {MAX_DEVICES_PER_SLICE} items",
            devices.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, device) in devices.iter().enumerate() {
        if !is_dns_label(&device.name) {
            return Err(format!(
                "spec.devices[{i}].name: {:?} is not a DNS label",
                device.name
            ));
        }
        if !seen.insert(device.name.as_str()) {
            return Err(format!(
                "spec.devices[{i}].name: Duplicate value: {:?}",
                device.name
            ));
        }
        let attributes = device.attributes.as_ref();
        let count =
            attributes.map_or(0, |a| a.len()) + device.capacity.as_ref().map_or(0, |c| c.len());
        if count > MAX_ATTRIBUTES {
            return Err(format!(
                "spec.devices[{i}]: more than {MAX_ATTRIBUTES} attributes and capacities"
            ));
        }
        for (key, value) in attributes.into_iter().flatten() {
            check_attribute(key, value)
                .map_err(|e| format!("spec.devices[{i}].attributes[{key}]: {e}"))?;
        }
    }
    Ok(())
}

/// `a=b`, `a==b` and `a!=b` field terms; label terms of the same forms plus
/// `key` (exists) and `!key`.
#[derive(Debug, Clone, Default)]
struct Selector {
    fields: Vec<(String, bool, String)>,
    labels: Vec<LabelTerm>,
}

#[derive(Debug, Clone)]
enum LabelTerm {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

fn split_term(term: &str) -> Option<(String, bool, String)> {
    if let Some((k, v)) = term.split_once("!=") {
        return Some((k.trim().to_string(), false, v.trim().to_string()));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Some((k.trim().to_string(), true, v.trim().to_string()));
    }
    None
}

impl Selector {
    fn from_params(params: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut selector = Self::default();
        for term in params
            .get("fieldSelector")
            .into_iter()
            .flat_map(|s| s.split(','))
        {
            if term.is_empty() {
                continue;
            }
            let (key, eq, value) =
                split_term(term).ok_or_else(|| format!("invalid field selector term {term:?}"))?;
            if !matches!(
                key.as_str(),
                "metadata.name" | "spec.nodeName" | "spec.driver"
            ) {
                return Err(format!("field label not supported: {key}"));
            }
            selector.fields.push((key, eq, value));
        }
        for term in params
            .get("labelSelector")
            .into_iter()
            .flat_map(|s| s.split(','))
        {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let parsed = match split_term(term) {
                Some((k, true, v)) => LabelTerm::Equals(k, v),
                Some((k, false, v)) => LabelTerm::NotEquals(k, v),
                None => match term.strip_prefix('!') {
                    Some(k) => LabelTerm::Absent(k.to_string()),
                    None => LabelTerm::Exists(term.to_string()),
                },
            };
            selector.labels.push(parsed);
        }
        Ok(selector)
    }

    fn matches(&self, slice: &ResourceSlice) -> bool {
        let fields_ok = self.fields.iter().all(|(key, eq, value)| {
            let actual = match key.as_str() {
                "metadata.name" => slice.metadata.name.as_deref(),
                "spec.nodeName" => slice.spec.node_name.as_deref(),
                _ => Some(slice.spec.driver.as_str()),
            }
            .unwrap_or_default();
            (actual == value) == *eq
        });
        let labels = slice.metadata.labels.clone().unwrap_or_default();
        fields_ok
            && self.labels.iter().all(|term| match term {
                LabelTerm::Equals(k, v) => labels.get(k) == Some(v),
                LabelTerm::NotEquals(k, v) => labels.get(k) != Some(v),
                LabelTerm::Exists(k) => labels.contains_key(k),
                LabelTerm::Absent(k) => !labels.contains_key(k),
            })
    }
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(decoded) = hex {
                    out.push(decoded);
                    i += 3;
                    continue;
                }
                out.push(b);
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
