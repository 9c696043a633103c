//! One device plugin's life: listen, register, and start over whenever
//! kubelet restarts or the socket disappears.
//!
//! The states and transitions are in [`lifecycle`], free of I/O; the
//! [`Driver`] here runs the actions they ask for and reports what happens.

mod lifecycle;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use sriov_api::kubelet::deviceplugin::v1beta1::RegisterRequest;
use sriov_api::kubelet::deviceplugin::v1beta1::device_plugin_server::DevicePluginServer;
use sriov_api::kubelet::deviceplugin::v1beta1::registration_client::RegistrationClient;
use sriov_api::kubelet::deviceplugin::{DEVICE_PLUGIN_PATH, KUBELET_SOCKET, VERSION};
use sriov_api::kubelet::pluginregistration::PLUGINS_REGISTRY_PATH;
use sriov_api::kubelet::pluginregistration::registration_server::RegistrationServer;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tonic::transport::{Channel, Endpoint, Server};
use tracing::{debug, info, warn};

use crate::Error;
use crate::backend::Backend;
use crate::preferred::AllocationPolicy;
use crate::service::{PluginService, WatcherRegistration, options};
use crate::watch::{DirEvent, DirWatcher};
use lifecycle::{Action, Event, Lifecycle, Phase};
use sriov_api::Backoff;

/// How the plugin makes itself known to kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationMode {
    /// Like sriov-network-device-plugin: [`PluginWatcher`](Self::PluginWatcher)
    /// if the plugins-registry directory exists when the plugin starts,
    /// otherwise [`Kubelet`](Self::Kubelet).
    Auto,
    /// Socket in the device-plugin dir; `Register` called on `kubelet.sock`.
    Kubelet,
    /// Socket in the plugins-registry dir, also serving
    /// `pluginregistration.Registration`; kubelet's plugin watcher finds it.
    PluginWatcher,
}

/// Where and how one device plugin runs.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// Extended resource name, `<domain>/<name>`.
    pub resource_name: String,
    /// Kubelet's device-plugin dir: `kubelet.sock`, and our socket in
    /// [`RegistrationMode::Kubelet`].
    pub device_plugin_dir: PathBuf,
    /// Kubelet's plugin-watcher dir: our socket in
    /// [`RegistrationMode::PluginWatcher`].
    pub plugins_registry_dir: PathBuf,
    /// How to register; see [`RegistrationMode::Auto`].
    pub mode: RegistrationMode,
    /// File name of our socket (kubelet's `endpoint`).
    pub socket_name: String,
    /// First retry delay after a failure; doubled up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Bound on each call to kubelet (connect, `Register`).
    pub call_timeout: Duration,
    /// How `GetPreferredAllocation` chooses; `None` does not advertise it
    /// (kubelet then picks devices on its own, as with SRDP).
    pub allocation_policy: Option<AllocationPolicy>,
}

impl PluginConfig {
    /// Kubelet's default directories, automatic mode, socket named after
    /// the resource.
    pub fn new(resource_name: impl Into<String>) -> Self {
        let resource_name = resource_name.into();
        Self {
            socket_name: socket_name_for(&resource_name),
            resource_name,
            device_plugin_dir: PathBuf::from(DEVICE_PLUGIN_PATH),
            plugins_registry_dir: PathBuf::from(PLUGINS_REGISTRY_PATH),
            mode: RegistrationMode::Auto,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            call_timeout: Duration::from_secs(10),
            allocation_policy: Some(AllocationPolicy::Packed),
        }
    }

    /// The mode [`RegistrationMode::Auto`] resolves to now.
    pub fn resolved_mode(&self) -> RegistrationMode {
        match self.mode {
            RegistrationMode::Auto if self.plugins_registry_dir.is_dir() => {
                RegistrationMode::PluginWatcher
            }
            RegistrationMode::Auto => RegistrationMode::Kubelet,
            m => m,
        }
    }

    /// Path of our socket in the given (resolved) mode.
    pub fn socket_path(&self, mode: RegistrationMode) -> PathBuf {
        match mode {
            RegistrationMode::PluginWatcher => self.plugins_registry_dir.join(&self.socket_name),
            _ => self.device_plugin_dir.join(&self.socket_name),
        }
    }
}

