//! Logging and OpenTelemetry of the plugin: the level from RUST_LOG
//! (SRDP's glog flags are accepted and ignored), SIGUSR1/SIGUSR2 to trace and
//! back as in the forwarder, text or JSON lines, and OTLP push when
//! `--otlp-endpoint` (or OTEL_EXPORTER_OTLP_ENDPOINT) names a collector.

use anyhow::{Context, Result};
use sriov_telemetry::logging::{self, LevelSwitch, LogConfig};
use sriov_telemetry::{Telemetry, TelemetryConfig};
use tokio::signal::unix::{SignalKind, signal};

use crate::args::Args;

/// `service.name` of the plugin's spans and metrics.
const SERVICE: &str = "sriov-device-plugin";

/// The telemetry `args` ask for: OTLP only when serving (`explain` and
/// `--dry-run` print and exit).
pub(crate) fn config(args: &Args) -> TelemetryConfig {
    let serving = args.command.is_none() && !args.dry_run;
    TelemetryConfig {
        service_name: SERVICE.into(),
        otlp_endpoint: args.otlp_endpoint.clone().filter(|_| serving),
        ..TelemetryConfig::default()
    }
}

/// Installs the providers, then the log subscriber bridged to them. Call it
/// inside the runtime.
pub(crate) fn start(args: &Args) -> Result<(Telemetry, LevelSwitch)> {
    let telemetry = Telemetry::init(config(args)).context("starting OpenTelemetry")?;
    let level = std::env::var("RUST_LOG")
        .ok()
        .filter(|l| !l.trim().is_empty())
        .unwrap_or_else(|| "info".into());
    let levels = logging::init(LogConfig {
        level,
        format: args.log_format,
        traces: telemetry.tracer_provider(),
    })?;
    telemetry.record_build_info(SERVICE, crate::args::version());
    if let Some(endpoint) = telemetry.otlp_endpoint() {
        tracing::info!(endpoint, "pushing traces and metrics over OTLP");
    }
    Ok((telemetry, levels))
}

/// SIGUSR1: log everything; SIGUSR2: back to the level given at start.
pub(crate) async fn level_signals(levels: LevelSwitch) {
    let (mut usr1, mut usr2) = match (
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("cannot watch SIGUSR1/SIGUSR2: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            Some(()) = usr1.recv() => levels.set_trace(),
            Some(()) = usr2.recv() => levels.restore(),
            else => return,
        }
    }
}

/// Flushes what is batched; outside async code, the runtime still running.
pub(crate) fn stop(telemetry: &Telemetry) {
    if let Err(e) = telemetry.shutdown() {
        tracing::warn!(error = %e, "telemetry not flushed");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("sriov-device-plugin").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn otlp_only_when_serving() {
        let serving = parse(&["--otlp-endpoint", "collector:4317", "--log-format", "json"]);
        assert_eq!(serving.log_format, logging::LogFormat::Json);
        assert_eq!(
            config(&serving).otlp_endpoint.as_deref(),
            Some("collector:4317")
        );
        let dry = parse(&["--otlp-endpoint", "collector:4317", "--dry-run"]);
        assert_eq!(config(&dry).otlp_endpoint, None);
        let explain = parse(&["--otlp-endpoint", "collector:4317", "explain"]);
        assert_eq!(config(&explain).otlp_endpoint, None);
        assert_eq!(parse(&[]).log_format, logging::LogFormat::Text);
        assert!(Args::try_parse_from(["sriov-device-plugin", "--log-format", "xml"]).is_err());
    }
}
