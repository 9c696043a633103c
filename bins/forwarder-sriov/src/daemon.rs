//! The forwarder daemon: composes configuration, discovery, the pool, the
//! kubelet device plugins, the NSM registration and the NetworkService
//! server, and shuts them down in order on SIGTERM/SIGINT.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use sriov_api::nsm::connection::monitor_connection_server::MonitorConnectionServer;
use sriov_api::nsm::networkservice::network_service_server::NetworkServiceServer;
use sriov_chain::elements::monitor::Monitor;
use sriov_chain::forwarder::{Deps, chain};
use sriov_chain::reclaim::Reclaim;
use sriov_chain::server;
use sriov_config::{EnvConfig, ReconcileOptions, SriovConfig, reconcile};
use sriov_deviceplugin::{DevicePlugin, PluginConfig, PodResourcesWatcher, RegistrationMode};
use sriov_nsm::{GrpcNextHop, NsmUrl, Registration, RegistryClient, listen_unix_for_group};
use sriov_pci::Sysfs;
use sriov_pool::{FileStore, PfEntry, Pool, PoolResource, system_clock};
use sriov_vfio::{CgroupDevices, VfioDir};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::logging::LevelSwitch;

/// Resolves when shutdown starts.
async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Ends pool uses no live connection holds once their lease expired (after
/// a restart, uses recorded before it have no timer of their own): their
/// host changes are undone from the pool's record first ([`Reclaim`]), so
/// the VF goes back clean; then releases uses whose VF is gone or visibly
/// back with the forwarder. Connections whose token no pod holds any more
/// (kubelet's pod-resources said so) are closed: through the chain when
/// this process serves them, from the record otherwise.
async fn sweep_stale_uses(
    pool: Arc<Pool>,
    sysfs: Sysfs,
    reclaim: Reclaim,
    chain: Arc<sriov_chain::Chain>,
    monitor: Monitor,
    every: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let served = monitor.connections();
        for connection in pool.abandoned() {
            let closed = match served.iter().find(|c| c.id == connection) {
                Some(conn) => chain
                    .close(&mut sriov_chain::Ctx::new(), conn.clone())
                    .await
                    .map(|()| Some("closed".to_string())),
                None => reclaim.connection(&connection).await,
            };
            match closed {
                Ok(Some(what)) => tracing::info!(%connection, "{what} (its pod is gone)"),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%connection, error = %e, "closing the connection of a gone pod; retried next sweep")
                }
            }
        }
        let mut live: std::collections::HashSet<String> =
            monitor.connections().into_iter().map(|c| c.id).collect();
        let expired = match pool.expired() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "listing expired VF uses");
                Vec::new()
            }
        };
        let mut stuck = Vec::new();
        for (connection, _) in expired.iter().filter(|(c, _)| !live.contains(c)) {
            match reclaim.connection(connection).await {
                Ok(Some(what)) => tracing::info!(%connection, "{what} (expired unrefreshed)"),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%connection, error = %e, "undoing an expired connection; retried next sweep");
                    stuck.push(connection.clone());
                }
            }
        }
        // A use whose undo failed stays recorded: released now, its VF would
        // go to the next tenant still configured for this one.
        live.extend(stuck);
        let (pool, sysfs) = (pool.clone(), sysfs.clone());
        let swept =
            tokio::task::spawn_blocking(move || pool.sweep(&sysfs, &|c| live.contains(c))).await;
        match swept {
            Ok(Ok(released)) => released.iter().for_each(|r| tracing::info!("{r}")),
            Ok(Err(e)) => tracing::warn!(error = %e, "sweeping stale VF uses"),
            Err(e) => tracing::warn!(error = %e, "sweep task failed"),
        }
    }
}

