//! `sriov-device-plugin dra`: the same pools, served through Dynamic Resource Allocation.
//!
//! Discovery, selectors, health (netlink links, uevents, rescans) and config reloads are
//! device-plugin mode's; what differs is the way out. Every change of the pools becomes a new
//! [`Inventory`], which the publisher turns into this node's ResourceSlices, the health stream
//! reports to kubelet, and Prepare reads devices from. Kubelet finds us through the
//! plugin-watcher socket and calls Prepare/Unprepare with claims, which we read from the API
//! server and prepare from the crash-safe checkpoint in the plugin dir.
//!
//! Slices stay on a clean stop: kubelet withdraws a driver's slices itself when the plugin
//! stays unregistered, and keeping them lets pods be scheduled across a plugin restart.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sriov_dra::attributes::HostFacts;
use sriov_dra::claims::ClaimSource;
use sriov_dra::devices::{DraDevice, Inventory};
use sriov_dra::prepare::{PreparedDevice, Preparer, PreparerConfig};
use sriov_dra::publisher::Publisher;
use sriov_dra::service::{ClaimDriver, ClaimRef, ServiceConfig};
use sriov_dra::slices::{DesiredPool, PoolOwner};
use sriov_pci::Sysfs;
use sriov_selector_pools::{
    Config, ConfigWatch, Host, IgnoreCarrier, LinkHealth, LinkTable, NoLinkHealth, PoolSettings,
    Readiness, Reloader, Strictness,
};
use tokio::sync::{Notify, watch};

use crate::args::{Args, DraArgs};
use crate::reload::{Signals, Trigger};

/// A kube client from `--kubeconfig`, else the in-cluster service account (or `KUBECONFIG`).
async fn kube_client(dra: &DraArgs) -> anyhow::Result<kube::Client> {
    let config = match &dra.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster()
            .context("no --kubeconfig and not in a pod (in-cluster service account)")?,
    };
    kube::Client::try_from(config).context("building the API client")
}

/// Rebuilds the inventory from the pools and tells everyone when it changed. Devices prepared
/// claims hold stay in it even when their pool lets them go (the driver Prepare bound can take
/// a device out of a `drivers` selector).
fn publish_inventory(
    pools: &Reloader,
    driver: &Driver,
    host: &Host,
    inventory: &watch::Sender<Arc<Inventory>>,
) {
    let mut now = Inventory::from_pools(pools.manager().pools());
    let missing = driver.held_missing(&now, host);
    now.keep_held(missing);
    inventory.send_if_modified(|current| {
        if **current == now {
            false
        } else {
            *current = Arc::new(now);
            true
        }
    });
}

