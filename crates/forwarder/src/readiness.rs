//! Readiness: the forwarder serves usefully only while the registry holds
//! its NSE and kubelet knows every resource's device plugin. Followed here
//! as a value (for `/readyz`) and as gRPC health (for kubelet's probe).

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::FutureExt;

use sriov_api::nsm::networkservice::network_service_server::NetworkServiceServer;
use sriov_chain::server;
use sriov_nsm::RegistrationState;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::metrics;

/// Whether the forwarder is ready, and if not, what it waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// What is missing, one line each; empty when ready.
    pub missing: Vec<String>,
}

impl Readiness {
    /// Ready: nothing is missing.
    pub fn is_ready(&self) -> bool {
        self.missing.is_empty()
    }

    fn waiting(why: impl Into<String>) -> Self {
        Self {
            missing: vec![why.into()],
        }
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ready() {
            return f.write_str("ready");
        }
        write!(f, "not ready: {}", self.missing.join("; "))
    }
}

/// A device plugin's resource and whether kubelet knows it now.
pub(crate) type Plugin = (String, watch::Receiver<bool>);

/// What is missing now; `Some(expires)` also when the NSE's entry will
/// lapse unrefreshed, to look again then.
fn assess(
    nse: &RegistrationState,
    plugins: &[Plugin],
    now: SystemTime,
) -> (Readiness, Option<SystemTime>) {
    let mut missing = Vec::new();
    let mut recheck = None;
    match nse {
        RegistrationState::Registered { expires, .. } if *expires > now => {
            recheck = Some(*expires);
        }
        RegistrationState::Registered { .. } => {
            missing.push("the NSE's registration expired unrefreshed".to_string());
        }
        RegistrationState::Pending => missing.push("the NSE is not registered yet".to_string()),
        RegistrationState::Retrying { attempts, error } => missing.push(format!(
            "the NSE is not registered ({attempts} attempts failed, last: {error})"
        )),
        RegistrationState::Stopped => missing.push("the NSE registration stopped".to_string()),
    }
    for (resource, registered) in plugins {
        if !*registered.borrow() {
            missing.push(format!("kubelet has not registered {resource}"));
        }
    }
    (Readiness { missing }, recheck)
}

/// Follows the registration and the plugins (a set that changes as a
/// reload adds and removes resources) until `stop`: publishes the
/// readiness, and turns NetworkService's gRPC health SERVING only while
/// ready. Logs the start-up time at the first readiness.
pub(crate) async fn follow(
    mut nse: watch::Receiver<RegistrationState>,
    mut plugin_set: watch::Receiver<Vec<Plugin>>,
    health: HealthReporter,
    tx: Arc<watch::Sender<Readiness>>,
    started: Instant,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut was_ready = false;
    let mut ever_ready = false;
    let mut last_nse = RegistrationState::Pending;
    loop {
        let state = nse.borrow_and_update().clone();
        metrics::registry_change(&last_nse, &state);
        last_nse = state.clone();
        let mut plugins = plugin_set.borrow_and_update().clone();
        for (_, p) in &mut plugins {
            p.borrow_and_update();
        }
        let (readiness, recheck) = assess(&state, &plugins, SystemTime::now());
        let ready = readiness.is_ready();
        if ready != was_ready {
            set_health(&health, ready).await;
            if ready && !ever_ready {
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "ready: NSE and device plugins registered"
                );
            } else if ready {
                tracing::info!("ready again: NSE and device plugins registered");
            } else {
                tracing::warn!("{readiness}; gRPC health NOT_SERVING");
            }
            ever_ready |= ready;
            was_ready = ready;
        }
        tx.send_if_modified(|r| {
            let changed = *r != readiness;
            *r = readiness;
            changed
        });
        let lapse = recheck.map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        // A plugin a reload stopped ends its channel: waited for no more
        // (the set without it follows).
        let plugin_changed = futures::future::select_all(
            plugins
                .iter_mut()
                .map(|(_, p)| {
                    async move {
                        if p.changed().await.is_err() {
                            pending_change().await
                        } else {
                            Ok(())
                        }
                    }
                    .boxed()
                })
                .chain(std::iter::once(pending_change().boxed())),
        );
        tokio::select! {
            () = &mut stop => return,
            r = nse.changed() => if r.is_err() { return },
            (r, _, _) = plugin_changed => if r.is_err() { return },
            r = plugin_set.changed() => if r.is_err() { return },
            () = sleep_until_opt(lapse) => {}
        }
    }
}

/// Never resolves: keeps `select_all` from being given no futures.
async fn pending_change() -> Result<(), watch::error::RecvError> {
    std::future::pending().await
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// gRPC health of NetworkService, which the readiness and startup probes
/// ask for. The server's overall health ("") is left SERVING: the liveness
/// probe asks for it, and a restart would mend neither a registry nor a
/// kubelet that is away.
pub(crate) async fn set_health(health: &HealthReporter, ready: bool) {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health
        .set_service_status(
            <NetworkServiceServer<server::NetworkServiceServer> as NamedService>::NAME,
            status,
        )
        .await;
}

/// The readiness before anything was registered.
pub(crate) fn starting() -> Readiness {
    Readiness::waiting("the NSE is not registered yet")
}

/// The readiness during shutdown.
pub(crate) fn stopping() -> Readiness {
    Readiness::waiting("shutting down")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_missing_part_is_said() {
        let now = SystemTime::now();
        let (_up, up) = watch::channel(true);
        let (_down, down) = watch::channel(false);
        let plugins = vec![("a/up".to_string(), up), ("a/down".to_string(), down)];
        let registered = RegistrationState::Registered {
            expires: now + Duration::from_secs(60),
            registrations: 1,
        };
        let (r, recheck) = assess(&registered, &plugins, now);
        assert_eq!(
            r.to_string(),
            "not ready: kubelet has not registered a/down"
        );
        assert_eq!(recheck, Some(now + Duration::from_secs(60)));

        let lapsed = RegistrationState::Registered {
            expires: now - Duration::from_secs(1),
            registrations: 1,
        };
        let (r, _) = assess(&lapsed, &plugins[..1], now);
        assert_eq!(
            r.to_string(),
            "not ready: the NSE's registration expired unrefreshed"
        );
        let (r, _) = assess(&registered, &plugins[..1], now);
        assert!(r.is_ready());
        assert_eq!(r.to_string(), "ready");
    }
}
