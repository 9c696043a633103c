//! [`FakeCollector`]: an OTLP/gRPC collector stand-in for tests (feature
//! `testing`), recording every span and metric pushed to it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use tokio::sync::{oneshot, watch};

/// A span as the collector received it; ids in lowercase hex, as in a
/// `traceparent`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The span's name.
    pub name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits; empty for a root span.
    pub parent_span_id: String,
    /// The span's attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// `service.name` of the process that sent it.
    pub service_name: Option<String>,
    /// When it started, nanoseconds since the Unix epoch (the sender's clock).
    pub start_unix_nano: u64,
    /// When it ended, nanoseconds since the Unix epoch (the sender's clock).
    pub end_unix_nano: u64,
}

impl ReceivedSpan {
    /// How long it lasted, by the sender's clock.
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.end_unix_nano.saturating_sub(self.start_unix_nano))
    }
}

/// One data point of a received metric.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedPoint {
    /// The point's attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// A sum's or gauge's value; a histogram's count.
    pub value: f64,
}

/// A metric in one export, as received.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMetric {
    /// The OpenTelemetry name (`sriov.nsm.requests`).
    pub name: String,
    /// Its unit (`s`), empty if none.
    pub unit: String,
    /// `service.name` of the process that sent it.
    pub service_name: Option<String>,
    /// Its points in that export.
    pub points: Vec<ReceivedPoint>,
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    metrics: Vec<ReceivedMetric>,
}

#[derive(Clone)]
struct Store {
    received: Arc<Mutex<Received>>,
    changed: watch::Sender<u64>,
}

impl Store {
    fn with<T>(&self, f: impl FnOnce(&mut Received) -> T) -> T {
        let out = f(&mut self.received.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.send_modify(|n| *n += 1);
        out
    }

    fn read<T>(&self, f: impl FnOnce(&Received) -> T) -> T {
        f(&self.received.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// An OTLP collector on loopback TCP (port chosen by the kernel) serving
/// TraceService and MetricsService. Dropping it stops the server.
pub struct FakeCollector {
    addr: SocketAddr,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCollector")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeCollector {
    /// Starts one on 127.0.0.1. Must be called inside a tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::serve(tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?)
    }

    /// Serves on `listener`: one bound inside another network namespace
    /// serves the processes there. Must be called inside a tokio runtime.
    pub fn serve(listener: tokio::net::TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let store = Store {
            received: Arc::default(),
            changed: watch::channel(0).0,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Traces(store.clone())))
            .add_service(MetricsServiceServer::new(Metrics(store.clone())))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            );
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "fake collector stopped");
            }
        });
        Ok(Self {
            addr,
            store,
            stop: Some(stop),
        })
    }

    /// `host:port`, as NSM_OPEN_TELEMETRY_ENDPOINT names a collector.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.read(|r| r.spans.clone())
    }

    /// Every metric received so far, one entry per metric per export.
    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        self.store.read(|r| r.metrics.clone())
    }

    /// Waits up to `timeout` until `done` holds for what was received;
    /// returns whether it did.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[ReceivedSpan], &[ReceivedMetric]) -> bool,
    ) -> bool {
        let mut changed = self.store.changed.subscribe();
        let wait = async {
            loop {
                if self.store.read(|r| done(&r.spans, &r.metrics)) {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
            && self.store.read(|r| done(&r.spans, &r.metrics))
    }

    /// The first span named `name`, waiting up to `timeout` for it.
    pub async fn wait_for_span(&self, name: &str, timeout: Duration) -> Option<ReceivedSpan> {
        self.wait_until(timeout, |spans, _| spans.iter().any(|s| s.name == name))
            .await;
        self.spans().into_iter().find(|s| s.name == name)
    }

    /// The spans of trace `trace_id` (hex) once one named `name` is among
    /// them, waiting up to `timeout`; empty if none came.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        name: &str,
        timeout: Duration,
    ) -> Vec<ReceivedSpan> {
        let ours = |s: &ReceivedSpan| s.trace_id.eq_ignore_ascii_case(trace_id);
        self.wait_until(timeout, |spans, _| {
            spans.iter().any(|s| ours(s) && s.name == name)
        })
        .await;
        self.spans().into_iter().filter(|s| ours(s)).collect()
    }

    /// The latest export of metric `name`, waiting up to `timeout` for one.
    pub async fn wait_for_metric(&self, name: &str, timeout: Duration) -> Option<ReceivedMetric> {
        self.wait_until(timeout, |_, metrics| metrics.iter().any(|m| m.name == name))
            .await;
        self.metrics().into_iter().rev().find(|m| m.name == name)
    }

    /// Stops the server (dropping it does too).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for FakeCollector {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Traces(Store);

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = Vec::new();
        for rs in request.into_inner().resource_spans {
            let service = service_name(rs.resource.as_ref().map(|r| &r.attributes[..]));
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(ReceivedSpan {
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        attributes: attributes(&s.attributes),
                        service_name: service.clone(),
                        start_unix_nano: s.start_time_unix_nano,
                        end_unix_nano: s.end_time_unix_nano,
                    });
                }
            }
        }
        self.0.with(|r| r.spans.extend(spans));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

struct Metrics(Store);

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut metrics = Vec::new();
        for rm in request.into_inner().resource_metrics {
            let service = service_name(rm.resource.as_ref().map(|r| &r.attributes[..]));
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    metrics.push(ReceivedMetric {
                        name: m.name,
                        unit: m.unit,
                        service_name: service.clone(),
                        points: points(m.data),
                    });
                }
            }
        }
        self.0.with(|r| r.metrics.extend(metrics));
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn points(data: Option<metric::Data>) -> Vec<ReceivedPoint> {
    let number = |p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint| ReceivedPoint {
        attributes: attributes(&p.attributes),
        value: match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            // Counts this large are not what a test records.
            #[allow(clippy::cast_precision_loss)]
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => f64::NAN,
        },
    };
    match data {
        Some(metric::Data::Sum(s)) => s.data_points.iter().map(number).collect(),
        Some(metric::Data::Gauge(g)) => g.data_points.iter().map(number).collect(),
        #[allow(clippy::cast_precision_loss)]
        Some(metric::Data::Histogram(h)) => h
            .data_points
            .iter()
            .map(|p| ReceivedPoint {
                attributes: attributes(&p.attributes),
                value: p.count as f64,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn service_name(resource: Option<&[KeyValue]>) -> Option<String> {
    resource?
        .iter()
        .find(|kv| kv.key == "service.name")
        .map(|kv| text(kv.value.as_ref()))
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
