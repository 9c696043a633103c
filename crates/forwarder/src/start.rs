//! Start-up and shutdown: the order in which the forwarder's parts are
//! composed, read top to bottom like the Go forwarder's main.go.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sriov_api::nsm::connection::monitor_connection_server::MonitorConnectionServer;
use sriov_api::nsm::networkservice::network_service_server::NetworkServiceServer;
use sriov_chain::elements::monitor::Monitor;
use sriov_chain::forwarder::{Deps, chain};
use sriov_chain::reclaim::Reclaim;
use sriov_chain::returns::Returns;
use sriov_chain::server;
use sriov_config::EnvConfig;
use sriov_nsm::{
    GrpcNextHop, Registration, RegistrationHandle, RegistryClient, listen_unix_secure,
};
use sriov_pci::Sysfs;
use sriov_token_pool::{FileStore, Pool, Reconfigured, system_clock};
use sriov_vfio::VfioDir;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tonic_health::server::HealthReporter;

use crate::readiness::{self, Readiness};
use crate::reload::{Kubelet, KubeletConfig, ReloadError, Reloader, Trigger};
use crate::secure::Secure;
use crate::sweep::sweep_stale_uses;
use crate::vfio::VfioAccess;
use crate::{PoolEntries, StartError, check_transport, metrics, pool_entries};

/// How long [`Running::shutdown`] waits for the servers and tasks to end.
const DRAIN: Duration = Duration::from_secs(10);

/// The forwarder, before it starts.
pub struct Forwarder;

impl Forwarder {
    /// A builder for the forwarder the environment `env` describes.
    pub fn builder(env: EnvConfig) -> Builder {
        Builder {
            sysfs: Sysfs::new(&env.pci_devices_path, &env.pci_drivers_path),
            env,
            reset_state: false,
            vfio_at_allocate: false,
            svid_wait: crate::secure::SVID_WAIT,
            netlink_thread: false,
        }
    }
}

/// What to start: the environment, and what the binary decides beside it.
pub struct Builder {
    env: EnvConfig,
    sysfs: Sysfs,
    reset_state: bool,
    vfio_at_allocate: bool,
    svid_wait: Duration,
    netlink_thread: bool,
}

impl Builder {
    /// Drives this process's netlink requests on a thread of their own
    /// ([`sriov_netlink::drive_requests_on_own_thread`]), so the kernel's
    /// time in a namespace move holds that thread, not a tokio worker: a
    /// Close then starts its move home beside its answer. The daemon does;
    /// it is process-wide, so a library caller chooses.
    pub fn netlink_thread(mut self, own: bool) -> Self {
        self.netlink_thread = own;
        self
    }

    /// Waits at most `wait` for the first SVID (secure mode; default
    /// [`SVID_WAIT`](crate::secure::SVID_WAIT)).
    pub fn svid_wait(mut self, wait: Duration) -> Self {
        self.svid_wait = wait;
        self
    }

    /// Discovers and changes PCI devices through `sysfs` instead of the one
    /// at `NSM_PCI_DEVICES_PATH` (a fixture tree whose writes react like the
    /// kernel's, in the demo and the end-to-end tests).
    pub fn sysfs(mut self, sysfs: Sysfs) -> Self {
        self.sysfs = sysfs;
        self
    }

    /// Gives VFIO access at kubelet's Allocate on a cgroup v1 node too (it
    /// always is on v2): the VF is fixed, and on vfio-pci, from pod creation
    /// until the pod releases its token, instead of from Request to Close.
    pub fn vfio_at_allocate(mut self, at_allocate: bool) -> Self {
        self.vfio_at_allocate = at_allocate;
        self
    }

    /// Starts on an empty pool state instead of the one recorded.
    pub fn reset_state(mut self, reset: bool) -> Self {
        self.reset_state = reset;
        self
    }

