//! The daemon's operator endpoints (issue #17), served by `sriov-ops`:
//! Prometheus `/metrics` with `/readyz` and `/livez` on `--metrics-listen`
//! or `NSM_METRICS_LISTEN` (off unless given), and, with
//! `NSM_PPROF_ENABLED=true`, CPU profiles, memory figures and
//! `/debug/state` on `NSM_PPROF_LISTEN_ON` (loopback only).
//!
//! Both are bound before the forwarder starts, so a bad or busy address
//! stops the start before any VF is touched and `/readyz` answers
//! "starting" while VFs are created; they stop after the forwarder's
//! shutdown, so `/readyz` answers "shutting down" to the end.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;
use futures::FutureExt;
use sriov_config::EnvConfig;
use sriov_forwarder::Running;
use sriov_ops::{Server, Sources};
use sriov_telemetry::PrometheusText;
use tokio::sync::oneshot;

/// Where the endpoints listen; `None`: not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addrs {
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) debug: Option<SocketAddr>,
}

impl Addrs {
    /// From the environment, `flag` (`--metrics-listen`, empty: off)
    /// overriding `NSM_METRICS_LISTEN`. Every bad address is reported,
    /// each naming where it came from.
    pub(crate) fn new(env: &EnvConfig, flag: Option<&str>) -> Result<Self> {
        let mut problems = Vec::new();
        let metrics = match flag {
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(("--metrics-listen", v.trim())),
            None => env
                .metrics_listen
                .as_deref()
                .map(|v| ("NSM_METRICS_LISTEN", v)),
        }
        .and_then(|(name, value)| {
            sriov_ops::listen_addr(name, value)
                .map_err(|e| problems.push(e.to_string()))
                .ok()
        });
        let debug = env
            .pprof_enabled
            .then(|| sriov_ops::loopback_addr("NSM_PPROF_LISTEN_ON", env.pprof_listen_on.trim()))
            .and_then(|r| r.map_err(|e| problems.push(e.to_string())).ok());
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("; "));
        }
        Ok(Self { metrics, debug })
    }
}

/// What the endpoints read the forwarder from.
enum Phase {
    Starting,
    Running(Box<Running>),
    Stopping,
}

type Shared = Arc<Mutex<Phase>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Phase> {
    // A panic while reading the phase leaves it intact: use it anyway.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running endpoints.
pub(crate) struct Endpoints {
    shared: Shared,
    stop: oneshot::Sender<()>,
    servers: Vec<Server>,
}

impl Endpoints {
    /// Binds what `addrs` asks for; nothing is served when it asks for none.
    pub(crate) async fn start(addrs: Addrs, metrics: PrometheusText) -> Result<Self> {
        let shared: Shared = Arc::new(Mutex::new(Phase::Starting));
        let (stop, stopped) = oneshot::channel::<()>();
        // One signal for both servers; a dropped sender stops them too.
        let stopped = stopped.shared();
        let sources = sources(&shared, metrics);
        let mut servers = Vec::new();
        if let Some(addr) = addrs.metrics {
            let s = sriov_ops::metrics_server(addr, sources.clone(), wait(stopped.clone())).await?;
            tracing::info!(addr = %s.addr, "metrics: /metrics /readyz /livez");
            servers.push(s);
        }
        if let Some(addr) = addrs.debug {
            let s = sriov_ops::debug_server(addr, sources, wait(stopped)).await?;
            tracing::info!(addr = %s.addr, "debug: /debug/pprof/profile /debug/pprof/heap /debug/state");
            servers.push(s);
        }
        Ok(Self {
            shared,
            stop,
            servers,
        })
    }

    /// The forwarder has started: the endpoints follow it from now on.
    pub(crate) fn started(&self, running: Running) {
        *lock(&self.shared) = Phase::Running(Box::new(running));
    }

    /// The forwarder, for its shutdown; the endpoints say it is stopping.
    /// Waits (on this thread) for a `/debug/state` being read to finish:
    /// reading one takes a moment, and the forwarder must not go from
    /// under it.
    pub(crate) fn stopping(&self) -> Option<Running> {
        match std::mem::replace(&mut *lock(&self.shared), Phase::Stopping) {
            Phase::Running(r) => Some(*r),
            Phase::Starting | Phase::Stopping => None,
        }
    }

    /// Stops the servers and waits for them.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        for s in self.servers {
            let _ = s.task.await;
        }
    }
}

/// A shutdown signal several servers can wait on.
type Stopped = futures::future::Shared<oneshot::Receiver<()>>;