/// A socket file name for a resource: `example.com/sriov_a` becomes
/// `example.com_sriov_a.sock` (kubelet's endpoint may not contain `/`).
pub fn socket_name_for(resource: &str) -> String {
    let base: String = resource
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{base}.sock")
}

/// Dials a gRPC server on a unix socket. The `:authority` sent is
/// `localhost`, which every server accepts.
pub async fn connect_unix(path: &Path) -> Result<Channel, Error> {
    let owned = path.to_owned();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let p = owned.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
        }))
        .await
        .map_err(|source| Error::Connect {
            path: path.to_owned(),
            cause: source,
        })
}

/// Resolves when `stop` turns true or its sender is gone.
///
/// `wait_for` alone would do as a plain `.await`, but not as a `select!`
/// branch: its output, a read guard that is not `Send`, is kept across
/// every branch's handler, so a handler that awaits makes a spawned
/// task's future not `Send`. This drops the guard at once.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A kubelet device plugin for one resource. See the crate docs for the
/// lifecycle.
pub struct DevicePlugin<B: Backend + ?Sized> {
    cfg: PluginConfig,
    backend: Arc<B>,
    registrations: watch::Sender<u64>,
    registered: watch::Sender<bool>,
}

impl<B: Backend + ?Sized> DevicePlugin<B> {
    /// A plugin advertising `backend`'s devices as `cfg.resource_name`.
    pub fn new(cfg: PluginConfig, backend: Arc<B>) -> Self {
        Self {
            cfg,
            backend,
            registrations: watch::channel(0).0,
            registered: watch::channel(false).0,
        }
    }

    /// Whether kubelet knows the plugin now: true once registered (in
    /// plugin-watcher mode: once the socket is served), false again when
    /// kubelet's socket or ours goes away, until the next registration.
    /// Readiness probes follow it.
    pub fn registered(&self) -> watch::Receiver<bool> {
        self.registered.subscribe()
    }

    /// Counts successful registrations (kubelet's `Register` returned OK,
    /// or the plugin watcher reported success). Each kubelet restart adds
    /// one; wait on it to know the resource is advertised.
    pub fn registrations(&self) -> watch::Receiver<u64> {
        self.registrations.subscribe()
    }

    /// Serves until `shutdown` resolves, then removes the socket. Failures
    /// (kubelet absent or refusing, socket deleted, inotify trouble) are
    /// logged and retried with backoff; this never gives up.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mode = self.cfg.resolved_mode();
        let mut driver = Driver::new(&self, mode);
        let resource = self.cfg.resource_name.as_str();
        info!(resource, ?mode, socket = %driver.sock.display(), "device plugin starting");