    /// Prepares the PFs, opens the pool on its recorded state, rolls back
    /// Requests a previous process was killed in the middle of, then starts
    /// the kubelet device plugins, the pod-resources watcher, the sweep, the
    /// NSM servers and the registration. Returns once the socket is
    /// listening; registrations complete in the background
    /// ([`Running::ready`]).
    pub async fn start(self) -> Result<Running, StartError> {
        let Builder {
            env,
            sysfs,
            reset_state,
            vfio_at_allocate,
            svid_wait,
            netlink_thread,
        } = self;
        check_transport(&env)?;
        if env.insecure {
            // Development mode only: said at every start so that a
            // production node running it shows up in any log search.
            tracing::warn!(
                "NSM_INSECURE=true: serving and dialing plaintext gRPC without SPIFFE identity, \
                 token signing or policies; do not run a shared node like this"
            );
        }
        let started = Instant::now();
        let secure = Secure::start(&env, svid_wait).await?;
        let PoolEntries {
            entries,
            skipped,
            warnings,
            config,
        } = pool_entries(&env.sriov_config_file, &sysfs, true)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        // Start-up is the one place these are said: a resource with fewer
        // devices than the config promises is explained here.
        for s in &skipped {
            tracing::warn!(pf = %s.pf, "{s}");
        }
        let pool_err = |source| StartError::Pool {
            dir: env.state_dir.clone(),
            source,
        };
        let mut store = FileStore::in_dir(&env.state_dir).map_err(pool_err)?;
        if reset_state {
            store = store.with_reset();
        }
        let (mut pool, warnings) =
            Pool::open(entries, store, &sysfs, system_clock()).map_err(pool_err)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        let vfio_dir = VfioDir::new(&env.vfio_path);
        let vfio = VfioAccess::decide(&env.cgroup_path, &vfio_dir, &sysfs, vfio_at_allocate);
        vfio.log();
        if let Some(why) = vfio.only_at_allocate() {
            pool = pool.with_vfio_only_at_allocate(why);
        }
        let pool = Arc::new(pool);
        sriov_token_pool::metrics::observe(&pool);
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let mut tasks = JoinSet::new();

        // Kubelet: one device plugin per serviceDomain/capability, and the
        // pod-resources watcher that frees tokens no pod holds any more;
        // both follow reloads (reload.rs), as does the config's directory.
        let kubelet = Kubelet::new(
            pool.clone(),
            KubeletConfig {
                device_plugin_dir: env.device_plugin_path.clone(),
                pod_resources_socket: env.pod_resources_path.join("kubelet.sock"),
                poll: env.resource_poll_timeout,
                vfio: vfio.at_allocate(&vfio_dir, &sysfs),
            },
            stop_rx.clone(),
        );
        let reloader = Arc::new(Reloader::new(
            &env.sriov_config_file,
            sysfs.clone(),
            pool.clone(),
            config,
            kubelet,
        ));
        reloader.start_plugins().await;
        let registered = reloader.plugins().await;
        tasks.spawn(crate::config_watch::follow(
            env.sriov_config_file.clone(),
            reloader.clone(),
            stopped(),
        ));
        // VFs made or removed after start (an operator's `sriov_numvfs`): a rescan per
        // burst of PCI uevents.
        tasks.spawn(crate::vf_follow::follow(reloader.clone(), stopped()));

        // NSM: the chain, its servers, and the registration.
        if netlink_thread {
            sriov_netlink::drive_requests_on_own_thread();
        }
        let netlink = Arc::new(sriov_netlink::RtNetlink::new().map_err(StartError::Netlink)?);
        // VF health for kubelet's lists and for VF selection, from events.
        tasks.spawn(crate::health::follow(
            pool.clone(),
            sysfs.clone(),
            crate::health::Links::Netlink(netlink.clone()),
            env.sriov_ignore_carrier,
            stopped(),
        ));
        let cgroups = vfio.cgroups();
        let nsm = |what: &str| {
            let what = what.to_string();
            move |source| StartError::Nsm { what, source }
        };
        let (connect_to, listen_on) = (env.connect_to.clone(), env.listen_on.clone());
        let registry = RegistryClient::secure(
            connect_to.clone(),
            env.dial_timeout,
            &secure.security,
            secure.signer.clone(),
            secure.registry_policies.clone(),
        )
        .map_err(nsm("the registry client"))?;
        let next_hop = GrpcNextHop::secure(
            connect_to,
            env.dial_timeout,
            &secure.security,
            secure.signer.clone(),
        )
        .map_err(nsm("the next hop's client"))?;
        let monitor = Monitor::new();
        let returns = Returns::default();
        let mut reclaim = Reclaim::new(pool.clone(), sysfs.clone(), netlink.clone())
            .with_returns(returns.clone());
        if let Ok(c) = &cgroups {
            reclaim = reclaim.with_cgroups(c.clone());
        }
        // Requests the previous process was killed in the middle of: their
        // clients never got an answer, so what they did is rolled back
        // before anything is served (a failure stays recorded for the sweep).
        metrics::reconcile_run();
        for (connection, result) in reclaim.unfinished().await {
            match result {
                Ok(Some(what)) => {
                    metrics::repaired("unfinished_request", 1);
                    tracing::info!(%connection, "{what} (its Request never finished)")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%connection, error = %e, "rolling back an unfinished Request")
                }
            }
        }
        let chain = chain(Deps {
            name: env.name.clone(),
            max_token_lifetime: env.max_token_lifetime,
            signer: secure.signer.clone(),
            authorization: secure.server.clone(),
            pool: pool.clone(),
            sysfs: sysfs.clone(),
            netlink,
            vfio_dir,
            cgroups,
            finder: Arc::new(registry.clone()),
            next_hop: Arc::new(next_hop),
            next_hop_timeout: env.next_hop_timeout,
            monitor: monitor.clone(),
            // Plaintext development mode keeps the /proc scan; a secure
            // forwarder takes client namespaces only by fd (issue #15).
            netns_proc_scan: env.insecure,
            returns: returns.clone(),
        })
        .map_err(StartError::Chain)?;
        tasks.spawn(sweep_stale_uses(
            pool.clone(),
            sysfs.clone(),
            reclaim,
            chain.clone(),
            monitor.clone(),
            env.resource_poll_timeout,
            stopped(),
        ));
        let (health, health_service) = tonic_health::server::health_reporter();
        // SERVING only once registered (readiness::follow).
        readiness::set_health(&health, false).await;
        let debug = DebugSources {
            pool: pool.clone(),
            sysfs: sysfs.clone(),
            monitor: monitor.clone(),
        };
        let incoming = listen_unix_secure(&listen_on, env.socket_group, &secure.security)
            .map_err(nsm("listening on NSM_LISTEN_ON"))?;
        let max = sriov_api::NSM_MAX_MESSAGE_BYTES;
        let server = tonic::transport::Server::builder()
            .max_concurrent_streams(sriov_api::MAX_CONCURRENT_STREAMS)
            .layer(sriov_telemetry::grpc::ServerTraceLayer)
            .add_service(health_service)
            .add_service(
                NetworkServiceServer::new(server::NetworkServiceServer::new(chain))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(
                MonitorConnectionServer::new(secure.monitor_server(monitor))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .serve_with_incoming_shutdown(incoming, stopped());
        let server = tokio::spawn(server);
        tracing::info!(listen_on = %listen_on, "NetworkService serving");

        let registration = registry.keep_registered(Registration {
            name: env.name.clone(),
            network_service: env.ns_name.clone(),
            labels: env.labels.clone(),
            url: listen_on,
            lifetime: env.max_token_lifetime,
        });
        // Ready once the NSE and every resource are registered; not while
        // either is lost (gRPC health follows).
        let readiness = Arc::new(watch::Sender::new(readiness::starting()));
        let follower = tokio::spawn(readiness::follow(
            registration.subscribe(),
            registered,
            health.clone(),
            readiness.clone(),
            started,
            stopped(),
        ));
        Ok(Running {
            stop_tx,
            tasks,
            server,
            registration,
            health,
            readiness,
            follower,
            debug,
            reloader,
            returns,
        })
    }
}

/// A started forwarder. Dropping it without [`Running::shutdown`] leaves its
/// tasks running on the runtime.
pub struct Running {
    stop_tx: watch::Sender<bool>,
    tasks: JoinSet<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    registration: RegistrationHandle,
    health: HealthReporter,
    readiness: Arc<watch::Sender<Readiness>>,
    follower: JoinHandle<()>,
    debug: DebugSources,
    reloader: Arc<Reloader>,
    returns: Returns,
}

/// Reloads or rescans a running forwarder: [`Running::reload_handle`].
#[derive(Clone)]
pub struct ReloadHandle(Arc<Reloader>);

impl ReloadHandle {
    /// As [`Running::reload`].
    pub async fn reload(&self) -> Result<Reconfigured, ReloadError> {
        self.0
            .reload(Trigger::Asked)
            .await
            .map(Option::unwrap_or_default)
    }

