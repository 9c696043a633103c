//! The daemon: starts the forwarder library (`sriov-forwarder`) with its
//! operator endpoints (`ops.rs`), turns SIGUSR1/SIGUSR2 into the trace log
//! level and back, reloads the config file and rescans sysfs on SIGHUP, and
//! shuts it down on SIGTERM/SIGINT.

use crate::ops::{Addrs, Endpoints};
use anyhow::Result;
use sriov_config::EnvConfig;
use sriov_forwarder::Forwarder;
use sriov_pci::Sysfs;
use sriov_telemetry::PrometheusText;
use sriov_telemetry::logging::LevelSwitch;
use tokio::signal::unix::{SignalKind, signal};

pub(crate) async fn run(
    env: EnvConfig,
    sysfs: Sysfs,
    levels: LevelSwitch,
    endpoints: Addrs,
    metrics: PrometheusText,
    reset_state: bool,
    vfio_at_allocate: bool,
) -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut hup = signal(SignalKind::hangup())?;
    let endpoints = Endpoints::start(endpoints, metrics).await?;
    let started = Forwarder::builder(env)
        .sysfs(sysfs)
        .reset_state(reset_state)
        .vfio_at_allocate(vfio_at_allocate)
        .netlink_thread(true)
        .start()
        .await;
    // The endpoints hold the forwarder from here on (for /debug/state and
    // its shutdown); SIGHUP reaches it through a handle of its own.
    let reloads = match started {
        Ok(running) => {
            let reloads = running.reload_handle();
            endpoints.started(running);
            tokio::spawn(crate::memory::keep_trimmed());
            reloads
        }
        Err(e) => {
            endpoints.stop().await;
            return Err(e.into());
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => levels.set_trace(),
            _ = usr2.recv() => levels.restore(),
            // Logged and counted by the library; a refused config keeps the running one.
            _ = hup.recv() => { let _ = reloads.reload().await; }
        }
    }
    if let Some(running) = endpoints.stopping() {
        running.shutdown().await;
    }
    endpoints.stop().await;
    Ok(())
}
