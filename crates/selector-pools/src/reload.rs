//! Config reloads without a restart (issue #18): a [`Reloader`] holds the running config's
//! pools and swaps in a new config's, and [`ConfigWatch`] says when the config file may have
//! changed.
//!
//! Kubelet keeps one gRPC server (and its ListAndWatch streams) per resource; a reload must
//! not tear them down for a resource that stays. So the device plugin serves a [`PoolSlot`],
//! which stays for as long as its resource is in the config, and a reload puts a successor
//! pool in it: same device channel (streams carry on and see the new list), same
//! allocations. A resource the new config drops loses its slot (its plugin stops, its socket
//! goes, kubelet drops the resource); the devices its pods still hold become a
//! [`RetiredPool`] until pod-resources says they are released.
//!
//! A device a pod holds is advertised by the pool that handed it out, while that pool still
//! takes it, and by no pool otherwise, until released: never by a second resource, whatever
//! a reload moved.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use sriov_deviceplugin::watch::{DirEvent, DirWatcher};
use sriov_deviceplugin::{AllocateError, Backend, ContainerAllocateResponse, Device};
use tokio::sync::watch;

use crate::config::{Config, ResourceConfig, Strictness};
use crate::error::{ConfigError, PoolError};
use crate::health::LinkHealth;
use crate::host::Host;
use crate::pool::{PoolManager, PoolSettings, ResourcePool};

/// Why a reload left the running config in place.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config does not load: the same error start-up would stop on.
    #[error("invalid config {path}: {cause}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it (names the field).
        cause: ConfigError,
    },
    /// Discovering the host for the new config failed.
    #[error("discovering devices for config {path}: {cause}")]
    Discovery {
        /// The config file.
        path: PathBuf,
        /// Why.
        cause: PoolError,
    },
}

/// How the resources of two configs differ, by `<prefix>/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// In the new config only: their plugins start and register with kubelet.
    pub added: Vec<String>,
    /// In the old config only: their plugins stop, kubelet drops them.
    pub removed: Vec<String>,
    /// In both, with other settings (selectors, device type, ...): re-advertised.
    pub changed: Vec<String>,
    /// In both, the same.
    pub unchanged: Vec<String>,
}

impl ConfigDiff {
    /// Compares `old` with `new` (`default_prefix` is `--resource-prefix`). A resource that only
    /// moved in `resourceList` is unchanged (the order still decides which pool a device joins).
    pub fn between(old: &Config, new: &Config, default_prefix: &str) -> Self {
        let by_name = |c: &Config| -> BTreeMap<String, ResourceConfig> {
            c.resources
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.index = 0;
                    (r.full_name(default_prefix), r)
                })
                .collect()
        };
        let (old, new) = (by_name(old), by_name(new));
        let mut diff = Self::default();
        for (name, rc) in &new {
            match old.get(name) {
                None => diff.added.push(name.clone()),
                Some(before) if before != rc => diff.changed.push(name.clone()),
                Some(_) => diff.unchanged.push(name.clone()),
            }
        }
        diff.removed = old
            .keys()
            .filter(|n| !new.contains_key(*n))
            .cloned()
            .collect();
        diff
    }

    /// Whether no resource was added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// What [`Reloader::reload_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The file holds the running config: nothing to do.
    Unchanged,
    /// The new config runs now.
    Applied(ConfigDiff),
}

/// Allocate against every slot waits while a reload swaps pools, so no pod is handed a device
/// by a pool object the reload is replacing (its allocation would be lost to the successor).
type Gate = Arc<RwLock<()>>;

/// One resource's place for the device plugin: kubelet talks to it for as long as the resource
/// is in the config, whatever pool object a reload puts behind it.
#[derive(Debug)]
pub struct PoolSlot {
    resource: String,
    pool: Mutex<Arc<ResourcePool>>,
    gate: Gate,
}

impl PoolSlot {
    /// `<prefix>/<name>`.
    pub fn resource_name(&self) -> &str {
        &self.resource
    }

    /// The pool behind it now.
    pub fn pool(&self) -> Arc<ResourcePool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, pool: Arc<ResourcePool>) {
        *self.pool.lock().unwrap_or_else(|e| e.into_inner()) = pool;
    }
}

impl Backend for PoolSlot {
    fn devices(&self) -> watch::Receiver<Vec<Device>> {
        // Successors share the channel: a receiver outlives the pool it came from.
        self.pool().devices()
    }