    /// As [`Running::rescan`].
    pub async fn rescan(&self) -> Result<Reconfigured, ReloadError> {
        self.0.rescan().await
    }
}

/// What `/debug/state` is read from.
struct DebugSources {
    pool: Arc<Pool>,
    sysfs: Sysfs,
    monitor: Monitor,
}

impl Running {
    /// Resolves once the NSE and every device plugin are registered.
    pub async fn ready(&self) {
        let _ = self
            .readiness
            .subscribe()
            .wait_for(Readiness::is_ready)
            .await;
    }

    /// The forwarder's readiness, for `/readyz`: ready while the registry
    /// holds the NSE and kubelet knows every resource's device plugin;
    /// otherwise what is missing. gRPC health is SERVING exactly while it
    /// is ready.
    pub fn readiness(&self) -> watch::Receiver<Readiness> {
        self.readiness.subscribe()
    }

    /// The state for `/debug/state`: readiness, the pool per resource
    /// (every VF with its PF, state, current driver and the connection
    /// using it) and the connections the chain serves. Tokens are redacted.
    pub fn debug_state(&self) -> serde_json::Value {
        let DebugSources {
            pool,
            sysfs,
            monitor,
        } = &self.debug;
        let driver = |vf| sysfs.driver(vf).ok().flatten();
        let connections: Vec<serde_json::Value> =
            monitor.connections().iter().map(connection_view).collect();
        serde_json::json!({
            "readiness": self.readiness.borrow().to_string(),
            "pool": pool.debug_state(&driver),
            "connections": connections,
        })
    }