async fn wait(stopped: Stopped) {
    let _ = stopped.await;
}

fn sources(shared: &Shared, metrics: PrometheusText) -> Sources {
    let phase = shared.clone();
    let ready = Arc::new(move || match &*lock(&phase) {
        Phase::Running(r) => {
            let now = r.readiness().borrow().clone();
            if now.is_ready() {
                Ok(now.to_string())
            } else {
                Err(now.to_string())
            }
        }
        Phase::Starting => Err("not ready: starting".to_owned()),
        Phase::Stopping => Err("not ready: shutting down".to_owned()),
    });
    let phase = shared.clone();
    let state = Arc::new(move || match &*lock(&phase) {
        // Tokens are redacted by the forwarder's own view.
        Phase::Running(r) => r.debug_state(),
        Phase::Starting => serde_json::json!({ "readiness": "not ready: starting" }),
        Phase::Stopping => serde_json::json!({ "readiness": "not ready: shutting down" }),
    });
    Sources::new(ready)
        .with_metrics(Arc::new(move || metrics.text()))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> EnvConfig {
        EnvConfig::from_vars(vars.iter().copied()).unwrap().config
    }

    #[test]
    fn both_endpoints_are_off_by_default() {
        let addrs = Addrs::new(&env(&[]), None).unwrap();
        assert_eq!(addrs.metrics, None);
        assert_eq!(addrs.debug, None);
    }

    #[test]
    fn the_flag_overrides_the_variable_and_empty_turns_it_off() {
        let e = env(&[("NSM_METRICS_LISTEN", "127.0.0.1:9464")]);
        let at = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert_eq!(Addrs::new(&e, None).unwrap().metrics, at("127.0.0.1:9464"));
        assert_eq!(
            Addrs::new(&e, Some("0.0.0.0:9000")).unwrap().metrics,
            at("0.0.0.0:9000")
        );
        assert_eq!(Addrs::new(&e, Some("")).unwrap().metrics, None);
        assert_eq!(
            Addrs::new(&env(&[]), Some(":9464")).unwrap().metrics,
            at("127.0.0.1:9464")
        );
    }

    #[test]
    fn pprof_listens_on_loopback_only_and_bad_addresses_name_their_source() {
        let on = env(&[("NSM_PPROF_ENABLED", "true")]);
        assert_eq!(
            Addrs::new(&on, None).unwrap().debug,
            Some("127.0.0.1:6060".parse().unwrap())
        );
        let wide = env(&[
            ("NSM_PPROF_ENABLED", "true"),
            ("NSM_PPROF_LISTEN_ON", "0.0.0.0:6060"),
            ("NSM_METRICS_LISTEN", "metrics.example:9464"),
        ]);
        let err = Addrs::new(&wide, None).unwrap_err().to_string();
        assert!(err.contains("NSM_PPROF_LISTEN_ON"), "{err}");
        assert!(err.contains("loopback"), "{err}");
        assert!(err.contains("NSM_METRICS_LISTEN"), "{err}");
        let err = Addrs::new(&wide, Some("nope")).unwrap_err().to_string();
        assert!(err.contains("--metrics-listen"), "{err}");
        // Off, its address is not looked at.
        let off = env(&[("NSM_PPROF_LISTEN_ON", "0.0.0.0:6060")]);
        assert_eq!(Addrs::new(&off, None).unwrap().debug, None);
    }

    #[tokio::test]
    async fn readyz_follows_the_phase_and_everything_stops() {
        let telemetry = sriov_telemetry::Telemetry::init(Default::default()).unwrap();
        let addrs = Addrs {
            metrics: Some("127.0.0.1:0".parse().unwrap()),
            debug: Some("127.0.0.1:0".parse().unwrap()),
        };
        let endpoints = Endpoints::start(addrs, telemetry.prometheus())
            .await
            .unwrap();
        assert_eq!(endpoints.servers.len(), 2);
        let sources = sources(&endpoints.shared, telemetry.prometheus());
        assert_eq!((sources.ready)(), Err("not ready: starting".to_owned()));
        assert!(endpoints.stopping().is_none());
        assert_eq!(
            (sources.ready)(),
            Err("not ready: shutting down".to_owned())
        );
        let state = sources.state.as_ref().unwrap()();
        assert_eq!(state["readiness"], "not ready: shutting down");
        let addr = endpoints.servers[0].addr;
        endpoints.stop().await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still listens"
        );
    }
}
