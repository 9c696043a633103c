//! `--telemetry`: the forwarder pushes to a fake OTLP collector
//! (`TELEMETRY=true`), the KERNEL Request carries a `traceparent` of ours,
//! and the collector must receive the forwarder's spans in our trace, each
//! descending from the span we named, and its metrics.

use std::collections::HashMap;
use std::time::Duration;

use sriov_netlink::NetnsUrl;
use sriov_netlink::testing::PrivateNetns;
use sriov_telemetry::collector::{FakeCollector, ReceivedSpan};

use crate::checks::Report;

/// The trace and span the stand-in NSM manager "sent" the Request from.
const TRACE_ID: &str = "5e1f0c2d3b4a69788796a5b4c3d2e1f0";
const CALLER_SPAN: &str = "a1b2c3d4e5f60718";
/// Spans are batched for up to 5 s, metrics pushed every second.
const WAIT: Duration = Duration::from_secs(30);

/// A collector the forwarder reaches: on the loopback of its namespace
/// when it has a private one (brought up here; a new namespace's is down).
pub(crate) async fn collector(netns: Option<&PrivateNetns>) -> Result<FakeCollector, String> {
    let Some(ns) = netns else {
        return FakeCollector::start()
            .await
            .map_err(|e| format!("fake OTLP collector: {e}"));
    };
    let NetnsUrl::File(path) = ns.url().clone() else {
        return Err("private namespace without a file URL".into());
    };
    lo_up(&path)?;
    // A socket stays in the namespace it was made in, whoever uses it.
    let listener = ns
        .block_on(|| async { std::net::TcpListener::bind(("127.0.0.1", 0)) })
        .map_err(|e| e.to_string())?
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .and_then(FakeCollector::serve)
        .map_err(|e| format!("fake OTLP collector in the forwarder's namespace: {e}"))?;
    Ok(listener)
}

/// Brings up the loopback of the namespace at `path` (a new namespace's
/// is down), for endpoints the forwarder serves or dials there.
pub(crate) fn lo_up(path: &std::path::Path) -> Result<(), String> {
    let up = std::process::Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .args(["ip", "link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("nsenter ip link set lo up: {e}"))?;
    if !up.success() {
        return Err(format!(
            "ip link set lo up in the forwarder's namespace: {up}"
        ));
    }
    Ok(())
}

/// The variables that point the forwarder at `collector`.
pub(crate) fn env(collector: &FakeCollector) -> Vec<(String, String)> {
    vec![
        ("TELEMETRY".into(), "true".into()),
        ("NSM_OPEN_TELEMETRY_ENDPOINT".into(), collector.endpoint()),
        ("NSM_METRICS_EXPORT_INTERVAL".into(), "1s".into()),
    ]
}

/// Marks `request` as sent from our span, as the NSM manager's call would be.
pub(crate) fn traced<T>(request: &mut tonic::Request<T>) -> Result<(), String> {
    let value = format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
        .parse()
        .map_err(|e| format!("traceparent: {e}"))?;
    request.metadata_mut().insert("traceparent", value);
    Ok(())
}

/// Whether every span of `spans` descends, through spans received, from
/// our caller span; `None` while one's parent has not arrived.
fn all_under_caller(spans: &[&ReceivedSpan]) -> Option<bool> {
    let parents: HashMap<&str, &str> = spans
        .iter()
        .map(|s| (s.span_id.as_str(), s.parent_span_id.as_str()))
        .collect();
    for s in spans {
        let mut at = s.parent_span_id.as_str();
        for _ in 0..=spans.len() {
            if at == CALLER_SPAN {
                break;
            }
            at = parents.get(at)?;
        }
        if at != CALLER_SPAN {
            return Some(false);
        }
    }
    Some(!spans.is_empty())
}

/// `otlp-trace` and `otlp-metrics`.
pub(crate) async fn check(collector: &FakeCollector, r: &mut Report) {
    let ours = |spans: &[ReceivedSpan]| -> Vec<ReceivedSpan> {
        spans
            .iter()
            .filter(|s| s.trace_id == TRACE_ID)
            .cloned()
            .collect()
    };
    collector
        .wait_until(WAIT, |spans, _| {
            let ours = ours(spans);
            let refs: Vec<&ReceivedSpan> = ours.iter().collect();
            ours.iter().any(|s| s.parent_span_id == CALLER_SPAN)
                && all_under_caller(&refs) == Some(true)
        })
        .await;
    let spans = ours(&collector.spans());
    let refs: Vec<&ReceivedSpan> = spans.iter().collect();
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let from_forwarder = spans
        .iter()
        .all(|s| s.service_name.as_deref() == Some("sriov-forwarder"));
    r.check(
        "otlp-trace",
        match all_under_caller(&refs) {
            Some(true) if from_forwarder => Ok(format!(
                "{} spans of trace {TRACE_ID} under span {CALLER_SPAN}: {}",
                spans.len(),
                names.join(" ")
            )),
            _ if spans.is_empty() => Err(format!(
                "no span of trace {TRACE_ID} among {} received",
                collector.spans().len()
            )),
            _ => Err(format!("not all under {CALLER_SPAN}: {spans:?}")),
        },
    );

    let pushed = collector
        .wait_until(WAIT, |_, metrics| {
            metrics.iter().any(|m| {
                m.name.starts_with("sriov.") && m.service_name.as_deref() == Some("sriov-forwarder")
            })
        })
        .await;
    let mut names: Vec<String> = collector
        .metrics()
        .into_iter()
        .filter(|m| m.name.starts_with("sriov."))
        .map(|m| m.name)
        .collect();
    names.sort_unstable();
    names.dedup();
    r.check(
        "otlp-metrics",
        if pushed {
            Ok(names.join(" "))
        } else {
            Err("no sriov.* metric pushed".into())
        },
    );
}
