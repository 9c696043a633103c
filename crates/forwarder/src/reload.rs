//! Live reconfiguration: the config file reloaded (on SIGHUP and when its
//! directory changes, `config_watch.rs`) and sysfs rescanned (VFs created
//! late, `sriov_numvfs` changed) without a restart.
//!
//! A new config is judged exactly as `check-config` judges it (the same
//! `pool_entries` steps, the same errors); a refused one is logged with
//! its whole cause, counted, and the running config stays. An accepted one
//! is handed to the pool ([`Pool::reconfigure`]), which keeps every token
//! a pod or a connection holds, then kubelet is told: a device plugin
//! started for each resource added, stopped (its socket removed) for each
//! removed, and the device lists of changed ones streamed again through
//! the running plugins' ListAndWatch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sriov_config::SriovConfig;
use sriov_deviceplugin::{DevicePlugin, PluginConfig, PodResourcesWatcher, RegistrationMode};
use sriov_pci::Sysfs;
use sriov_token_pool::{Pool, PoolResource, Reconfigured, VfioAtAllocate};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::entries::{entries_of, load_config};
use crate::readiness::Plugin;
use crate::{PoolEntries, StartError, metrics};

/// Why a reload or a rescan changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config file is unreadable or invalid, or disagrees with sysfs:
    /// the same error `check-config` reports. The running config stays.
    #[error("the new config is refused and the running one stays")]
    Refused(#[source] Box<StartError>),
    /// The pool could not take the new PFs (its state could not be
    /// persisted): the running config stays.
    #[error("applying the config file {path} to the VF pool")]
    Pool {
        /// The config file.
        path: PathBuf,
        /// The pool's failure.
        #[source]
        source: sriov_token_pool::PoolError,
    },
    /// The work was cut short (the runtime is shutting down).
    #[error("the reload of {path} did not finish")]
    Interrupted {
        /// The config file.
        path: PathBuf,
    },
}

/// An error with each of its causes, as `check-config` prints them (one
/// line: `outer: cause: cause`), so a refusal in the log names the field.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// What the kubelet side needs to start a resource's device plugin.
pub(crate) struct KubeletConfig {
    pub(crate) device_plugin_dir: PathBuf,
    pub(crate) pod_resources_socket: PathBuf,
    pub(crate) poll: Duration,
    pub(crate) vfio: Option<VfioAtAllocate>,
}

/// One resource's running device plugin.
struct Served {
    resource: Arc<PoolResource>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    registered: watch::Receiver<bool>,
}

/// The device plugins and the pod-resources watcher, following the pool's
/// resource names.
pub(crate) struct Kubelet {
    pool: Arc<Pool>,
    cfg: KubeletConfig,
    served: BTreeMap<String, Served>,
    /// Resources no longer served whose tokens pods still hold: watched in
    /// pod-resources until released, so their VFs come back.
    retiring: BTreeMap<String, Arc<PoolResource>>,
    watcher: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    /// The names the running watcher reconciles.
    watched: Vec<String>,
    plugins: watch::Sender<Vec<Plugin>>,
    shutdown: watch::Receiver<bool>,
}

/// Resolves once either `a` or `b` turns true.
async fn either(mut a: watch::Receiver<bool>, mut b: watch::Receiver<bool>) {
    tokio::select! {
        _ = a.wait_for(|s| *s) => {}
        _ = b.wait_for(|s| *s) => {}
    }
}

