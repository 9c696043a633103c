//! The plugin's operator endpoints (issue #17), served by `sriov-ops`:
//! Prometheus `/metrics` with `/readyz` and `/livez` on `--metrics-listen`,
//! and CPU profiles, memory figures and `/debug/state` (the pools) on
//! `--pprof-listen`, loopback only. Both are off unless asked for.
//!
//! Started once the pools are loaded and their device plugins spawned, so
//! `/readyz` follows the kubelet registrations from the first scrape.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use sriov_ops::Sources;
use sriov_selector_pools::{Readiness, Reloader};
use sriov_telemetry::PrometheusText;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// `--metrics-listen`: any address (`:port` and a bare port mean loopback).
pub(crate) fn metrics_addr(value: &str) -> Result<SocketAddr, String> {
    sriov_ops::listen_addr("--metrics-listen", value).map_err(|e| e.to_string())
}

/// `--pprof-listen`: loopback only, since it hands out profiles and state.
pub(crate) fn pprof_addr(value: &str) -> Result<SocketAddr, String> {
    sriov_ops::loopback_addr("--pprof-listen", value).map_err(|e| e.to_string())
}

/// Binds what is asked for; the servers end once `stop` turns true.
pub(crate) async fn start(
    metrics_listen: Option<SocketAddr>,
    pprof_listen: Option<SocketAddr>,
    metrics: PrometheusText,
    readiness: watch::Receiver<Readiness>,
    pools: Arc<Reloader>,
    stop: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>> {
    let ready = Arc::new(move || {
        let now = readiness.borrow().clone();
        if now.is_ready() {
            Ok(now.to_string())
        } else {
            Err(now.to_string())
        }
    });
    let sources = Sources::new(ready)
        .with_metrics(Arc::new(move || metrics.text()))
        .with_state(Arc::new(move || pools.manager().debug_state()));
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let mut tasks = Vec::new();
    if let Some(addr) = metrics_listen {
        let s = sriov_ops::metrics_server(addr, sources.clone(), stopped(stop.clone())).await?;
        tracing::info!(addr = %s.addr, "metrics: /metrics /readyz /livez");
        tasks.push(s.task);
    }
    if let Some(addr) = pprof_listen {
        let s = sriov_ops::debug_server(addr, sources, stopped(stop)).await?;
        tracing::info!(addr = %s.addr, "debug: /debug/pprof/profile /debug/pprof/heap /debug/state");
        tasks.push(s.task);
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_their_flag_and_pprof_stays_on_loopback() {
        assert_eq!(metrics_addr(":9465").unwrap().to_string(), "127.0.0.1:9465");
        assert_eq!(
            metrics_addr("0.0.0.0:9465").unwrap().to_string(),
            "0.0.0.0:9465"
        );
        assert!(
            metrics_addr("x:1")
                .unwrap_err()
                .contains("--metrics-listen")
        );
        assert_eq!(
            pprof_addr("localhost:6061").unwrap().to_string(),
            "127.0.0.1:6061"
        );
        let err = pprof_addr("0.0.0.0:6061").unwrap_err();
        assert!(
            err.contains("--pprof-listen") && err.contains("loopback"),
            "{err}"
        );
    }
}