/// Serves DRA until SIGINT, SIGTERM or SIGQUIT.
pub(crate) async fn serve(
    args: Args,
    dra: DraArgs,
    config: Config,
    host: Host,
    sysfs: Sysfs,
    settings: PoolSettings,
    metrics: sriov_telemetry::PrometheusText,
) -> anyhow::Result<()> {
    let strictness = if args.strict {
        Strictness::Strict
    } else {
        Strictness::Lenient
    };
    if dra.node_name.is_empty() {
        anyhow::bail!("--node-name (NODE_NAME): empty; DRA mode publishes this node's devices");
    }
    let mut signals = Signals::install();
    let rescan = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let links: Arc<dyn LinkHealth> = match args.link_health.as_str() {
        "netlink" => {
            let table = Arc::new(LinkTable::new());
            crate::links::spawn(table.clone(), rescan.clone(), stop_rx.clone());
            if args.ignore_carrier {
                Arc::new(IgnoreCarrier(table))
            } else {
                table
            }
        }
        _ => Arc::new(NoLinkHealth),
    };
    crate::links::spawn_uevents(rescan.clone(), stop_rx.clone());
    // Describes held devices the pools no longer list (`Driver::held_missing`).
    let describe = host.clone();
    let pools = Arc::new(Reloader::new(config, host, settings, links));
    {
        let p = pools.clone();
        tokio::task::spawn_blocking(move || p.refresh())
            .await
            .context("discovery task")?
            .context("discovering devices")?;
    }
    let (inventory_tx, inventory_rx) = watch::channel(Arc::new(Inventory::default()));
    let client = kube_client(&dra).await?;
    let plugin_dir = dra.plugin_dir();
    let driver = Arc::new(
        Driver::new(
            &dra,
            &args,
            &plugin_dir,
            sysfs.clone(),
            client.clone(),
            inventory_rx.clone(),
        )
        .context("loading the prepared-claims checkpoint")?,
    );
    publish_inventory(&pools, &driver, &describe, &inventory_tx);
    tracing::info!(
        devices = inventory_rx.borrow().len(),
        node = dra.node_name,
        "DRA inventory ready"
    );
    let owner = PoolOwner {
        driver: dra.driver_name.clone(),
        node: dra.node_name.clone(),
        node_uid: node_uid(&client, &dra.node_name).await,
    };
    // Refuses a driver or node name no slice can carry before anything is served; the
    // publisher starts from it.
    let first = desired(&owner, &inventory_rx.borrow(), &driver.held(), &sysfs)
        .context("--driver-name or --node-name")?;
    let readiness = watch::channel(Readiness {
        missing: vec!["kubelet has not registered the DRA plugin yet".into()],
    });
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(publish_slices(
        client,
        owner,
        first,
        driver.clone(),
        sysfs.clone(),
        inventory_rx.clone(),
        stop_rx.clone(),
    )));
    let cfg = ServiceConfig {
        driver: dra.driver_name.clone(),
        pool: dra.node_name.clone(),
        plugin_dir,
        registry_dir: args.plugins_registry_dir.clone(),
    };
    let serving =
        sriov_dra::service::serve(&cfg, driver.clone(), inventory_rx.clone(), stop_rx.clone())?;
    tasks.push(tokio::spawn(follow_registration(
        serving.registration.clone(),
        readiness.0,
        stop_rx.clone(),
    )));
    tasks.extend(
        crate::ops::start(
            args.metrics_listen,
            args.pprof_listen,
            metrics,
            readiness.1,
            pools.clone(),
            stop_rx.clone(),
        )
        .await?,
    );
    {
        let (p, inventory, driver) = (pools.clone(), inventory_tx.clone(), driver.clone());
        let describe = describe.clone();
        tasks.push(crate::reload::spawn_rescans(
            pools.clone(),
            rescan.clone(),
            Duration::from_secs(args.rescan_interval.max(1)),
            stop_rx.clone(),
            move || publish_inventory(&p, &driver, &describe, &inventory),
        ));
    }

    let mut changes = ConfigWatch::new(&args.config_file);
    let signal = loop {
        match crate::reload::next_trigger(&mut signals, &mut changes).await {
            Trigger::Stop(name) => break name,
            Trigger::Reload(why) => {
                if crate::reload::reload(&pools, &args.config_file, strictness, why).await {
                    publish_inventory(&pools, &driver, &describe, &inventory_tx);
                }
            }
        }
    };
    tracing::info!(signal, "shutting down");
    let _ = stop_tx.send(true);
    serving.finished().await;
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// `/readyz`: ready once kubelet accepted the registration.
async fn follow_registration(
    mut registration: watch::Receiver<sriov_dra::service::RegistrationState>,
    readiness: watch::Sender<Readiness>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let missing = match &*registration.borrow_and_update() {
            Some(Ok(())) => vec![],
            Some(Err(e)) => vec![format!("kubelet refused the DRA plugin: {e}")],
            None => vec!["kubelet has not registered the DRA plugin yet".into()],
        };
        readiness.send_replace(Readiness { missing });
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = registration.changed() => if r.is_err() { return },
        }
    }
}

/// The desired pool for `inventory`: every healthy device and every device a claim holds,
/// with the facts sysfs adds.
fn desired(
    owner: &PoolOwner,
    inventory: &Inventory,
    held: &BTreeSet<String>,
    sysfs: &Sysfs,
) -> Result<DesiredPool, sriov_dra::slices::SliceError> {
    DesiredPool::new(
        owner.clone(),
        &inventory.held_published(held),
        |_| true,
        |d| HostFacts::read(sysfs, &d.host),
    )
}

/// The Node's UID, for the slices' ownerReference (they go with the node); best effort, as a
/// missing one only loses that garbage collection.
async fn node_uid(client: &kube::Client, node: &str) -> Option<String> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    match nodes.get(node).await {
        Ok(n) => n.metadata.uid,
        Err(e) => {
            tracing::warn!(
                node,
                "cannot read the Node ({e}); slices get no ownerReference"
            );
            None
        }
    }
}

