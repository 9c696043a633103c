//! Hot reload (issue #18): one device plugin per resource of the running config, kept equal
//! to it as the config changes. The config file's directory is watched (a ConfigMap update
//! swaps a `..data` symlink there) and SIGHUP reloads too; unlike SRDP, SIGHUP does not stop
//! the plugin. A config that does not load is logged with the error start-up would stop on,
//! counted (`sriov.dp.reloads{result="invalid"}`), and the running config stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sriov_deviceplugin::{Backend, DevicePlugin, PluginConfig, PodResourcesWatcher};
use sriov_selector_pools::{
    ConfigWatch, PluginStatus, PoolSlot, Readiness, Reloaded, Reloader, Strictness,
    follow_readiness,
};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::Args;

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The device plugins of the running config, and what follows them (readiness, the
/// pod-resources watcher), restarted as a reload adds and removes resources.
pub(crate) struct Plugins {
    device_plugin_dir: PathBuf,
    plugins_registry_dir: PathBuf,
    pod_resources_socket: PathBuf,
    stop: watch::Receiver<bool>,
    running: BTreeMap<String, Running>,
    followers: Option<Running>,
    /// Readiness across reloads (`/readyz`): each sync's follower feeds it.
    readiness: watch::Sender<Readiness>,
}

impl Plugins {
    pub(crate) fn new(args: &Args, stop: watch::Receiver<bool>) -> Self {
        Self {
            device_plugin_dir: args.device_plugin_dir.clone(),
            plugins_registry_dir: args.plugins_registry_dir.clone(),
            pod_resources_socket: args.pod_resources_socket.clone(),
            stop,
            running: BTreeMap::new(),
            followers: None,
            readiness: watch::Sender::new(Readiness {
                missing: vec!["starting".to_string()],
            }),
        }
    }

    /// Readiness of the plugins of the running config, whatever reloads happen.
    pub(crate) fn readiness(&self) -> watch::Receiver<Readiness> {
        self.readiness.subscribe()
    }

    /// Starts a plugin for every slot without one and stops the plugins of resources no longer
    /// served (their sockets go, so kubelet drops the resources).
    pub(crate) async fn sync(&mut self, pools: &Reloader) {
        let slots = pools.slots();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|name| !slots.iter().any(|s| s.resource_name() == name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(r) = self.running.remove(&name) {
                tracing::info!(resource = %name, "resource removed from the config: unregistering");
                stop(r).await;
            }
        }
        let mut statuses = Vec::new();
        for slot in &slots {
            let name = slot.resource_name().to_string();
            let plugin = DevicePlugin::new(self.plugin_config(slot), slot.clone());
            statuses.push(PluginStatus {
                resource: name.clone(),
                registered: plugin.registered(),
                devices: slot.devices(),
            });
            if self.running.contains_key(&name) {
                continue;
            }
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(serve_one(plugin, slot.clone(), self.stop.clone(), rx));
            self.running.insert(name, Running { stop: tx, task });
        }
        if let Some(old) = self.followers.take() {
            stop(old).await;
        }
        self.followers = Some(self.follow(pools, statuses));
    }

    fn plugin_config(&self, slot: &PoolSlot) -> PluginConfig {
        let mut cfg = PluginConfig::new(slot.resource_name());
        cfg.device_plugin_dir = self.device_plugin_dir.clone();
        cfg.plugins_registry_dir = self.plugins_registry_dir.clone();
        cfg.allocation_policy = slot.pool().config().allocation_policy;
        cfg
    }

    /// Readiness of `statuses` and the pod-resources watcher of the current slots.
    fn follow(&self, pools: &Reloader, statuses: Vec<PluginStatus>) -> Running {
        let (tx, rx) = watch::channel(false);
        let stop_all = self.stop.clone();
        let this_stop = rx.clone();
        let either = move || {
            let (mut a, mut b) = (stop_all.clone(), rx.clone());
            async move {
                tokio::select! {
                    _ = a.wait_for(|s| *s) => {}
                    _ = b.wait_for(|s| *s) => {}
                }
            }
        };
        let readiness = follow_readiness(statuses);
        let mut feed = readiness.clone();
        let stopped = either();
        let mut tasks = vec![tokio::spawn(async move {
            tokio::select! {
                _ = crate::log_readiness(readiness, this_stop) => {}
                _ = stopped => {}
            }
        })];
        // This sync's readiness into the one `/readyz` reads for the plugin's life.
        let out = self.readiness.clone();
        let stopped = either();
        tasks.push(tokio::spawn(async move {
            tokio::pin!(stopped);
            loop {
                out.send_replace(feed.borrow_and_update().clone());
                tokio::select! {
                    r = feed.changed() => if r.is_err() { break },
                    _ = &mut stopped => break,
                }
            }
        }));
        // SRDP's DaemonSet does not mount kubelet's pod-resources dir; without it the pools
        // never learn that a pod let go of a device, which matters for netdev health and for
        // devices a reload moved to another pool (withheld until released).
        if self
            .pod_resources_socket
            .parent()
            .is_some_and(|dir| dir.is_dir())
        {
            let mut watcher =
                PodResourcesWatcher::new(&self.pod_resources_socket, Duration::from_secs(10));
            for slot in pools.slots() {
                let name = slot.resource_name().to_string();
                watcher = watcher.watch(name, slot as Arc<dyn Backend>);
            }
            for retired in pools.retired() {
                let name = retired.resource_name().to_string();
                watcher = watcher.watch(name, retired as Arc<dyn Backend>);
            }
            tasks.push(tokio::spawn(watcher.run(either())));
        } else if self.followers.is_none() {
            tracing::info!(
                socket = %self.pod_resources_socket.display(),
                "no pod-resources dir: devices once allocated are never flagged for a vanished netdev, nor offered by another pool after a reload"
            );
        }
        Running {
            stop: tx,
            task: tokio::spawn(async move {
                for t in tasks {
                    let _ = t.await;
                }
            }),
        }
    }

    /// Stops every plugin and follower (after the global stop was sent, or not).
    pub(crate) async fn stop_all(mut self) {
        for (_, r) in std::mem::take(&mut self.running) {
            stop(r).await;
        }
        if let Some(f) = self.followers.take() {
            stop(f).await;
        }
    }
}

async fn stop(r: Running) {
    let _ = r.stop.send(true);
    let _ = r.task.await;
}

/// One resource's plugin until the global or its own stop.
async fn serve_one(
    plugin: DevicePlugin<PoolSlot>,
    slot: Arc<PoolSlot>,
    mut stop_all: watch::Receiver<bool>,
    mut stop_one: watch::Receiver<bool>,
) {
    let name = slot.resource_name().to_string();
    let mut devices = slot.devices();
    // As SRDP, a pool with no devices is not offered to kubelet; unlike SRDP, it is once a
    // rescan (or a reload) finds some.
    if devices.borrow().is_empty() {
        tracing::info!(resource = %name, "no devices yet: not registered with kubelet until some appear");
        tokio::select! {
            _ = stop_all.wait_for(|s| *s) => return,
            _ = stop_one.wait_for(|s| *s) => return,
            r = devices.wait_for(|d| !d.is_empty()) => if r.is_err() { return },
        }
        tracing::info!(resource = %name, "devices appeared: registering with kubelet");
    }
    plugin
        .run(async move {
            tokio::select! {
                _ = stop_all.wait_for(|s| *s) => {}
                _ = stop_one.wait_for(|s| *s) => {}
            }
        })
        .await;
}

/// The signals the plugin acts on, installed before the plugins start so that an early
/// SIGHUP reloads rather than kills.
pub(crate) struct Signals {
    hangup: Option<Signal>,
    stops: Vec<(Signal, &'static str)>,
}

impl Signals {
    pub(crate) fn install() -> Self {
        let open = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot watch {name}: {e}");
                None
            }
        };
        let stops = [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::quit(), "SIGQUIT"),
        ]
        .into_iter()
        .filter_map(|(kind, name)| open(kind, name).map(|s| (s, name)))
        .collect();
        Self {
            hangup: open(SignalKind::hangup(), "SIGHUP"),
            stops,
        }
    }
}

