//! Telemetry for both daemons (issue #17): the log subscriber (level,
//! text or JSON, SIGUSR1/SIGUSR2 level switch), the OpenTelemetry
//! providers (traces and metrics pushed over OTLP/gRPC, metrics pulled as
//! Prometheus text), and W3C trace context over gRPC so our spans join
//! the NSM manager's trace. With the `testing` feature, a fake OTLP
//! collector.
//!
//! Library crates never depend on this crate for recording: they record
//! metrics through `opentelemetry::global::meter(METER_NAME)` (fetched at
//! first use, after the binary installed the provider) and spans through
//! `tracing`. The binaries set it up first thing:
//!
//! ```no_run
//! use sriov_telemetry::logging::{self, LogConfig, LogFormat};
//! use sriov_telemetry::{Telemetry, TelemetryConfig};
//!
//! # async fn run() -> Result<(), sriov_telemetry::Error> {
//! let telemetry = Telemetry::init(TelemetryConfig {
//!     service_name: "sriov-forwarder".into(),
//!     otlp_endpoint: Some("otel-collector.observability:4317".into()),
//!     ..TelemetryConfig::default()
//! })?;
//! let levels = logging::init(LogConfig {
//!     level: "info".into(),
//!     format: LogFormat::Json,
//!     traces: telemetry.tracer_provider(),
//! })?;
//! let metrics = telemetry.prometheus(); // for the /metrics endpoint
//! // ... serve, with `.layer(sriov_telemetry::grpc::ServerTraceLayer)` on tonic servers;
//! // SIGUSR1: levels.set_trace(), SIGUSR2: levels.restore() ...
//! # let _ = (levels, metrics);
//! // At exit, outside async code, while the runtime still runs:
//! telemetry.shutdown()?;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "testing")]
pub mod collector;
mod error;
pub mod grpc;
pub mod logging;
mod otel;

pub use error::Error;
pub use otel::{
    CARDINALITY_LIMIT, DEFAULT_METRICS_INTERVAL, METER_NAME, PER_PF_CARDINALITY_LIMIT,
    PER_PF_INSTRUMENTS, PrometheusText, Telemetry, TelemetryConfig, endpoint_url,
};
