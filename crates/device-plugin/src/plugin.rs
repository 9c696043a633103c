//! One device plugin's life: listen, register, and start over whenever
//! kubelet restarts or the socket disappears.

use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Server};
use tracing::{debug, info, warn};

use crate::Error;
use crate::authority::relay;
use crate::backend::Backend;
use crate::service::{PluginService, WatcherRegistration, options};
use crate::watch::{DirEvent, DirWatcher};

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
            source,
        })
}

/// Resolves when `stop` turns true or its sender is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A kubelet device plugin for one resource. See the crate docs for the
/// lifecycle.
pub struct DevicePlugin<B: Backend + ?Sized> {
    cfg: PluginConfig,
    backend: Arc<B>,
    registrations: watch::Sender<u64>,
}

impl<B: Backend + ?Sized> DevicePlugin<B> {
    /// A plugin advertising `backend`'s devices as `cfg.resource_name`.
    pub fn new(cfg: PluginConfig, backend: Arc<B>) -> Self {
        Self {
            cfg,
            backend,
            registrations: watch::channel(0).0,
        }
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
        let sock = self.cfg.socket_path(mode);
        let dir = match mode {
            RegistrationMode::PluginWatcher => self.cfg.plugins_registry_dir.clone(),
            _ => self.cfg.device_plugin_dir.clone(),
        };
        let kubelet_sock = self.cfg.device_plugin_dir.join(KUBELET_SOCKET);
        let resource = self.cfg.resource_name.clone();
        info!(resource, ?mode, socket = %sock.display(), "device plugin starting");

        tokio::pin!(shutdown);
        let (status_tx, mut status_rx) = mpsc::unbounded_channel();
        let mut backoff = Backoff::new(self.cfg.retry_initial, self.cfg.retry_max);
        let mut watcher: Option<DirWatcher> = None;
        let mut serving: Option<Serving> = None;
        let mut registered = false;
        let mut restart_serving = false;
        let mut not_before: Option<Instant> = None;

        loop {
            if not_before.is_none_or(|t| Instant::now() >= t) {
                if watcher.is_none() {
                    watcher = self.watch_dir(&dir);
                }
                if restart_serving {
                    restart_serving = false;
                    if let Some(s) = serving.take() {
                        s.stop().await;
                    }
                }
                if serving.as_ref().is_some_and(|s| !s.still_ours()) {
                    warn!(resource, socket = %sock.display(), "plugin socket removed or replaced (kubelet restart?); listening again");
                    if let Some(s) = serving.take() {
                        s.stop().await;
                    }
                }
                if serving.is_none() {
                    match self.listen(&sock, mode, status_tx.clone()) {
                        Ok(s) => {
                            serving = Some(s);
                            registered = false;
                        }
                        Err(e) => warn!(resource, error = %e, "cannot listen; will retry"),
                    }
                }
                if mode == RegistrationMode::Kubelet && serving.is_some() && !registered {
                    // A kubelet that accepts the connection but never answers
                    // must not hold up shutdown.
                    let attempt = tokio::select! {
                        r = self.register(&kubelet_sock) => Some(r),
                        () = &mut shutdown => None,
                    };
                    match attempt {
                        None => break,
                        Some(Ok(())) => {
                            registered = true;
                            backoff.reset();
                            self.registrations.send_modify(|n| *n += 1);
                            info!(resource, "registered with kubelet");
                        }
                        Some(Err(e)) => {
                            warn!(resource, error = %e, "registration failed; will retry");
                        }
                    }
                }
                let healthy = watcher.is_some()
                    && serving.is_some()
                    && (mode != RegistrationMode::Kubelet || registered);
                // The backoff is reset only by kubelet accepting us, so a
                // kubelet that keeps refusing is asked less and less often.
                not_before = if healthy {
                    None
                } else {
                    Some(Instant::now() + backoff.next_delay())
                };
            }

            tokio::select! {
                () = &mut shutdown => break,
                events = next_events(&mut watcher) => match events {
                    Ok(events) => {
                        for ev in events {
                            match ev {
                                DirEvent::Created(name)
                                    if mode == RegistrationMode::Kubelet && name == KUBELET_SOCKET =>
                                {
                                    info!(resource, "kubelet.sock created: kubelet (re)started; registering again");
                                    registered = false;
                                    backoff.reset();
                                    not_before = None;
                                }
                                DirEvent::Removed(name) if name == self.cfg.socket_name.as_str() => {
                                    not_before = None;
                                }
                                DirEvent::Rescan => {
                                    // Events were lost; a kubelet restart may be among them.
                                    registered = false;
                                    not_before = None;
                                }
                                DirEvent::Gone => {
                                    warn!(resource, dir = %dir.display(), "socket directory went away");
                                    watcher = None;
                                    registered = false;
                                    not_before = None;
                                }
                                other => debug!(resource, event = ?other, "directory event"),
                            }
                        }
                    }
                    Err(e) => {
                        warn!(resource, error = %e, "inotify failed; watching again");
                        watcher = None;
                        not_before = None;
                    }
                },
                verdict = status_rx.recv() => match verdict {
                    Some(Ok(())) => {
                        backoff.reset();
                        self.registrations.send_modify(|n| *n += 1);
                        info!(resource, "plugin watcher registered the plugin");
                    }
                    Some(Err(msg)) => {
                        warn!(resource, error = %msg, "kubelet refused the plugin; re-creating the socket after backoff");
                        // Not at once: the answer to kubelet's call is still
                        // on its way out through this server.
                        restart_serving = true;
                        not_before = Some(Instant::now() + backoff.next_delay());
                    }
                    None => {}
                },
                () = sleep_until_opt(not_before) => {}
            }
        }
        if let Some(s) = serving.take() {
            s.stop().await;
        }
        info!(resource, "device plugin stopped");
    }

    fn watch_dir(&self, dir: &Path) -> Option<DirWatcher> {
        let resource = &self.cfg.resource_name;
        if let Err(source) = std::fs::create_dir_all(dir) {
            let e = Error::CreateDir {
                dir: dir.to_owned(),
                source,
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
            source,
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

        let (conn_tx, conn_rx) = mpsc::channel(16);
        let mut accept_stop = stop_rx.clone();
        let resource = self.cfg.resource_name.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stopped(&mut accept_stop) => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let (ours, theirs) = tokio::io::duplex(64 * 1024);
                            let mut conn_stop = accept_stop.clone();
                            let resource = resource.clone();
                            tokio::spawn(async move {
                                tokio::select! {
                                    r = relay(stream, ours) => match r {
                                        Ok(0) => {}
                                        Ok(n) => debug!(resource, rewritten = n, "connection used a socket-path :authority"),
                                        Err(e) => debug!(resource, error = %e, "connection ended"),
                                    },
                                    () = stopped(&mut conn_stop) => {}
                                }
                            });
                            if conn_tx.send(Ok::<_, io::Error>(theirs)).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            warn!(resource, error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        });
        let mut serve_stop = stop_rx;
        let resource = self.cfg.resource_name.clone();
        let task = tokio::spawn(async move {
            let incoming = ReceiverStream::new(conn_rx);
            if let Err(e) = router
                .serve_with_incoming_shutdown(
                    incoming,
                    async move { stopped(&mut serve_stop).await },
                )
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
            options: Some(options()),
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

/// Exponential backoff between retries.
struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.current = self.initial;
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
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
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