/// Keeps this node's ResourceSlices equal to the inventory until `stop`.
async fn publish_slices(
    client: kube::Client,
    owner: PoolOwner,
    first: DesiredPool,
    driver: Arc<Driver>,
    sysfs: Sysfs,
    mut inventory: watch::Receiver<Arc<Inventory>>,
    mut stop: watch::Receiver<bool>,
) {
    let publisher = Arc::new(Publisher::new(client, &owner.driver, &owner.node));
    // `first` describes the inventory as it is now; only later changes count.
    inventory.borrow_and_update();
    let (tx, rx) = watch::channel(Arc::new(first));
    let mut run_stop = stop.clone();
    let runner = tokio::spawn(publisher.run(rx, async move {
        let _ = run_stop.wait_for(|s| *s).await;
    }));
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            changed = inventory.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = inventory.borrow_and_update().clone();
                match desired(&owner, &now, &driver.held(), &sysfs) {
                    Ok(d) => {
                        tx.send_replace(Arc::new(d));
                    }
                    Err(e) => tracing::error!("cannot describe the pool: {e}"),
                }
            }
        }
    }
    let _ = runner.await;
}

/// Prepare and Unprepare: the claim from the API server, the host changes by the
/// [`Preparer`] (blocking sysfs writes, so on the blocking pool).
struct Driver {
    claims: ClaimSource,
    preparer: Arc<Preparer>,
    inventory: watch::Receiver<Arc<Inventory>>,
}

impl Driver {
    fn new(
        dra: &DraArgs,
        args: &Args,
        plugin_dir: &Path,
        sysfs: Sysfs,
        client: kube::Client,
        inventory: watch::Receiver<Arc<Inventory>>,
    ) -> anyhow::Result<Self> {
        let preparer = Preparer::new(PreparerConfig {
            driver_name: dra.driver_name.clone(),
            pool_name: dra.node_name.clone(),
            sysfs,
            cdi_dir: args.cdi_dir.clone(),
            device_info_dir: args.devinfo_dir.clone(),
            checkpoint: plugin_dir.join("checkpoint.json"),
        })?;
        // A kill between two host changes leaves a claim half done: undo it now, kubelet
        // prepares it again if it still wants it.
        let undone = preparer.recover()?;
        if !undone.is_empty() {
            tracing::warn!(claims = ?undone, "undid claims a crash left half prepared");
        }
        let held = preparer.prepared();
        tracing::info!(claims = held.len(), "prepared claims from the checkpoint");
        Ok(Self {
            claims: ClaimSource::new(client),
            preparer: Arc::new(preparer),
            inventory,
        })
    }
}

impl Driver {
    /// The devices prepared claims hold.
    fn held(&self) -> BTreeSet<String> {
        self.preparer.devices_in_use()
    }

    /// The devices prepared claims hold that `inventory` lacks, described from the host by
    /// the address and resource the checkpoint recorded (none in the usual case: no reads).
    fn held_missing(&self, inventory: &Inventory, host: &Host) -> Vec<DraDevice> {
        self.preparer
            .prepared()
            .into_iter()
            .flat_map(|claim| claim.devices)
            .filter(|d| inventory.get(&d.device).is_none())
            .filter_map(|d| match host.describe(d.address) {
                Ok(described) => Some(DraDevice {
                    name: d.device,
                    resource: d.resource,
                    host: described,
                    unhealthy: None,
                }),
                Err(e) => {
                    tracing::warn!(device = d.device, "a held device cannot be described: {e}");
                    None
                }
            })
            .collect()
    }
}

impl ClaimDriver for Driver {
    async fn prepare(&self, claim: ClaimRef) -> Result<Vec<PreparedDevice>, String> {
        let object = self
            .claims
            .get_checked(&claim.namespace, &claim.name, &claim.uid)
            .await
            .map_err(|e| e.to_string())?;
        let inventory = self.inventory.borrow().clone();
        let preparer = self.preparer.clone();
        tokio::task::spawn_blocking(move || preparer.prepare(&object, &inventory))
            .await
            .map_err(|e| format!("prepare task: {e}"))?
            .map_err(|e| e.to_string())
    }

    async fn unprepare(&self, claim: ClaimRef) -> Result<(), String> {
        let preparer = self.preparer.clone();
        tokio::task::spawn_blocking(move || preparer.unprepare(&claim.uid))
            .await
            .map_err(|e| format!("unprepare task: {e}"))?
            .map_err(|e| e.to_string())
    }
}
