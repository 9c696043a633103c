//! `sriov-device-plugin`: the standalone SR-IOV network device plugin, a drop-in for
//! k8snetworkplumbingwg/sriov-network-device-plugin (same flags, config, resource names, env
//! and device-info files), built on `sriov-selector-pools` and `sriov-deviceplugin`.
//!
//! Composition only: `explain` (`explain.rs`) says why each device is or is not in a pool;
//! otherwise load the config (exit on any error, naming the field), discover, serve
//! one device plugin per resource, keep pools current (netlink link events, kernel uevents
//! and periodic rescans), follow the config file and SIGHUP (`reload.rs`), and clean
//! device-info files and CDI specs at start and stop. SIGINT, SIGTERM and SIGQUIT stop it.

mod args;
mod dra;
mod explain;
mod fixture;
mod links;
mod logging;
mod ops;
mod reload;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sriov_deviceplugin::Backend;
use sriov_selector_pools::{
    CdiDir, Config, DdpTools, DeviceInfoDir, Host, HostPaths, IgnoreCarrier, LinkHealth, LinkTable,
    NoLinkHealth, PoolManager, PoolSettings, Readiness, Reloader, Strictness,
};
use tokio::sync::{Notify, watch};

use crate::args::Args;

fn main() -> std::process::ExitCode {
    let args = Args::parse_from(args::go_style(std::env::args()));
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sriov-device-plugin: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // The OTLP exporters' channels run on the runtime; the providers come
    // before anything records.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (telemetry, levels) = {
        let _in_runtime = runtime.enter();
        logging::start(&args)?
    };
    let result = run_with(args, &runtime, levels, telemetry.prometheus());
    logging::stop(&telemetry);
    result
}

fn run_with(
    args: Args,
    runtime: &tokio::runtime::Runtime,
    levels: sriov_telemetry::logging::LevelSwitch,
    metrics: sriov_telemetry::PrometheusText,
) -> anyhow::Result<()> {
    if args.log_dir.is_some() || args.log_level.is_some() || args.verbosity.is_some() {
        tracing::info!("glog flags (--log-dir, --log-level, -v) are ignored; set RUST_LOG instead");
    }
    let strictness = if args.strict {
        Strictness::Strict
    } else {
        Strictness::Lenient
    };
    if let Some(args::Command::Explain { config: file, json }) = &args.command {
        return explain::run(&args, file.as_deref(), *json, strictness);
    }
    let config = Config::load_with(&args.config_file, &args.resource_prefix, strictness)
        .with_context(|| format!("invalid config {}", args.config_file.display()))?;
    for w in &config.warnings {
        tracing::warn!(field = %w.field, "{}", w.message);
    }
    for s in &config.skipped {
        tracing::error!(field = %s.field, "{} (--strict refuses the config instead)", s.message);
    }
    let dra = match &args.command {
        Some(args::Command::Dra(dra)) => Some(dra.clone()),
        _ => None,
    };
    // Only DRA mode writes to sysfs (driver binds at Prepare).
    let sysfs = fixture::sysfs(&args.sysfs_root, dra.is_some())?;
    let host = Host::new(HostPaths {
        sysfs: sysfs.clone(),
        proc_net_route: args.proc_net_route.clone(),
        dev_dir: args.dev_dir.clone(),
    })
    // Runs devlink/ddptool only when a selector uses ddpProfiles, as SRDP does.
    .with_extra_facts(Arc::new(DdpTools::new()));
    let settings = PoolSettings {
        default_prefix: args.resource_prefix.clone(),
        use_cdi: args.use_cdi,
        cdi_field: args.cdi_devices_field,
        devinfo: DeviceInfoDir::new(&args.devinfo_dir),
        cdi: CdiDir::new(&args.cdi_dir),
    };
    if let Some(dra) = dra {
        // The pools hand out nothing in DRA mode: Prepare writes the device-info files and
        // CDI specs. The pools' own device-info dir is a private one, so that a reload
        // dropping a resource cannot remove the files of claims prepared from it.
        let settings = PoolSettings {
            use_cdi: false,
            cdi_field: false,
            devinfo: DeviceInfoDir::new(dra.plugin_dir().join("pools-devinfo")),
            ..settings
        };
        runtime.spawn(logging::level_signals(levels));
        return runtime.block_on(dra::serve(
            args, dra, config, host, sysfs, settings, metrics,
        ));
    }
    if args.dry_run {
        let manager = PoolManager::new(&config, host, settings, Arc::new(NoLinkHealth));
        print!("{}", manager.explain().context("discovering devices")?);
        return Ok(());
    }
    runtime.spawn(logging::level_signals(levels));
    runtime.block_on(serve(args, config, host, settings, metrics))
}

async fn serve(
    args: Args,
    config: Config,
    host: Host,
    settings: PoolSettings,
    metrics: sriov_telemetry::PrometheusText,
) -> anyhow::Result<()> {
    let mut signals = reload::Signals::install();
    let rescan = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let links: Arc<dyn LinkHealth> = match args.link_health.as_str() {
        "netlink" => {
            let table = Arc::new(LinkTable::new());
            links::spawn(table.clone(), rescan.clone(), stop_rx.clone());
            if args.ignore_carrier {
                Arc::new(IgnoreCarrier(table))
            } else {
                table
            }
        }
        _ => Arc::new(NoLinkHealth),
    };
    links::spawn_uevents(rescan.clone(), stop_rx.clone());
    let pools = Arc::new(Reloader::new(config, host, settings, links));
    pools
        .clean_files()
        .context("cleaning device-info files and CDI specs")?;
    {
        let p = pools.clone();
        tokio::task::spawn_blocking(move || p.refresh())
            .await
            .context("discovery task")?
            .context("discovering devices")?;
    }
    for pool in pools.manager().pools() {
        let n = pool.devices().borrow().len();
        tracing::info!(
            resource = pool.resource_name(),
            devices = n,
            "resource pool ready"
        );
    }

    let mut tasks = Vec::new();
    let mut plugins = reload::Plugins::new(&args, stop_rx.clone());
    plugins.sync(&pools).await;
    tasks.extend(
        ops::start(
            args.metrics_listen,
            args.pprof_listen,
            metrics,
            plugins.readiness(),
            pools.clone(),
            stop_rx.clone(),
        )
        .await?,
    );
    tasks.push(reload::spawn_rescans(
        pools.clone(),
        rescan.clone(),
        Duration::from_secs(args.rescan_interval.max(1)),
        stop_rx.clone(),
        || {},
    ));

    let strictness = if args.strict {
        Strictness::Strict
    } else {
        Strictness::Lenient
    };
    let signal = reload::follow_config(
        &pools,
        &mut plugins,
        &mut signals,
        &args.config_file,
        strictness,
    )
    .await;
    tracing::info!(signal, "shutting down");
    let _ = stop_tx.send(true);
    plugins.stop_all().await;
    for t in tasks {
        let _ = t.await;
    }
    pools
        .clean_files()
        .context("cleaning device-info files and CDI specs")?;
    Ok(())
}

/// Says when the plugin becomes ready (every pool with devices registered with kubelet) and
/// when it stops being so.
async fn log_readiness(mut readiness: watch::Receiver<Readiness>, mut stop: watch::Receiver<bool>) {
    let mut starting = true;
    loop {
        let now = readiness.borrow_and_update().clone();
        // Not ready at start is expected: registrations take a moment.
        if now.is_ready() || starting {
            tracing::info!("{now}");
        } else {
            tracing::warn!("{now}");
        }
        starting &= !now.is_ready();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = readiness.changed() => if r.is_err() { return },
        }
    }
}