    fn allocate(
        &self,
        containers: &[Vec<String>],
    ) -> Result<Vec<ContainerAllocateResponse>, AllocateError> {
        let _gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
        self.pool().allocate(containers)
    }

    fn allocated(&self) -> Vec<String> {
        self.pool().allocated()
    }

    fn release(&self, ids: &[String]) {
        let _gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
        self.pool().release(ids);
    }
}

/// The devices pods still hold of a resource a reload removed: advertised by no pool until
/// pod-resources reports them released (the device plugin's pod-resources watcher calls
/// [`Backend::release`]). A later config that brings the resource back takes them over.
#[derive(Debug)]
pub struct RetiredPool {
    resource: String,
    held: Mutex<BTreeSet<String>>,
    none: watch::Sender<Vec<Device>>,
}

impl RetiredPool {
    /// The removed resource.
    pub fn resource_name(&self) -> &str {
        &self.resource
    }

    fn lock(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for RetiredPool {
    fn devices(&self) -> watch::Receiver<Vec<Device>> {
        self.none.subscribe()
    }

    fn allocate(
        &self,
        containers: &[Vec<String>],
    ) -> Result<Vec<ContainerAllocateResponse>, AllocateError> {
        let id = containers
            .iter()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_default();
        Err(AllocateError::Unavailable {
            id,
            reason: format!("{} is no longer in the config", self.resource),
        })
    }

    fn allocated(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn release(&self, ids: &[String]) {
        let mut held = self.lock();
        for id in ids {
            held.remove(id);
        }
    }
}

/// Who may advertise each allocated device: `Some(i)` the pool at index `i` (it handed it
/// out), `None` no pool (its resource was removed). Devices not listed are free.
pub(crate) fn holders(
    pools: &[Arc<ResourcePool>],
    retired: &[Arc<RetiredPool>],
) -> HashMap<String, Option<usize>> {
    let mut out = HashMap::new();
    for r in retired {
        for id in r.allocated() {
            out.insert(id, None);
        }
    }
    for (i, pool) in pools.iter().enumerate() {
        for id in pool.allocated() {
            out.insert(id, Some(i));
        }
    }
    out
}

struct Current {
    config: Config,
    manager: Arc<PoolManager>,
    slots: Vec<Arc<PoolSlot>>,
    retired: Vec<Arc<RetiredPool>>,
}

/// The running config's pools, swapped for a new config's on [`reload`](Self::reload).
///
/// Refreshes and reloads take turns, so a rescan never publishes a pool a reload is replacing.
pub struct Reloader {
    host: Host,
    settings: PoolSettings,
    links: Arc<dyn LinkHealth>,
    gate: Gate,
    current: Mutex<Current>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("host", &self.host)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// The pools of `config`, empty until the first [`refresh`](Self::refresh).
    pub fn new(
        config: Config,
        host: Host,
        settings: PoolSettings,
        links: Arc<dyn LinkHealth>,
    ) -> Self {
        let gate = Gate::default();
        let manager = PoolManager::new(&config, host.clone(), settings.clone(), links.clone());
        let slots = manager
            .pools()
            .iter()
            .map(|p| {
                Arc::new(PoolSlot {
                    resource: p.resource_name().to_string(),
                    pool: Mutex::new(p.clone()),
                    gate: gate.clone(),
                })
            })
            .collect();
        Self {
            host,
            settings,
            links,
            gate,
            current: Mutex::new(Current {
                config,
                manager: Arc::new(manager),
                slots,
                retired: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running config.
    pub fn config(&self) -> Config {
        self.lock().config.clone()
    }

    /// The running pools (for `explain`-style reports and `/debug/state`).
    pub fn manager(&self) -> Arc<PoolManager> {
        self.lock().manager.clone()
    }

    /// One slot per resource of the running config, in config order: what device plugins
    /// serve.
    pub fn slots(&self) -> Vec<Arc<PoolSlot>> {
        self.lock().slots.clone()
    }

    /// Removed resources whose devices pods still hold, for the pod-resources watcher.
    pub fn retired(&self) -> Vec<Arc<RetiredPool>> {
        self.lock().retired.clone()
    }

    /// [`PoolManager::refresh`] on the running pools.
    pub fn refresh(&self) -> Result<bool, PoolError> {
        let current = self.lock();
        current.manager.refresh()
    }

    /// Start and stop: removes every pool's device-info files and, with `--use-cdi`, every
    /// `sriov-dp-*` CDI spec.
    pub fn clean_files(&self) -> Result<(), PoolError> {
        self.lock().manager.clean_files()
    }

    /// Loads `path` as start-up does and, if it differs from the running config, runs it.
    /// Counted in `sriov.dp.reloads`; on any error the running config stays.
    pub fn reload_file(
        &self,
        path: &Path,
        strictness: Strictness,
    ) -> Result<Reloaded, ReloadError> {
        let result = Config::load_with(path, &self.settings.default_prefix, strictness)
            .map_err(|cause| ReloadError::Invalid {
                path: path.to_path_buf(),
                cause,
            })
            .and_then(|config| {
                self.reload(config).map_err(|cause| ReloadError::Discovery {
                    path: path.to_path_buf(),
                    cause,
                })
            });
        crate::metrics::reload_done(match &result {
            Ok(Reloaded::Unchanged) => "unchanged",
            Ok(Reloaded::Applied(_)) => "applied",
            Err(ReloadError::Invalid { .. }) => "invalid",
            Err(ReloadError::Discovery { .. }) => "failed",
        });
        result
    }

    /// Runs `config` in place of the running one: pools of resources that stay get a
    /// successor (same streams, same allocations), new resources get a slot, removed ones lose
    /// theirs (their device-info files go; allocations they handed out are withheld until
    /// released). The new pools are refreshed before anyone can allocate from them, and with
    /// `--use-cdi` every spec is rewritten and specs of resources no longer served are removed.
    /// On a discovery error nothing changes.
    pub fn reload(&self, config: Config) -> Result<Reloaded, PoolError> {
        let mut current = self.lock();
        if config == current.config {
            return Ok(Reloaded::Unchanged);
        }
        let diff = ConfigDiff::between(&current.config, &config, &self.settings.default_prefix);
        // Kubelet's Allocate waits until the new pools are in their slots.
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let fresh = PoolManager::new(
            &config,
            self.host.clone(),
            self.settings.clone(),
            self.links.clone(),
        );
        let old: HashMap<String, Arc<PoolSlot>> = current
            .slots
            .iter()
            .map(|s| (s.resource.clone(), s.clone()))
            .collect();
        let mut retired: Vec<Arc<RetiredPool>> = current.retired.clone();
        let mut pools = Vec::new();
        let mut slots = Vec::new();
        for pool in fresh.pools() {
            let name = pool.resource_name().to_string();
            let next = match old.get(&name) {
                Some(slot) => {
                    let next = Arc::new(slot.pool().successor(
                        pool.config().clone(),
                        fresh.host.clone(),
                        fresh.settings.clone(),
                    ));
                    slots.push((slot.clone(), Some(next.clone())));
                    next
                }
                None => {
                    // A resource coming back takes over what its pods still hold.
                    if let Some(i) = retired.iter().position(|r| r.resource == name) {
                        pool.hold(retired.remove(i).allocated());
                    }
                    slots.push((
                        Arc::new(PoolSlot {
                            resource: name,
                            pool: Mutex::new(pool.clone()),
                            gate: self.gate.clone(),
                        }),
                        None,
                    ));
                    pool.clone()
                }
            };
            pools.push(next);
        }
        let mut removed = Vec::new();
        for (name, slot) in &old {
            if fresh.pool(name).is_none() {
                let pool = slot.pool();
                let held = pool.allocated();
                if !held.is_empty() {
                    retired.push(Arc::new(RetiredPool {
                        resource: name.clone(),
                        held: Mutex::new(held.into_iter().collect()),
                        none: watch::channel(Vec::new()).0,
                    }));
                }
                removed.push(pool);
            }
        }
        retired.retain(|r| !r.lock().is_empty());
        let mut manager = fresh;
        manager.replace_pools(pools, retired.clone());
        manager.refresh()?;
        // Nothing fails from here on: the new config runs.
        for (slot, next) in &slots {
            if let Some(next) = next {
                slot.set(next.clone());
            }
        }
        for pool in removed {
            if let Err(e) = pool.clean_device_info() {
                tracing::warn!(resource = pool.resource_name(), "{e}");
            }
        }
        if self.settings.use_cdi
            && let Err(e) = write_cdi_specs(&manager)
        {
            tracing::warn!("{e}");
        }
        *current = Current {
            config,
            manager: Arc::new(manager),
            slots: slots.into_iter().map(|(s, _)| s).collect(),
            retired,
        };
        Ok(Reloaded::Applied(diff))
    }
}

/// Every pool's spec, and no other `sriov-dp-*` spec.
fn write_cdi_specs(manager: &PoolManager) -> Result<(), PoolError> {
    let mut keep = Vec::new();
    for pool in manager.pools() {
        pool.write_cdi_spec()?;
        keep.push(
            manager
                .settings
                .cdi
                .path(&pool.cdi_kind(), &pool.config().resource_name),
        );
    }
    manager.settings.cdi.remove_except(&keep)?;
    Ok(())
}

/// How long a burst of directory events (a ConfigMap update is four or five) is let settle
/// before the config is read.
const SETTLE: Duration = Duration::from_millis(25);

/// Says when the config file may have changed: anything happening in its directory (a write
/// in place, a rename over it, a ConfigMap `..data` symlink swap). A directory that cannot be
/// watched (gone, inotify refused) is watched again a second later, and that counts as a
/// change, since anything may have happened meanwhile.
#[derive(Debug)]
pub struct ConfigWatch {
    dir: PathBuf,
    watcher: Option<DirWatcher>,
}

impl ConfigWatch {
    /// Watches the directory of `file`.
    pub fn new(file: &Path) -> Self {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let watcher = Self::open(&dir);
        Self { dir, watcher }
    }

    fn open(dir: &Path) -> Option<DirWatcher> {
        match DirWatcher::with_writes(dir) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("config changes are seen on SIGHUP only until this works: {e}");
                None
            }
        }
    }

    /// Resolves once the directory changed (and the burst settled).
    pub async fn changed(&mut self) {
        loop {
            let Some(w) = self.watcher.as_mut() else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.watcher = Self::open(&self.dir);
                if self.watcher.is_some() {
                    return;
                }
                continue;
            };
            match w.next().await {
                Ok(events) if events.is_empty() => continue,
                Ok(events) => {
                    let mut gone = events.contains(&DirEvent::Gone);
                    // Drain the rest of the burst.
                    while let Ok(more) = tokio::time::timeout(SETTLE, w.next()).await {
                        match more {
                            Ok(more) => gone |= more.contains(&DirEvent::Gone),
                            Err(_) => {
                                gone = true;
                                break;
                            }
                        }
                    }
                    if gone {
                        self.watcher = None;
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    self.watcher = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "intel.com").unwrap()
    }

    #[test]
    fn diff_by_resource_name_ignores_a_move_in_the_list() {
        let old = config(
            r#"{"resourceList":[
                {"resourceName":"a","selectors":{"drivers":["iavf"]}},
                {"resourceName":"b","selectors":{"drivers":["igbvf"]}},
                {"resourceName":"c","selectors":{"drivers":["mlx5_core"]}}]}"#,
        );
        let new = config(
            r#"{"resourceList":[
                {"resourceName":"c","selectors":{"drivers":["mlx5_core"]}},
                {"resourceName":"b","selectors":{"drivers":["vfio-pci"]}},
                {"resourceName":"d","resourcePrefix":"nvidia.com","selectors":{"drivers":["x"]}}]}"#,
        );
        let diff = ConfigDiff::between(&old, &new, "intel.com");
        assert_eq!(diff.added, ["nvidia.com/d"]);
        assert_eq!(diff.removed, ["intel.com/a"]);
        assert_eq!(diff.changed, ["intel.com/b"]);
        assert_eq!(diff.unchanged, ["intel.com/c"]);
        assert!(!diff.is_empty());
        assert!(ConfigDiff::between(&old, &old, "intel.com").is_empty());
    }

    #[test]
    fn a_retired_pool_refuses_allocation_and_forgets_released_devices() {
        let r = RetiredPool {
            resource: "intel.com/a".into(),
            held: Mutex::new(["x".to_string(), "y".to_string()].into()),
            none: watch::channel(Vec::new()).0,
        };
        assert!(r.devices().borrow().is_empty());
        assert!(matches!(
            r.allocate(&[vec!["x".into()]]),
            Err(AllocateError::Unavailable { .. })
        ));
        r.release(&["x".into(), "z".into()]);
        assert_eq!(r.allocated(), ["y"]);
    }

    #[tokio::test]
    async fn a_configmap_style_symlink_swap_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/config.json"), "{}").unwrap();
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.json", d.join("config.json")).unwrap();
        let mut w = ConfigWatch::new(&d.join("config.json"));
        // Kubelet's atomic writer: new dir, a temp symlink renamed over `..data`.
        std::fs::create_dir(d.join("..v2")).unwrap();
        std::fs::write(d.join("..v2/config.json"), "[]").unwrap();
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        tokio::time::timeout(Duration::from_secs(10), w.changed())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("config.json")).unwrap(),
            "[]"
        );
    }
}