        tokio::pin!(shutdown);
        let backoff = Backoff::new(self.cfg.retry_initial, self.cfg.retry_max);
        let (mut life, first) = Lifecycle::start(mode, backoff);
        let mut pending = VecDeque::new();
        let _watched = crate::metrics::Watched::start(resource, self.backend.devices());
        driver.act_all(first, &mut pending).await;
        while life.phase() != Phase::Stopping {
            let Some(event) = pending.pop_front() else {
                pending.extend(driver.wait(shutdown.as_mut()).await);
                continue;
            };
            let from = life.phase();
            let actions = life.step(event);
            debug!(resource, ?event, ?from, to = ?life.phase(), ?actions, "lifecycle");
            let serving = life.phase() == Phase::Serving;
            self.registered
                .send_if_modified(|r| std::mem::replace(r, serving) != serving);
            driver.act_all(actions, &mut pending).await;
        }
        self.registered.send_replace(false);
        info!(resource, "device plugin stopped");
    }

    fn watch_dir(&self, dir: &Path) -> Option<DirWatcher> {
        let resource = &self.cfg.resource_name;
        if let Err(source) = std::fs::create_dir_all(dir) {
            let e = Error::CreateDir {
                dir: dir.to_owned(),
                cause: source,
            };
            warn!(resource, error = %e, "will retry");
            return None;
        }
        match DirWatcher::new(dir) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(resource, error = %e, "will retry");
                None
            }
        }
    }

    fn listen(
        &self,
        path: &Path,
        mode: RegistrationMode,
        status: mpsc::UnboundedSender<Result<(), String>>,
    ) -> Result<Serving, Error> {
        let err = |source: io::Error| Error::Listen {
            path: path.to_owned(),
            cause: source,
        };
        // A stale socket from an earlier run (or a crash) blocks bind.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        // Only kubelet (root) dials us; nobody else may ask for devices.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
        let meta = std::fs::metadata(path).map_err(err)?;
        let (stop_tx, stop_rx) = watch::channel(false);

        let svc = PluginService {
            backend: Arc::clone(&self.backend),
            resource: self.cfg.resource_name.clone(),
            policy: self.cfg.allocation_policy,
            stop: stop_rx.clone(),
        };
        let registration = (mode == RegistrationMode::PluginWatcher).then(|| {
            RegistrationServer::new(WatcherRegistration {
                resource: self.cfg.resource_name.clone(),
                endpoint: path.to_owned(),
                status,
            })
        });
        let router = Server::builder()
            .max_concurrent_streams(sriov_api::MAX_CONCURRENT_STREAMS)
            .add_service(
                DevicePluginServer::new(svc)
                    .max_decoding_message_size(sriov_api::DEVICE_PLUGIN_MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(sriov_api::DEVICE_PLUGIN_MAX_MESSAGE_BYTES),
            )
            .add_optional_service(registration);

        // Relays are cut on stop, as the server is: a kubelet restart makes
        // a new socket, and connections to the old one must not linger. The
        // span names the resource in what the shared accept loop logs.
        let mut relay_stop = stop_rx.clone();
        let incoming = tracing::info_span!("device_plugin", resource = self.cfg.resource_name)
            .in_scope(|| {
                sriov_authority::incoming(listener, async move {
                    stopped(&mut relay_stop).await;
                })
            });
        let mut serve_stop = stop_rx;
        let resource = self.cfg.resource_name.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = serve_stop.wait_for(|s| *s).await;
                })
                .await
            {
                warn!(resource, error = %e, "gRPC server failed");
            }
        });
        info!(resource = self.cfg.resource_name, socket = %path.display(), "listening");
        Ok(Serving {
            path: path.to_owned(),
            id: (meta.dev(), meta.ino()),
            stop: stop_tx,
            task,
        })
    }

    async fn register(&self, kubelet_sock: &Path) -> Result<(), Error> {
        let timed_out = |call| Error::Timeout {
            path: kubelet_sock.to_owned(),
            call,
        };
        let channel = timeout(self.cfg.call_timeout, connect_unix(kubelet_sock))
            .await
            .map_err(|_| timed_out("connect"))??;
        let mut client = RegistrationClient::new(channel);
        let req = RegisterRequest {
            version: VERSION.to_string(),
            endpoint: self.cfg.socket_name.clone(),
            resource_name: self.cfg.resource_name.clone(),
            options: Some(options(self.cfg.allocation_policy)),
        };
        timeout(self.cfg.call_timeout, client.register(req))
            .await
            .map_err(|_| timed_out("Register"))?
            .map_err(|status| Error::Register {
                path: kubelet_sock.to_owned(),
                resource: self.cfg.resource_name.clone(),
                status,
            })?;
        Ok(())
    }
}

/// A `Register` call in flight.
type RegisterCall<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// The I/O half of [`DevicePlugin::run`]: runs the [`Lifecycle`]'s
/// actions and turns what it waits on into [`Event`]s, deciding nothing.
struct Driver<'a, B: Backend + ?Sized> {
    plugin: &'a DevicePlugin<B>,
    mode: RegistrationMode,
    /// Our socket.
    sock: PathBuf,
    /// The directory it is in, which is watched.
    dir: PathBuf,
    kubelet_sock: PathBuf,
    status_tx: mpsc::UnboundedSender<Result<(), String>>,
    status_rx: mpsc::UnboundedReceiver<Result<(), String>>,
    watcher: Option<DirWatcher>,
    serving: Option<Serving>,
    registering: Option<RegisterCall<'a>>,
    retry_at: Option<Instant>,
}

impl<'a, B: Backend + ?Sized> Driver<'a, B> {
    fn new(plugin: &'a DevicePlugin<B>, mode: RegistrationMode) -> Self {
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        Self {
            plugin,
            mode,
            sock: plugin.cfg.socket_path(mode),
            dir: match mode {
                RegistrationMode::PluginWatcher => plugin.cfg.plugins_registry_dir.clone(),
                _ => plugin.cfg.device_plugin_dir.clone(),
            },
            kubelet_sock: plugin.cfg.device_plugin_dir.join(KUBELET_SOCKET),
            status_tx,
            status_rx,
            watcher: None,
            serving: None,
            registering: None,
            retry_at: None,
        }
    }

