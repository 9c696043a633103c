#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What the chain records (issue #17): the `nsm.*` spans with a child per
//! element and per host operation, the Request/Close counters and the
//! per-element histogram. The meter provider and the tracing subscriber
//! are process-wide, so every test here takes one lock and reads only the
//! series and spans of its own connections.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use sriov_api::nsm::networkservice::network_service_server::NetworkService;
use sriov_chain::metrics::{CHAIN_ELEMENT_DURATION, NSM_CLOSES, NSM_REQUESTS};
use sriov_chain::params::{self, MECH_KERNEL};
use sriov_chain::server::NetworkServiceServer;
use sriov_netlink::testing::RecordingOps;
use support::*;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

// ------------------------------------------------------------------ spans

#[derive(Debug, Clone)]
struct SpanRec {
    name: String,
    parent: Option<usize>,
    fields: HashMap<String, String>,
}

#[derive(Default)]
struct Spans {
    all: Vec<SpanRec>,
    /// Live span ids to their record (ids are reused once a span closes).
    live: HashMap<u64, usize>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Spans>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .and_then(|p| spans.live.get(&p.id().into_u64()).copied());
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let at = spans.all.len();
        spans.all.push(SpanRec {
            name: attrs.metadata().name().to_string(),
            parent,
            fields,
        });
        spans.live.insert(id.into_u64(), at);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(&at) = spans.live.get(&id.into_u64()) {
            values.record(&mut Fields(&mut spans.all[at].fields));
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        self.0.lock().unwrap().live.remove(&id.into_u64());
    }
}

impl Spans {
    /// The exported name: `otel.name` where set.
    fn name(&self, at: usize) -> String {
        let s = &self.all[at];
        s.fields.get("otel.name").cloned().unwrap_or(s.name.clone())
    }

    fn descends_from(&self, mut at: usize, root: usize) -> bool {
        while let Some(p) = self.all[at].parent {
            if p == root {
                return true;
            }
            at = p;
        }
        false
    }

    /// Names of the spans under `root`, each with its parent's name.
    fn under(&self, root: usize) -> Vec<(String, String)> {
        (0..self.all.len())
            .filter(|&i| self.descends_from(i, root))
            .map(|i| {
                let parent = self.all[i].parent.map(|p| self.name(p)).unwrap_or_default();
                (self.name(i), parent)
            })
            .collect()
    }
}

// ---------------------------------------------------------------- metrics

struct Telemetry {
    spans: Arc<Mutex<Spans>>,
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
}

/// Installs the process-wide provider and subscriber once, before any
/// instrument is fetched, and serializes the tests.
async fn telemetry() -> (&'static Telemetry, tokio::sync::MutexGuard<'static, ()>) {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    let guard = ONE_AT_A_TIME.lock().await;
    let t = TELEMETRY.get_or_init(|| {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        let spans = Arc::new(Mutex::new(Spans::default()));
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(Capture(spans.clone())),
        )
        .unwrap();
        Telemetry {
            spans,
            provider,
            exporter,
        }
    });
    (t, guard)
}

/// A data point: metric, sorted attributes, value (histograms: sample count).
type Point = (String, Vec<(String, String)>, f64);

