//! The OpenTelemetry providers: traces and metrics over OTLP/gRPC to a
//! collector, as the Go SDK's `pkg/tools/opentelemetry` does, and metrics
//! pulled as Prometheus text.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::global;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;
use opentelemetry_sdk::metrics::{Instrument, SdkMeterProvider, Stream};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use prometheus::{Encoder as _, TextEncoder};

use crate::Error;

/// The meter every library crate records through
/// (`opentelemetry::global::meter(METER_NAME)`).
pub const METER_NAME: &str = "sriov";

/// `NSM_METRICS_EXPORT_INTERVAL`'s default in cmd-forwarder-sriov.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(10);

/// Series kept per instrument, per reader; any beyond go to the SDK's
/// overflow series. The SDK presizes every instrument's map for its limit,
/// once per reader, whether or not the instrument records: at its default
/// of 2000 that was 3.0 MiB of an idle forwarder's 7.7 MiB heap, and at 512
/// for all 18 instruments still 0.7 MiB (issue #21 goal 6). So only the
/// instruments labelled by PF ([`PER_PF_INSTRUMENTS`]) get
/// [`PER_PF_CARDINALITY_LIMIT`]: 64 PFs in two resources, by four states.
/// The others are labelled by resource, element, op, mechanism, result,
/// health and cause, and get [`CARDINALITY_LIMIT`].
pub const CARDINALITY_LIMIT: usize = 128;

/// The limit of [`PER_PF_INSTRUMENTS`].
pub const PER_PF_CARDINALITY_LIMIT: usize = 512;

/// The instruments with a `pf` attribute (`sriov-token-pool`'s
/// `metrics::POOL_VFS`; `sriov-forwarder`'s tests hold the two together).
pub const PER_PF_INSTRUMENTS: &[&str] = &["sriov.pool.vfs"];

/// What [`Telemetry::init`] sets up.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name` of every span and metric (NSM_NAME for the forwarder).
    pub service_name: String,
    /// The OTLP/gRPC collector (`host:port` as NSM passes it, or a URL);
    /// `None`: nothing is pushed, metrics are only pulled.
    pub otlp_endpoint: Option<String>,
    /// How often metrics are pushed.
    pub metrics_interval: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: METER_NAME.to_string(),
            otlp_endpoint: None,
            metrics_interval: DEFAULT_METRICS_INTERVAL,
        }
    }
}

/// The installed providers. Keep it for the life of the process and call
/// [`Telemetry::shutdown`] last, so what is batched is flushed.
#[derive(Debug, Clone)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    metrics: SdkMeterProvider,
    prometheus: PrometheusText,
    endpoint: Option<String>,
}

/// The current metrics as Prometheus text (exposition format 0.0.4), for
/// a `/metrics` endpoint. Cheap to clone.
#[derive(Clone)]
pub struct PrometheusText {
    registry: Arc<prometheus::Registry>,
}

impl std::fmt::Debug for PrometheusText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusText").finish_non_exhaustive()
    }
}