impl Kubelet {
    /// Nothing started yet; `shutdown` stops everything this starts.
    pub(crate) fn new(
        pool: Arc<Pool>,
        cfg: KubeletConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            pool,
            cfg,
            served: BTreeMap::new(),
            retiring: BTreeMap::new(),
            watcher: None,
            watched: Vec::new(),
            plugins: watch::Sender::new(Vec::new()),
            shutdown,
        }
    }

    /// Every device plugin's resource and whether kubelet knows it, for
    /// readiness; changes as resources come and go.
    pub(crate) fn plugins(&self) -> watch::Receiver<Vec<Plugin>> {
        self.plugins.subscribe()
    }

    /// Starts a plugin for each name the pool serves and has none, stops
    /// those of names it no longer serves, and restarts the pod-resources
    /// watcher over the names served and those still held.
    pub(crate) async fn sync(&mut self) {
        let names = self.pool.names();
        let gone: Vec<String> = self
            .served
            .keys()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect();
        let gone: Vec<(String, Served)> = gone
            .into_iter()
            .filter_map(|n| self.served.remove(&n).map(|s| (n, s)))
            .collect();
        // Readiness stops waiting for them before they go.
        self.publish_plugins();
        for (name, s) in gone {
            let _ = s.stop.send(true);
            let _ = s.task.await;
            tracing::info!(resource = %name, "device plugin stopped: no longer configured");
            self.retiring.insert(name, s.resource);
        }
        for name in names {
            if self.served.contains_key(&name) {
                continue;
            }
            let Some(resource) = PoolResource::new(self.pool.clone(), &name) else {
                continue;
            };
            let resource = Arc::new(match &self.cfg.vfio {
                Some(v) => resource.with_vfio_at_allocate(v.clone()),
                None => resource,
            });
            let mut cfg = PluginConfig::new(name.clone());
            cfg.device_plugin_dir = self.cfg.device_plugin_dir.clone();
            // The Go forwarder registers through kubelet.sock; so do we.
            cfg.mode = RegistrationMode::Kubelet;
            let plugin = DevicePlugin::new(cfg, resource.clone());
            let registered = plugin.registered();
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(plugin.run(either(stop_rx, self.shutdown.clone())));
            self.retiring.remove(&name);
            self.served.insert(
                name.clone(),
                Served {
                    resource,
                    stop,
                    task,
                    registered,
                },
            );
            tracing::info!(resource = %name, "device plugin started");
        }
        // Names of tokens pods still hold that no PF serves any more (a
        // reload removed them, perhaps before a restart): watched until
        // released, so their pods' leaving frees them.
        let held_names: std::collections::BTreeSet<String> = self
            .pool
            .tokens()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.reserves() && !self.served.contains_key(&t.name))
            .map(|t| t.name)
            .collect();
        for name in held_names {
            if !self.retiring.contains_key(&name) {
                let retired = PoolResource::retired(self.pool.clone(), &name);
                let retired = match &self.cfg.vfio {
                    Some(v) => retired.with_vfio_at_allocate(v.clone()),
                    None => retired,
                };
                self.retiring.insert(name, Arc::new(retired));
            }
        }
        self.retiring
            .retain(|_, r| !sriov_deviceplugin::Backend::allocated(r.as_ref()).is_empty());
        self.publish_plugins();
        self.restart_watcher().await;
    }

    fn publish_plugins(&self) {
        self.plugins.send_replace(
            self.served
                .iter()
                .map(|(n, s)| (n.clone(), s.registered.clone()))
                .collect(),
        );
    }

    /// The pod-resources watcher is built over a fixed set of resources:
    /// when the set changes a new one replaces it (its two-poll rule starts
    /// over, which only delays a release by one poll).
    async fn restart_watcher(&mut self) {
        let names: Vec<String> = self
            .served
            .keys()
            .chain(self.retiring.keys())
            .cloned()
            .collect();
        if self.watcher.is_some() && names == self.watched {
            return;
        }
        self.watched = names;
        if let Some((stop, task)) = self.watcher.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let mut watcher =
            PodResourcesWatcher::new(self.cfg.pod_resources_socket.clone(), self.cfg.poll);
        let watched = self
            .served
            .iter()
            .map(|(n, s)| (n, &s.resource))
            .chain(self.retiring.iter());
        for (name, resource) in watched {
            watcher = watcher.watch(name.clone(), resource.clone());
        }
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(watcher.run(either(stop_rx, self.shutdown.clone())));
        self.watcher = Some((stop, task));
    }

    /// Waits for every plugin and the watcher to end (the caller signalled
    /// the shutdown they follow).
    pub(crate) async fn stopped(&mut self) {
        for (_, s) in std::mem::take(&mut self.served) {
            let _ = s.stop.send(true);
            let _ = s.task.await;
        }
        if let Some((stop, task)) = self.watcher.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

/// What reloads and rescans share: the running config and the kubelet
/// side, one change at a time.
pub(crate) struct Reloader {
    path: PathBuf,
    sysfs: Sysfs,
    pool: Arc<Pool>,
    inner: Mutex<Current>,
}

struct Current {
    /// The config running: the last one accepted.
    config: SriovConfig,
    /// Its text, to tell a changed file from an event that changed nothing.
    text: Option<String>,
    kubelet: Kubelet,
}

/// What triggered a reload, for the log and the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// SIGHUP or [`crate::Running::reload`]: always applied.
    Asked,
    /// The config file's directory changed: applied when the text did.
    FileChanged,
}