/// Refuses to run with neither plaintext nor SPIFFE configured.
pub(crate) fn check_transport(env: &EnvConfig) -> Result<()> {
    if env.insecure {
        return Ok(());
    }
    if std::env::var_os("SPIFFE_ENDPOINT_SOCKET").is_some() {
        bail!(
            "SPIFFE_ENDPOINT_SOCKET is set, but SPIFFE mTLS is not implemented yet; \
             set NSM_INSECURE=true to serve and dial plaintext over unix sockets"
        );
    }
    bail!(
        "neither NSM_INSECURE=true nor SPIFFE_ENDPOINT_SOCKET is set: \
         set NSM_INSECURE=true to serve and dial plaintext over unix sockets"
    )
}

/// The pool's view of the configured PFs: each PF with exactly the VFs the
/// config file allows (all of them, or its `virtualFunctions`).
pub(crate) fn pool_entries(
    config_file: &std::path::Path,
    sysfs: &Sysfs,
    create_vfs: bool,
) -> Result<Vec<PfEntry>> {
    let loaded = SriovConfig::load(config_file)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let ready = reconcile(&loaded.config, sysfs, ReconcileOptions { create_vfs })?;
    for w in &ready.warnings {
        tracing::warn!("{w}");
    }
    let mut entries = Vec::new();
    for pf in ready.physical_functions {
        let mut phys = sysfs.physical_function(pf.address)?;
        phys.vfs
            .retain(|v| pf.vfs.iter().any(|r| r.address == v.address));
        entries.push(PfEntry {
            names: pf.resource_names(),
            vf_kernel_driver: pf.config.vf_kernel_driver.clone(),
            pf: phys,
        });
    }
    Ok(entries)
}