impl PrometheusText {
    /// The `Content-Type` of [`PrometheusText::text`].
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// Every metric recorded so far.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics as Prometheus text");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// `host:port` (how NSM passes the collector) as the URL tonic dials.
pub fn endpoint_url(endpoint: &str) -> Result<String, Error> {
    let endpoint = endpoint.trim();
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    url.parse::<http::Uri>()
        .map_err(|cause| Error::Endpoint {
            endpoint: endpoint.to_string(),
            cause,
        })
        .map(|_| url)
}

impl Telemetry {
    /// Installs the global meter provider (Prometheus pull always, OTLP push
    /// with an endpoint), the tracer provider (with an endpoint; every span
    /// sampled, as NSM's Go SDK does) and the W3C trace-context propagator.
    /// Library crates that fetched `global::meter` before this record into a
    /// no-op, so call it before starting anything.
    ///
    /// With an endpoint, call it inside a tokio runtime that outlives the
    /// returned value: the gRPC exporters' channels run on it.
    pub fn init(config: TelemetryConfig) -> Result<Self, Error> {
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let registry = Arc::new(prometheus::Registry::new());
        let pull = opentelemetry_prometheus::exporter()
            .with_registry((*registry).clone())
            .build()
            .map_err(|cause| Error::Prometheus { cause })?;
        let mut meters = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_view(|i: &Instrument| {
                let limit = if PER_PF_INSTRUMENTS.contains(&i.name()) {
                    PER_PF_CARDINALITY_LIMIT
                } else {
                    CARDINALITY_LIMIT
                };
                Stream::builder().with_cardinality_limit(limit).build().ok()
            })
            .with_reader(pull);
        let mut traces = None;
        let endpoint = match &config.otlp_endpoint {
            Some(e) if !e.trim().is_empty() => Some(endpoint_url(e)?),
            _ => None,
        };
        if let Some(url) = &endpoint {
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(url.clone())
                .build()
                .map_err(|cause| Error::Exporter {
                    signal: "traces",
                    endpoint: url.clone(),
                    cause,
                })?;
            traces = Some(
                SdkTracerProvider::builder()
                    .with_sampler(Sampler::AlwaysOn)
                    .with_resource(resource)
                    // A task on our runtime, not a thread of its own; spans go
                    // out every OTEL_BSP_SCHEDULE_DELAY (5 s; the first batch
                    // after two) or once 512 are queued.
                    .with_span_processor(BatchSpanProcessor::builder(spans, Tokio).build())
                    .build(),
            );
            let push = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(url.clone())
                .build()
                .map_err(|cause| Error::Exporter {
                    signal: "metrics",
                    endpoint: url.clone(),
                    cause,
                })?;
            meters = meters.with_reader(
                PeriodicReader::builder(push, Tokio)
                    .with_interval(config.metrics_interval)
                    .build(),
            );
        }
        let metrics = meters.build();
        global::set_meter_provider(metrics.clone());
        if let Some(t) = &traces {
            global::set_tracer_provider(t.clone());
        }
        global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(Self {
            traces,
            metrics,
            prometheus: PrometheusText { registry },
            endpoint,
        })
    }

    /// Records `sriov.build.info` = 1 {service, version}: the one metric a
    /// daemon has from its first export on, so a collector and a scrape
    /// see it is up and which build it runs.
    pub fn record_build_info(&self, service: &str, version: &str) {
        global::meter(METER_NAME)
            .u64_gauge("sriov.build.info")
            .with_description("Always 1; the daemon and its version as attributes")
            .build()
            .record(
                1,
                &[
                    opentelemetry::KeyValue::new("service", service.to_string()),
                    opentelemetry::KeyValue::new("version", version.to_string()),
                ],
            );
    }

    /// The tracer provider when traces are exported, for
    /// [`crate::logging::LogConfig::traces`].
    pub fn tracer_provider(&self) -> Option<SdkTracerProvider> {
        self.traces.clone()
    }

    /// The collector URL pushed to, if any.
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The handle a `/metrics` endpoint reads.
    pub fn prometheus(&self) -> PrometheusText {
        self.prometheus.clone()
    }

    /// [`PrometheusText::text`] now.
    pub fn prometheus_text(&self) -> String {
        self.prometheus.text()
    }

    /// Pushes what is batched (spans, the last metrics) and stops the
    /// exporters. It blocks until the collector answered or the export
    /// timed out: call it outside async code (or in `spawn_blocking`) while
    /// the runtime given to [`Telemetry::init`] still runs.
    pub fn shutdown(&self) -> Result<(), Error> {
        let traces = match &self.traces {
            Some(t) => t.shutdown().map_err(|cause| Error::Shutdown {
                signal: "traces",
                cause,
            }),
            None => Ok(()),
        };
        let metrics = self.metrics.shutdown().map_err(|cause| Error::Shutdown {
            signal: "metrics",
            cause,
        });
        traces.and(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_host_port_is_dialled_over_plain_http() {
        assert_eq!(
            endpoint_url("otel-collector.observability.svc.cluster.local:4317").unwrap(),
            "http://otel-collector.observability.svc.cluster.local:4317"
        );
        assert_eq!(
            endpoint_url(" https://collector:4317 ").unwrap(),
            "https://collector:4317"
        );
        assert!(matches!(
            endpoint_url("collector:43 17"),
            Err(Error::Endpoint { endpoint, .. }) if endpoint == "collector:43 17"
        ));
    }
}