impl Reloader {
    pub(crate) fn new(
        path: &Path,
        sysfs: Sysfs,
        pool: Arc<Pool>,
        config: SriovConfig,
        kubelet: Kubelet,
    ) -> Self {
        Self {
            path: path.to_owned(),
            sysfs,
            pool,
            inner: Mutex::new(Current {
                config,
                text: std::fs::read_to_string(path).ok(),
                kubelet,
            }),
        }
    }

    /// Every device plugin's resource and whether kubelet knows it.
    pub(crate) async fn plugins(&self) -> watch::Receiver<Vec<Plugin>> {
        self.inner.lock().await.kubelet.plugins()
    }

    /// Starts the device plugins of the pool's resources.
    pub(crate) async fn start_plugins(&self) {
        self.inner.lock().await.kubelet.sync().await;
    }

    /// Stops the plugins and the watcher once the shutdown is signalled.
    pub(crate) async fn stopped(&self) {
        self.inner.lock().await.kubelet.stopped().await;
    }

    /// Reads the config file again and applies it (see the module docs);
    /// `None` when `trigger` is a file event and the text is unchanged.
    pub(crate) async fn reload(
        &self,
        trigger: Trigger,
    ) -> Result<Option<Reconfigured>, ReloadError> {
        let mut current = self.inner.lock().await;
        let text = std::fs::read_to_string(&self.path).ok();
        if trigger == Trigger::FileChanged && text.is_some() && text == current.text {
            return Ok(None);
        }
        let (path, sysfs) = (self.path.clone(), self.sysfs.clone());
        let found = blocking(&self.path, move || {
            let loaded = load_config(&path)?;
            entries_of(&path, &loaded.config, loaded.warnings, &sysfs, true)
        })
        .await
        .and_then(|r| r.map_err(|e| ReloadError::Refused(Box::new(e))));
        let found = match found {
            Ok(f) => f,
            Err(e) => return Err(self.refused(e, trigger)),
        };
        let config = found.config.clone();
        let r = self.apply(&mut current, found, trigger).await?;
        current.config = config;
        current.text = text;
        Ok(Some(r))
    }

    /// Reads sysfs again under the running config: VFs created or removed
    /// since (`sriov_numvfs` changed, VFs an operator creates after we
    /// started) join or leave their PF's resources. Creates no VFs.
    pub(crate) async fn rescan(&self) -> Result<Reconfigured, ReloadError> {
        let mut current = self.inner.lock().await;
        let (path, sysfs, config) = (
            self.path.clone(),
            self.sysfs.clone(),
            current.config.clone(),
        );
        let found = blocking(&self.path, move || {
            entries_of(&path, &config, Vec::new(), &sysfs, false)
        })
        .await
        .and_then(|r| r.map_err(|e| ReloadError::Refused(Box::new(e))));
        match found {
            Ok(f) => self.apply(&mut current, f, Trigger::Asked).await,
            Err(e) => {
                metrics::reload("error");
                tracing::warn!(error = %with_causes(&e), "rescanning sysfs; nothing changed");
                Err(e)
            }
        }
    }

    fn refused(&self, e: ReloadError, trigger: Trigger) -> ReloadError {
        metrics::reload("invalid");
        tracing::error!(
            config = %self.path.display(),
            ?trigger,
            error = %with_causes(&e),
            "config reload refused; the running config stays"
        );
        e
    }

    async fn apply(
        &self,
        current: &mut Current,
        found: PoolEntries,
        trigger: Trigger,
    ) -> Result<Reconfigured, ReloadError> {
        for w in &found.warnings {
            tracing::warn!("{w}");
        }
        for s in &found.skipped {
            tracing::warn!(pf = %s.pf, "{s}");
        }
        let (pool, sysfs) = (self.pool.clone(), self.sysfs.clone());
        let entries = found.entries;
        let r = blocking(&self.path, move || pool.reconfigure(entries, &sysfs))
            .await
            .and_then(|r| {
                r.map_err(|source| ReloadError::Pool {
                    path: self.path.clone(),
                    source,
                })
            });
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                metrics::reload("error");
                tracing::error!(error = %with_causes(&e), "config reload failed; the running config stays");
                return Err(e);
            }
        };
        for n in &r.notes {
            tracing::info!("{n}");
        }
        if r.is_empty() {
            tracing::info!(?trigger, "config reloaded: nothing kubelet sees changed");
        } else {
            tracing::info!(?trigger, added = ?r.added, removed = ?r.removed, changed = ?r.changed,
                "config reloaded");
        }
        current.kubelet.sync().await;
        metrics::reload("ok");
        Ok(r)
    }
}

/// Runs sysfs and pool work off the async threads.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ReloadError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ReloadError::Interrupted {
            path: path.to_owned(),
        })
}