async fn hangup(hangup: &mut Option<Signal>) {
    match hangup.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

async fn stopping(stops: &mut [(Signal, &'static str)]) -> &'static str {
    if stops.is_empty() {
        return std::future::pending().await;
    }
    let waits = stops.iter_mut().map(|(s, name)| {
        let name: &'static str = name;
        Box::pin(async move {
            s.recv().await;
            name
        })
    });
    futures::future::select_all(waits).await.0
}

/// What the main loop of either mode waits for.
pub(crate) enum Trigger {
    /// SIGINT, SIGTERM or SIGQUIT, by name.
    Stop(&'static str),
    /// SIGHUP or a change of the config file: reload.
    Reload(&'static str),
}

/// The next stop signal, SIGHUP or config file change.
pub(crate) async fn next_trigger(signals: &mut Signals, changes: &mut ConfigWatch) -> Trigger {
    tokio::select! {
        name = stopping(&mut signals.stops) => Trigger::Stop(name),
        _ = hangup(&mut signals.hangup) => Trigger::Reload("SIGHUP"),
        _ = changes.changed() => Trigger::Reload("config file change"),
    }
}

/// Follows the config file and SIGHUP until SIGINT, SIGTERM or SIGQUIT, whose name it returns.
pub(crate) async fn follow_config(
    pools: &Arc<Reloader>,
    plugins: &mut Plugins,
    signals: &mut Signals,
    file: &Path,
    strictness: Strictness,
) -> &'static str {
    let mut changes = ConfigWatch::new(file);
    loop {
        match next_trigger(signals, &mut changes).await {
            Trigger::Stop(name) => return name,
            Trigger::Reload(why) => {
                if reload(pools, file, strictness, why).await {
                    plugins.sync(pools).await;
                }
            }
        }
    }
}

/// Reloads `file` into `pools`; true when a new config now runs. Every outcome is logged; on
/// any error the running config stays.
pub(crate) async fn reload(
    pools: &Arc<Reloader>,
    file: &Path,
    strictness: Strictness,
    why: &str,
) -> bool {
    let (p, f) = (pools.clone(), file.to_path_buf());
    match tokio::task::spawn_blocking(move || p.reload_file(&f, strictness)).await {
        Ok(Ok(Reloaded::Unchanged)) => {
            tracing::debug!(trigger = why, "config unchanged");
            false
        }
        Ok(Ok(Reloaded::Applied(diff))) => {
            let config = pools.config();
            for w in &config.warnings {
                tracing::warn!(field = %w.field, "{}", w.message);
            }
            for s in &config.skipped {
                tracing::error!(field = %s.field, "{} (--strict refuses the config instead)", s.message);
            }
            tracing::info!(
                trigger = why,
                added = ?diff.added,
                removed = ?diff.removed,
                changed = ?diff.changed,
                "config reloaded"
            );
            true
        }
        Ok(Err(e)) => {
            tracing::error!(trigger = why, "{e}; the running config stays");
            false
        }
        Err(e) => {
            tracing::warn!("reload task failed: {e}");
            false
        }
    }
}

/// Refreshes the pools every `every`, and at once whenever `rescan` is notified (netlink and
/// uevent followers), until `stop`; `after` runs after each successful refresh.
pub(crate) fn spawn_rescans(
    pools: Arc<Reloader>,
    rescan: Arc<tokio::sync::Notify>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    after: impl Fn() + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(every) => {}
                _ = rescan.notified() => {}
            }
            let p = pools.clone();
            match tokio::task::spawn_blocking(move || p.refresh()).await {
                Ok(Ok(_)) => after(),
                Ok(Err(e)) => tracing::warn!("rescan failed: {e}"),
                Err(e) => tracing::warn!("rescan task failed: {e}"),
            }
        }
    })
}
