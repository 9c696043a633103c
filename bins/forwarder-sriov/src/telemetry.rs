//! Telemetry of the daemon, from the environment as the Go forwarder reads
//! it: `TELEMETRY=true` pushes traces and metrics over OTLP/gRPC to
//! `NSM_OPEN_TELEMETRY_ENDPOINT` every `NSM_METRICS_EXPORT_INTERVAL`, with
//! `NSM_NAME` as the service name; the Prometheus text is always kept.

use anyhow::{Context, Result};
use sriov_config::EnvConfig;
use sriov_telemetry::logging::{self, LevelSwitch, LogConfig, LogFormat};
use sriov_telemetry::{Telemetry, TelemetryConfig};

/// What the environment asks of OpenTelemetry.
pub(crate) fn config(env: &EnvConfig) -> TelemetryConfig {
    TelemetryConfig {
        service_name: env.name.clone(),
        otlp_endpoint: env
            .telemetry
            .then(|| env.open_telemetry_endpoint.clone())
            .flatten(),
        metrics_interval: env.metrics_export_interval,
    }
}

/// Installs the providers, then the log subscriber bridged to them. Call it
/// inside the runtime, before anything records a metric.
pub(crate) fn start(
    env: &EnvConfig,
    format: Option<LogFormat>,
) -> Result<(Telemetry, LevelSwitch)> {
    let telemetry = Telemetry::init(config(env)).context("starting OpenTelemetry")?;
    let format = match format {
        Some(f) => f,
        None => env.log_format.parse()?,
    };
    let levels = logging::init(LogConfig {
        level: env.log_level.as_filter().to_string(),
        format,
        traces: telemetry.tracer_provider(),
    })?;
    telemetry.record_build_info("forwarder-sriov", crate::cli::version());
    if env.telemetry && telemetry.otlp_endpoint().is_none() {
        tracing::warn!(
            "TELEMETRY=true but NSM_OPEN_TELEMETRY_ENDPOINT is empty: nothing is pushed"
        );
    }
    if let Some(endpoint) = telemetry.otlp_endpoint() {
        tracing::info!(endpoint, "pushing traces and metrics over OTLP");
    }
    Ok((telemetry, levels))
}

/// Flushes what is batched; called once the daemon stopped, outside async
/// code, while the runtime still runs.
pub(crate) fn stop(telemetry: &Telemetry) {
    if let Err(e) = telemetry.shutdown() {
        tracing::warn!(error = %e, "telemetry not flushed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_is_on_only_with_telemetry_true() {
        let off = EnvConfig::from_vars([("NSM_NAME", "fwd-a")])
            .unwrap()
            .config;
        let cfg = config(&off);
        assert_eq!(cfg.otlp_endpoint, None);
        assert_eq!(cfg.service_name, "fwd-a");
        let on = EnvConfig::from_vars([
            ("TELEMETRY", "true"),
            ("NSM_OPEN_TELEMETRY_ENDPOINT", "collector:4317"),
            ("NSM_METRICS_EXPORT_INTERVAL", "3s"),
        ])
        .unwrap()
        .config;
        let cfg = config(&on);
        assert_eq!(cfg.otlp_endpoint.as_deref(), Some("collector:4317"));
        assert_eq!(cfg.metrics_interval, std::time::Duration::from_secs(3));
    }
}