    fn resource(&self) -> &'a str {
        &self.plugin.cfg.resource_name
    }

    /// Runs `actions` in order. Their outcomes go to the front of
    /// `pending`, ahead of events already read from the directory watch:
    /// those were read before the actions ran and may be out of date.
    async fn act_all(&mut self, actions: Vec<Action>, pending: &mut VecDeque<Event>) {
        let mut outcomes = Vec::new();
        for action in actions {
            outcomes.extend(self.act(action).await);
        }
        for event in outcomes.into_iter().rev() {
            pending.push_front(event);
        }
    }

    async fn act(&mut self, action: Action) -> Option<Event> {
        let resource = self.resource();
        match action {
            Action::Watch => {
                self.watcher = self.plugin.watch_dir(&self.dir);
                Some(if self.watcher.is_some() {
                    Event::Watching
                } else {
                    Event::WatchFailed
                })
            }
            Action::Listen => {
                if let Some(s) = self.serving.take() {
                    s.stop().await;
                }
                match self
                    .plugin
                    .listen(&self.sock, self.mode, self.status_tx.clone())
                {
                    Ok(s) => {
                        self.serving = Some(s);
                        Some(Event::Listening)
                    }
                    Err(e) => {
                        warn!(resource, error = %e, "cannot listen; will retry");
                        Some(Event::ListenFailed)
                    }
                }
            }
            Action::CheckSocket => self.socket_lost().then_some(Event::SocketLost),
            Action::Register => {
                let (plugin, path) = (self.plugin, self.kubelet_sock.clone());
                self.registering = Some(Box::pin(async move { plugin.register(&path).await }));
                None
            }
            Action::CancelRegister => {
                self.registering = None;
                None
            }
            Action::CountRegistration => {
                self.plugin.registrations.send_modify(|n| *n += 1);
                match self.mode {
                    RegistrationMode::PluginWatcher => {
                        info!(resource, "plugin watcher registered the plugin");
                    }
                    _ => info!(resource, "registered with kubelet"),
                }
                None
            }
            Action::RetryIn(delay) => {
                self.retry_at = Some(Instant::now() + delay);
                None
            }
            Action::StopServing => {
                if let Some(s) = self.serving.take() {
                    s.stop().await;
                }
                None
            }
        }
    }

    /// Waits for the next thing to happen.
    async fn wait(&mut self, shutdown: Pin<&mut impl Future<Output = ()>>) -> Vec<Event> {
        let resource = self.resource();
        tokio::select! {
            () = shutdown => vec![Event::Stop],
            result = in_flight(&mut self.registering) => {
                self.registering = None;
                match result {
                    Ok(()) => {
                        crate::metrics::registration(resource, "ok");
                        vec![Event::Registered]
                    }
                    Err(e) => {
                        crate::metrics::registration(resource, crate::metrics::registration_failure(&e));
                        warn!(resource, error = %e, "registration failed; will retry");
                        vec![Event::RegisterFailed]
                    }
                }
            }
            events = next_events(&mut self.watcher) => self.dir_events(events),
            verdict = self.status_rx.recv() => match verdict {
                Some(Ok(())) => {
                    crate::metrics::registration(resource, "ok");
                    vec![Event::WatcherAccepted]
                }
                Some(Err(msg)) => {
                    crate::metrics::registration(resource, "refused");
                    warn!(resource, error = %msg, "kubelet refused the plugin; re-creating the socket after backoff");
                    vec![Event::WatcherRefused]
                }
                // We hold a sender: never.
                None => vec![],
            },
            () = sleep_until_opt(self.retry_at) => {
                self.retry_at = None;
                vec![Event::RetryDue]
            }
        }
    }

    fn dir_events(&mut self, events: Result<Vec<DirEvent>, Error>) -> Vec<Event> {
        let resource = self.resource();
        let events = match events {
            Ok(events) => events,
            Err(e) => {
                warn!(resource, error = %e, "inotify failed; watching again");
                // A broken inotify fd may stay readable and spin the loop.
                self.watcher = None;
                return vec![Event::WatchLost];
            }
        };
        let mut out = Vec::new();
        for ev in events {
            match ev {
                DirEvent::Created(name)
                    if self.mode == RegistrationMode::Kubelet && name == KUBELET_SOCKET =>
                {
                    info!(
                        resource,
                        "kubelet.sock created: kubelet (re)started; registering again"
                    );
                    out.push(Event::KubeletStarted);
                }
                DirEvent::Removed(name)
                    if self.mode == RegistrationMode::Kubelet && name == KUBELET_SOCKET =>
                {
                    warn!(
                        resource,
                        "kubelet.sock removed: kubelet is down; waiting for it"
                    );
                    out.push(Event::KubeletStopped);
                }
                // Our own restart removes our old socket too: only a
                // socket that is not the one now served is news.
                DirEvent::Removed(name) if name == self.plugin.cfg.socket_name.as_str() => {
                    if self.socket_lost() {
                        out.push(Event::SocketLost);
                    }
                }
                DirEvent::Rescan => out.push(Event::EventsLost),
                DirEvent::Gone => {
                    warn!(resource, dir = %self.dir.display(), "socket directory went away");
                    self.watcher = None;
                    out.push(Event::WatchLost);
                }
                other => debug!(resource, event = ?other, "directory event"),
            }
        }
        out
    }

    /// Whether the socket served is no longer ours (deleted or replaced).
    fn socket_lost(&self) -> bool {
        let lost = self.serving.as_ref().is_some_and(|s| !s.still_ours());
        if lost {
            warn!(resource = self.resource(), socket = %self.sock.display(), "plugin socket removed or replaced (kubelet restart?); listening again");
        }
        lost
    }
}

