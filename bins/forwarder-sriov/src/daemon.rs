//! The daemon: starts the forwarder library (`sriov-forwarder`), turns
//! SIGUSR1/SIGUSR2 into the trace log level and back, reloads the config
//! file and rescans sysfs on SIGHUP, and shuts it down on SIGTERM/SIGINT.

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
    // For the loopback /metrics endpoint, once it is served.
    _metrics: PrometheusText,
    reset_state: bool,
    vfio_at_allocate: bool,
) -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut hup = signal(SignalKind::hangup())?;
    let running = Forwarder::builder(env)
        .sysfs(sysfs)
        .reset_state(reset_state)
        .vfio_at_allocate(vfio_at_allocate)
        .start()
        .await?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => levels.set_trace(),
            _ = usr2.recv() => levels.restore(),
            // Logged and counted by the library; a refused config keeps the running one.
            _ = hup.recv() => { let _ = running.reload().await; }
        }
    }
    running.shutdown().await;
    Ok(())
}
