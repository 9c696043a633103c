//! The daemons' loopback HTTP endpoints for operators: Prometheus metrics
//! with `/readyz` and `/livez` beside them, and a debug endpoint with pprof
//! CPU profiles, memory figures and the daemon's state as JSON.
//!
//! The crate knows nothing of the forwarder or the device plugin: it
//! serves what the caller's closures in [`Sources`] give it (the metrics
//! text, readiness, the state document), so each binary decides what those
//! say and redacts what must not leave (tokens) before handing it over.
//!
//! - [`metrics_server`]: `GET /metrics` (Prometheus text format 0.0.4),
//!   `/readyz` (200 with the closure's body, or 503 with its reason),
//!   `/livez` (200 while the runtime answers).
//! - [`debug_server`]: `GET /debug/pprof/profile?seconds=N` (a CPU profile
//!   in pprof's protobuf format, gzip-compressed, for `go tool pprof`; one
//!   at a time, a concurrent request gets 409), `/debug/pprof/heap` (the
//!   kernel's memory figures of the process: see [`heap`]), `/debug/state`
//!   (the state JSON) and the index `/debug/pprof/`. It listens on
//!   loopback only.
//!
//! Other paths answer 404, other methods 405. [`listen_addr`] and
//! [`loopback_addr`] read the addresses operators write (`:9090`, `9090`,
//! `localhost:6060`, `0.0.0.0:9090`).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), sriov_ops::Error> {
//! use std::sync::Arc;
//! use sriov_ops::{Sources, debug_server, loopback_addr, metrics_server, listen_addr};
//!
//! let sources = Sources::new(Arc::new(|| Ok("ready\n".to_owned())))
//!     .with_metrics(Arc::new(|| "sriov_up 1\n".to_owned()))
//!     .with_state(Arc::new(|| serde_json::json!({ "connections": [] })));
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let metrics = metrics_server(
//!     listen_addr("--metrics-listen", ":9090")?,
//!     sources.clone(),
//!     async { let _ = stopped.await; },
//! )
//! .await?;
//! let debug = debug_server(
//!     loopback_addr("NSM_PPROF_LISTEN_ON", "localhost:6060")?,
//!     sources,
//!     std::future::pending(),
//! )
//! .await?;
//! println!("metrics on {}, debug on {}", metrics.addr, debug.addr);
//! let _ = stop.send(());
//! let _ = metrics.task.await;
//! # Ok(())
//! # }
//! ```

// Every request is a stranger's input: a panic would take the endpoint
// down, so the panicking shortcuts are refused outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod addr;
mod debug;
pub mod heap;
mod http;
mod metrics;
pub mod profile;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinHandle;

pub use addr::{listen_addr, loopback_addr};

/// The content type of `/metrics`: Prometheus' text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// pprof's `perftools.profiles` messages, compiled from
/// `proto/pprof/profile.proto` (hand-written from google/pprof's field
/// facts), to read or write profiles.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/perftools.profiles.rs"));
}

/// Renders the Prometheus text exposition of the daemon's metrics.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;
/// Readiness: `Ok(body)` answers 200 with it, `Err(reason)` 503 with it.
pub type ReadyFn = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;
/// The daemon's state document (pools, connections, allocations), with
/// secrets such as tokens already redacted.
pub type StateFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What the endpoints serve. Closures run on tokio's blocking pool, so they
/// may take locks; one that panics answers 500.
#[derive(Clone)]
pub struct Sources {
    /// `/metrics`; `None` answers 404.
    pub metrics: Option<MetricsFn>,
    /// `/readyz`.
    pub ready: ReadyFn,
    /// `/debug/state`; `None` answers 404.
    pub state: Option<StateFn>,
}

impl Sources {
    /// Sources with readiness only.
    pub fn new(ready: ReadyFn) -> Self {
        Self {
            metrics: None,
            ready,
            state: None,
        }
    }

    /// Adds the metrics text.
    #[must_use]
    pub fn with_metrics(mut self, metrics: MetricsFn) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Adds the state document.
    #[must_use]
    pub fn with_state(mut self, state: StateFn) -> Self {
        self.state = Some(state);
        self
    }
}

/// A running endpoint.
#[derive(Debug)]
pub struct Server {
    /// The address it listens on (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// Ends once the shutdown future resolved and open connections closed.
    pub task: JoinHandle<()>,
}

/// Why an endpoint could not start, or a profile or memory page failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listen address that does not parse.
    #[error("{name}={value:?}: {rule}")]
    Address {
        /// The flag or variable it came from.
        name: String,
        /// What it said.
        value: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// A non-loopback address for the debug endpoint.
    #[error(
        "{name}: {addr} is not a loopback address; the debug endpoint serves CPU profiles \
         and the daemon's state to whoever connects, so it listens on loopback only \
         (localhost, 127.0.0.1 or [::1])"
    )]
    NotLoopback {
        /// The variable (or caller) that asked for it.
        name: String,
        /// The address refused.
        addr: SocketAddr,
    },
    /// Binding the listener failed.
    #[error("{what} endpoint: binding {addr}: {cause}")]
    Bind {
        /// `metrics` or `debug`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A CPU profile is already being taken in this process.
    #[error("a CPU profile is already running; try again when it is done")]
    ProfilerBusy,
    /// The profiler failed to start or to report.
    #[error("CPU profiler: {cause}")]
    Profiler {
        /// pprof-rs' error.
        cause: pprof::Error,
    },
    /// The profile's requester went away before it was done.
    #[error("CPU profile cancelled: its requester went away")]
    ProfileCancelled,
    /// The profiling task panicked or was cancelled by the runtime.
    #[error("CPU profile task: {cause}")]
    ProfileTask {
        /// tokio's report of it.
        cause: tokio::task::JoinError,
    },
    /// gzip of the profile failed.
    #[error("compressing the CPU profile: {cause}")]
    Compress {
        /// flate2's error.
        cause: std::io::Error,
    },
    /// A `/proc` file could not be read.
    #[error("reading {}: {cause}", path.display())]
    Proc {
        /// The file.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
}

/// Serves `/metrics`, `/readyz` and `/livez` on `addr` until `shutdown`
/// resolves. `addr` may be any address (see [`listen_addr`]); port 0 picks
/// one, reported in [`Server::addr`].
pub async fn metrics_server(
    addr: SocketAddr,
    sources: Sources,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Server, Error> {
    http::bind(
        "metrics",
        addr,
        metrics::MetricsRoutes { sources },
        shutdown,
    )
    .await
}

/// Serves the debug pages on `addr` until `shutdown` resolves; refuses a
/// non-loopback `addr` with [`Error::NotLoopback`]. A profile in progress
/// at shutdown is dropped.
pub async fn debug_server(
    addr: SocketAddr,
    sources: Sources,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Server, Error> {
    if !addr.ip().is_loopback() {
        return Err(Error::NotLoopback {
            name: "debug_server".to_owned(),
            addr,
        });
    }
    http::bind("debug", addr, debug::DebugRoutes { sources }, shutdown).await
}