    /// Reads the config file (`NSM_SRIOV_CONFIG_FILE`) and sysfs again and
    /// serves what they say now, as SIGHUP does: judged as `check-config`
    /// judges it, a refused config is logged and counted and the running
    /// one stays. Resources added get a device plugin, removed ones lose
    /// theirs, and the VFs connections use or pods hold stay theirs until
    /// released. Changes to the file's directory trigger it too.
    pub async fn reload(&self) -> Result<Reconfigured, ReloadError> {
        self.reload_handle().reload().await
    }

    /// A handle that reloads and rescans this forwarder from elsewhere (a
    /// signal loop that does not own the `Running`); it outlives nothing:
    /// after shutdown its calls find the tasks gone and fail or do nothing.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle(self.reloader.clone())
    }

    /// Reads sysfs again under the running config: VFs that appeared (an
    /// operator created them after start, `sriov_numvfs` raised) join their
    /// PF's resources, VFs that vanished leave (a connection using one is
    /// ended by the sweep). Creates no VFs. For a caller following kernel
    /// uevents; [`Running::reload`] rescans too.
    pub async fn rescan(&self) -> Result<Reconfigured, ReloadError> {
        self.reload_handle().rescan().await
    }

    /// Stops in order: health NOT_SERVING, the NSE unregistered, then the
    /// device plugins, the watcher, the sweep, the server and the undo of
    /// Closes still moving a VF home, given 10 s to end. Pool state is persisted on every change, so nothing
    /// is pending after it.
    pub async fn shutdown(self) {
        let Running {
            stop_tx,
            mut tasks,
            server,
            registration,
            health,
            readiness,
            follower,
            debug: _,
            reloader,
            returns,
        } = self;
        tracing::info!("shutting down: unregistering, stopping device plugins and the server");
        // Stopped first, so that nothing turns health back on.
        follower.abort();
        readiness.send_replace(readiness::stopping());
        readiness::set_health(&health, false).await;
        if let Err(e) = registration.shutdown().await {
            tracing::warn!(error = %e, "unregistering the NSE");
        }
        let _ = stop_tx.send(true);
        let drain = async {
            // Closes that answered before their VF was home: finished, not cut off.
            returns.settled().await;
            reloader.stopped().await;
            while tasks.join_next().await.is_some() {}
            let _ = server.await;
        };
        if tokio::time::timeout(DRAIN, drain).await.is_err() {
            tracing::warn!("shutdown took longer than {DRAIN:?}; exiting anyway");
        }
        tracing::info!("stopped");
    }
}

/// A served connection for `/debug/state`: what identifies it and its
/// mechanism, the token parameter redacted and the path's tokens left out.
fn connection_view(c: &sriov_api::nsm::connection::Connection) -> serde_json::Value {
    let mechanism = c.mechanism.as_ref().map(|m| {
        let parameters: serde_json::Map<String, serde_json::Value> = m
            .parameters
            .iter()
            .map(|(k, v)| {
                let v = if k == sriov_chain::params::TOKEN_ID {
                    sriov_token_pool::redact::Redacted(v).to_string()
                } else {
                    v.clone()
                };
                (k.clone(), v.into())
            })
            .collect();
        serde_json::json!({ "type": m.r#type, "cls": m.cls, "parameters": parameters })
    });
    let path: Vec<&str> = c
        .path
        .iter()
        .flat_map(|p| p.path_segments.iter().map(|s| s.name.as_str()))
        .collect();
    serde_json::json!({
        "id": c.id,
        "network_service": c.network_service,
        "endpoint": c.network_service_endpoint_name,
        "state": c.state,
        "mechanism": mechanism,
        "path": path,
    })
}