pub(crate) async fn run(
    env: EnvConfig,
    sysfs: Sysfs,
    levels: LevelSwitch,
    reset_state: bool,
) -> Result<()> {
    check_transport(&env)?;
    let started = std::time::Instant::now();
    let entries = pool_entries(&env.sriov_config_file, &sysfs, true)?;
    let kernel_drivers: HashMap<_, _> = entries
        .iter()
        .map(|e| (e.pf.device.address, e.vf_kernel_driver.clone()))
        .collect();
    let mut store = FileStore::in_dir(&env.state_dir)?;
    if reset_state {
        store = store.with_reset();
    }
    let (pool, warnings) = Pool::open(entries, store, &sysfs, system_clock())?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let pool = Arc::new(pool);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    // Kubelet: one device plugin per serviceDomain/capability, and the
    // pod-resources watcher that frees tokens no pod holds any more.
    let mut watcher = PodResourcesWatcher::new(
        env.pod_resources_path.join("kubelet.sock"),
        env.resource_poll_timeout,
    );
    let mut registered = Vec::new();
    for name in pool.names() {
        let Some(resource) = PoolResource::new(pool.clone(), &name) else {
            continue;
        };
        let resource = Arc::new(resource);
        let mut cfg = PluginConfig::new(name.clone());
        cfg.device_plugin_dir = env.device_plugin_path.clone();
        // The Go forwarder registers through kubelet.sock; so do we.
        cfg.mode = RegistrationMode::Kubelet;
        let plugin = DevicePlugin::new(cfg, resource.clone());
        registered.push(plugin.registrations());
        tasks.spawn(plugin.run(stopped(stop_rx.clone())));
        watcher = watcher.watch(name.clone(), resource);
        tracing::info!(resource = %name, "device plugin started");
    }
    tasks.spawn(watcher.run(stopped(stop_rx.clone())));

    // NSM: the chain, its servers, and the registration.
    let netlink = Arc::new(sriov_netlink::RtNetlink::new()?);
    let cgroups = CgroupDevices::open(&env.cgroup_path)
        .map(Arc::new)
        .map_err(|e| {
            tracing::warn!(error = %e, "VFIO requests will fail: the cgroup root is unusable");
            e.to_string()
        });
    let connect_to = NsmUrl::parse(&env.connect_to.to_string())?;
    let listen_on = NsmUrl::parse(&env.listen_on.to_string())?;
    let registry = RegistryClient::new(connect_to.clone(), env.dial_timeout)?;
    let next_hop = GrpcNextHop::new(connect_to, env.dial_timeout)?;
    let monitor = Monitor::new();
    let mut reclaim = Reclaim::new(
        pool.clone(),
        sysfs.clone(),
        netlink.clone(),
        kernel_drivers.clone(),
    );
    if let Ok(c) = &cgroups {
        reclaim = reclaim.with_cgroups(c.clone());
    }
    // Requests the previous process was killed in the middle of: their
    // clients never got an answer, so what they did is rolled back before
    // anything is served (a failure stays recorded for the sweep).
    for (connection, result) in reclaim.unfinished().await {
        match result {
            Ok(Some(what)) => tracing::info!(%connection, "{what} (its Request never finished)"),
            Ok(None) => {}
            Err(e) => tracing::warn!(%connection, error = %e, "rolling back an unfinished Request"),
        }
    }
    let chain = chain(Deps {
        name: env.name.clone(),
        max_token_lifetime: env.max_token_lifetime,
        pool: pool.clone(),
        sysfs: sysfs.clone(),
        kernel_drivers,
        netlink,
        vfio_dir: VfioDir::new(&env.vfio_path),
        cgroups,
        finder: Arc::new(registry.clone()),
        next_hop: Arc::new(next_hop),
        next_hop_timeout: env.next_hop_timeout,
        monitor: monitor.clone(),
    });
    tasks.spawn(sweep_stale_uses(
        pool.clone(),
        sysfs.clone(),
        reclaim,
        chain.clone(),
        monitor.clone(),
        env.resource_poll_timeout,
        stopped(stop_rx.clone()),
    ));
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<NetworkServiceServer<server::NetworkServiceServer>>()
        .await;
    let incoming = listen_unix_for_group(&listen_on, env.socket_group)?;
    let max = sriov_api::NSM_MAX_MESSAGE_BYTES;
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(sriov_api::MAX_CONCURRENT_STREAMS)
        .add_service(health_service)
        .add_service(
            NetworkServiceServer::new(server::NetworkServiceServer::new(chain))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            MonitorConnectionServer::new(server::MonitorServer::new(monitor))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
    let server = tokio::spawn(server);
    tracing::info!(listen_on = %listen_on, "NetworkService serving");

    let registration = registry.keep_registered(Registration {
        name: env.name.clone(),
        network_service: env.ns_name.clone(),
        labels: env.labels.clone(),
        url: listen_on,
        lifetime: env.max_token_lifetime,
    });
    {
        // Report start-up time once the NSE and every resource are registered.
        let mut reg = registration.subscribe();
        let mut plugins = registered.clone();
        tokio::spawn(async move {
            let nse = async {
                while !matches!(
                    *reg.borrow(),
                    sriov_nsm::RegistrationState::Registered { .. }
                ) {
                    if reg.changed().await.is_err() {
                        return;
                    }
                }
            };
            let kubelet = async {
                for p in &mut plugins {
                    while *p.borrow() == 0 {
                        if p.changed().await.is_err() {
                            return;
                        }
                    }
                }
            };
            tokio::join!(nse, kubelet);
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "ready: NSE and device plugins registered"
            );
        });
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => levels.set_trace(),
            _ = usr2.recv() => levels.restore(),
        }
    }
    tracing::info!("shutting down: unregistering, stopping device plugins and the server");
    health
        .set_not_serving::<NetworkServiceServer<server::NetworkServiceServer>>()
        .await;
    if let Err(e) = registration.shutdown().await {
        tracing::warn!(error = %e, "unregistering the NSE");
    }
    let _ = stop_tx.send(true);
    let drain = async {
        while tasks.join_next().await.is_some() {}
        let _ = server.await;
    };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("shutdown took longer than 10 s; exiting anyway");
    }
    // Pool state is persisted on every change; nothing is pending here.
    tracing::info!("stopped");
    Ok(())
}