/// Every data point now.
fn points(t: &Telemetry) -> Vec<Point> {
    t.exporter.reset();
    t.provider.force_flush().unwrap();
    let mut out = Vec::new();
    let kv = |a: &mut dyn Iterator<Item = &KeyValue>| {
        let mut v: Vec<(String, String)> = a
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        v.sort();
        v
    };
    for rm in t.exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics() {
                let name = m.name().to_string();
                match m.data() {
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        for p in s.data_points() {
                            out.push((name.clone(), kv(&mut p.attributes()), p.value() as f64));
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            out.push((name.clone(), kv(&mut p.attributes()), p.count() as f64));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

fn value(points: &[Point], name: &str, attrs: &[(&str, &str)]) -> f64 {
    let mut want: Vec<(String, String)> = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    points
        .iter()
        .filter(|(n, a, _)| n == name && *a == want)
        .map(|(_, _, v)| *v)
        .sum()
}

fn kernel_request(id: &str, token: &str) -> sriov_api::nsm::networkservice::NetworkServiceRequest {
    request(
        id,
        MECH_KERNEL,
        &[
            (params::TOKEN_ID, token),
            (params::INODE_URL, "inode://4/4026532999"),
            (params::NAME, "nsm-1"),
        ],
    )
}

#[tokio::test]
async fn a_served_request_is_one_span_with_a_child_per_element_and_host_operation() {
    let (t, _one) = telemetry().await;
    let h = Harness::new(Arc::new(RecordingOps::new()));
    *h.next_hop.context.lock().unwrap() = Some(ip_context());
    let token = h.allocate(1).remove(0);
    let server = NetworkServiceServer::new(h.chain.clone());
    let conn = server
        .request(tonic::Request::new(kernel_request("spans", &token)))
        .await
        .unwrap()
        .into_inner();
    server.close(tonic::Request::new(conn)).await.unwrap();
    // The move home runs after the answer, under the Close's trace all the same.
    h.returns.settled().await;

    let spans = t.spans.lock().unwrap();
    let of = |name: &str| {
        (0..spans.all.len())
            .find(|&i| {
                spans.all[i].name == name
                    && spans.all[i].fields.get("connection.id").map(String::as_str)
                        == Some("spans-mgr")
            })
            .unwrap_or_else(|| panic!("no {name} span for spans-mgr"))
    };
    let root = of("nsm.Request");
    let fields = &spans.all[root].fields;
    assert_eq!(fields["mechanism"], "KERNEL");
    assert_eq!(fields["result"], "ok");
    assert_eq!(fields["vf.address"], "0000:3b:02.0");
    assert_eq!(fields["resource"], NAME);
    assert_eq!(fields["refresh"], "false");
    let under = spans.under(root);
    let has = |child: &str, parent: &str| under.iter().any(|(c, p)| c == child && p == parent);
    for element in [
        "limits",
        "updatepath",
        "begin",
        "updatetoken",
        "authorize",
        "timeout",
        "monitor",
        "discover",
        "roundrobin",
        "resetmechanism",
        "mechanisms",
        "validate",
        "bindvf",
        "vfconfig",
        "inject",
        "ipcontext",
        "connect",
    ] {
        assert!(
            under.iter().any(|(c, _)| *c == format!("chain.{element}")),
            "no chain.{element} under nsm.Request: {under:?}"
        );
    }
    assert!(has("chain.limits", "nsm.Request"), "{under:?}");
    assert!(has("host.bind", "chain.bindvf"), "{under:?}");
    assert!(has("host.netns_move", "chain.inject"), "{under:?}");

    let close = of("nsm.Close");
    assert_eq!(spans.all[close].fields["result"], "ok");
    assert_eq!(spans.all[close].fields["vf.address"], "0000:3b:02.0");
    assert!(
        spans
            .under(close)
            .iter()
            .any(|(c, p)| c == "host.netns_return" && p == "chain.inject")
            && spans
                .under(close)
                .iter()
                .any(|(c, p)| c == "host.netns_disable" && p == "chain.inject"),
        "{:?}",
        spans.under(close)
    );
}

#[tokio::test]
async fn requests_and_closes_are_counted_by_mechanism_and_result_and_elements_timed() {
    let (t, _one) = telemetry().await;
    let h = Harness::new(Arc::new(RecordingOps::new()));
    *h.next_hop.context.lock().unwrap() = Some(ip_context());
    let token = h.allocate(1).remove(0);
    let server = NetworkServiceServer::new(h.chain.clone());
    let ok = [("mechanism", "KERNEL"), ("result", "ok")];
    let unknown_token = [("mechanism", "KERNEL"), ("result", "NOT_FOUND")];
    let bindvf_request = [("element", "bindvf"), ("op", "request")];

    let before = points(t);
    let conn = server
        .request(tonic::Request::new(kernel_request("count", &token)))
        .await
        .unwrap()
        .into_inner();
    let after = points(t);
    assert_eq!(
        value(&after, NSM_REQUESTS, &ok) - value(&before, NSM_REQUESTS, &ok),
        1.0
    );
    assert_eq!(
        value(&after, CHAIN_ELEMENT_DURATION, &bindvf_request)
            - value(&before, CHAIN_ELEMENT_DURATION, &bindvf_request),
        1.0,
        "one bindvf sample"
    );

    let refused = server
        .request(tonic::Request::new(kernel_request(
            "nope",
            "sriov-no-such-token",
        )))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    let failed = points(t);
    assert_eq!(
        value(&failed, NSM_REQUESTS, &unknown_token) - value(&after, NSM_REQUESTS, &unknown_token),
        1.0
    );
    assert_eq!(
        value(&failed, NSM_REQUESTS, &ok),
        value(&after, NSM_REQUESTS, &ok)
    );

    server.close(tonic::Request::new(conn)).await.unwrap();
    let closed = points(t);
    assert_eq!(
        value(&closed, NSM_CLOSES, &ok) - value(&failed, NSM_CLOSES, &ok),
        1.0
    );
    let bindvf_close = [("element", "bindvf"), ("op", "close")];
    assert!(value(&closed, CHAIN_ELEMENT_DURATION, &bindvf_close) >= 1.0);
}