async fn in_flight(call: &mut Option<RegisterCall<'_>>) -> Result<(), Error> {
    match call {
        Some(call) => call.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn next_events(w: &mut Option<DirWatcher>) -> Result<Vec<DirEvent>, Error> {
    match w {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// One listening server instance.
struct Serving {
    path: PathBuf,
    /// (st_dev, st_ino) of the socket we bound, to tell it from a file
    /// someone else put at the same path.
    id: (u64, u64),
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Serving {
    fn still_ours(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id)
    }

    async fn stop(self) {
        let ours = self.still_ours();
        let Serving {
            path, stop, task, ..
        } = self;
        let _ = stop.send(true);
        let mut task = task;
        if timeout(Duration::from_secs(2), &mut task).await.is_err() {
            task.abort();
        }
        if ours {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_carry_no_slash() {
        assert_eq!(
            socket_name_for("example.com/sriov_a"),
            "example.com_sriov_a.sock"
        );
        assert_eq!(socket_name_for("a/b:c"), "a_b_c.sock");
    }

    #[test]
    fn auto_mode_picks_the_plugin_watcher_when_its_dir_exists() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut cfg = PluginConfig::new("x/y");
        cfg.plugins_registry_dir = d.path().join("plugins_registry");
        assert_eq!(cfg.resolved_mode(), RegistrationMode::Kubelet);
        std::fs::create_dir(&cfg.plugins_registry_dir).expect("mkdir");
        assert_eq!(cfg.resolved_mode(), RegistrationMode::PluginWatcher);
    }

    struct NoDevices(watch::Sender<Vec<crate::Device>>);

    impl Backend for NoDevices {
        fn devices(&self) -> watch::Receiver<Vec<crate::Device>> {
            self.0.subscribe()
        }
        fn allocate(
            &self,
            _containers: &[Vec<String>],
        ) -> Result<
            Vec<sriov_api::kubelet::deviceplugin::v1beta1::ContainerAllocateResponse>,
            crate::AllocateError,
        > {
            Ok(Vec::new())
        }
        fn allocated(&self) -> Vec<String> {
            Vec::new()
        }
        fn release(&self, _ids: &[String]) {}
    }

    #[tokio::test]
    async fn the_plugin_socket_is_for_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("x_y.sock");
        let plugin = DevicePlugin::new(
            PluginConfig::new("x/y"),
            Arc::new(NoDevices(watch::channel(Vec::new()).0)),
        );
        let (status, _rx) = mpsc::unbounded_channel();
        let serving = plugin
            .listen(&path, RegistrationMode::Kubelet, status)
            .expect("listen");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        serving.stop().await;
    }
}
