//! What the chain records for issue #17: the metric names it exports, its
//! instruments, and the attributes of the `nsm.Request` / `nsm.Close` spans.
//!
//! Instruments come from `opentelemetry::global::meter("sriov")` at their
//! first use, not at load: a meter fetched before the binary installs its
//! provider stays a no-op for good.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use tonic::Status;

use crate::params::{MECH_KERNEL, MECH_NOOP, MECH_VFIO};

/// `sriov.nsm.requests` {mechanism, result}: NetworkService Requests served.
pub const NSM_REQUESTS: &str = "sriov.nsm.requests";
/// `sriov.nsm.closes` {mechanism, result}: NetworkService Closes served.
pub const NSM_CLOSES: &str = "sriov.nsm.closes";
/// `sriov.chain.element.duration` {element, op}, seconds: the time an
/// element itself took, the rest of the chain after it left out.
pub const CHAIN_ELEMENT_DURATION: &str = "sriov.chain.element.duration";
/// `sriov.netlink.errors` {op}: netlink failures of the host (not a
/// caller's mistakes, such as a bad namespace URL).
pub const NETLINK_ERRORS: &str = "sriov.netlink.errors";
/// `sriov.sysfs.errors` {op}: sysfs reads and writes that failed.
pub const SYSFS_ERRORS: &str = "sriov.sysfs.errors";

/// The Prometheus names of what this crate exports (OpenTelemetry's dots as
/// underscores, counters with `_total`, the histogram with `_seconds`). The
/// dashboard's queries are checked against these lists.
pub const PROMETHEUS_NAMES: &[&str] = &[
    "sriov_nsm_requests_total",
    "sriov_nsm_closes_total",
    "sriov_chain_element_duration_seconds",
    "sriov_netlink_errors_total",
    "sriov_sysfs_errors_total",
];

struct Instruments {
    requests: Counter<u64>,
    closes: Counter<u64>,
    element: Histogram<f64>,
    netlink_errors: Counter<u64>,
    sysfs_errors: Counter<u64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter("sriov");
        Instruments {
            requests: meter
                .u64_counter(NSM_REQUESTS)
                .with_description("NetworkService Requests, by mechanism and result")
                .build(),
            closes: meter
                .u64_counter(NSM_CLOSES)
                .with_description("NetworkService Closes, by mechanism and result")
                .build(),
            element: meter
                .f64_histogram(CHAIN_ELEMENT_DURATION)
                .with_unit("s")
                .with_description("Time each chain element took itself, by element and op")
                // Host changes take from microseconds (a record) to seconds
                // (a driver bind waiting for its netdev).
                .with_boundaries(vec![
                    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .build(),
            netlink_errors: meter
                .u64_counter(NETLINK_ERRORS)
                .with_description("Netlink operations the host failed, by op")
                .build(),
            sysfs_errors: meter
                .u64_counter(SYSFS_ERRORS)
                .with_description("Sysfs operations that failed, by op")
                .build(),
        }
    })
}

/// The `mechanism` label: the mechanisms this forwarder knows, anything
/// else `unknown` (a client's free text must not grow the series).
pub(crate) fn mechanism_label(kind: Option<&str>) -> &'static str {
    match kind {
        Some(MECH_KERNEL) => MECH_KERNEL,
        Some(MECH_VFIO) => MECH_VFIO,
        Some(MECH_NOOP) => MECH_NOOP,
        _ => "unknown",
    }
}

/// The `result` label: `ok`, or the gRPC code's canonical name.
pub(crate) fn result_label<T>(result: &Result<T, Status>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => code_name(e.code()),
    }
}

/// The canonical (upper snake case) name of a gRPC code; the device
/// plugin's `result` labels use the same names.
pub use sriov_deviceplugin::metrics::code_name;

pub(crate) fn count_request(mechanism: &'static str, result: &'static str) {
    instruments().requests.add(
        1,
        &[
            KeyValue::new("mechanism", mechanism),
            KeyValue::new("result", result),
        ],
    );
}

pub(crate) fn count_close(mechanism: &'static str, result: &'static str) {
    instruments().closes.add(
        1,
        &[
            KeyValue::new("mechanism", mechanism),
            KeyValue::new("result", result),
        ],
    );
}

pub(crate) fn element_took(element: &'static str, op: &'static str, seconds: f64) {
    instruments().element.record(
        seconds,
        &[KeyValue::new("element", element), KeyValue::new("op", op)],
    );
}

pub(crate) fn netlink_error(op: &'static str) {
    instruments()
        .netlink_errors
        .add(1, &[KeyValue::new("op", op)]);
}

pub(crate) fn sysfs_error(op: String) {
    instruments()
        .sysfs_errors
        .add(1, &[KeyValue::new("op", op)]);
}

tokio::task_local! {
    /// The `nsm.Request` / `nsm.Close` span of the call this task serves,
    /// so the element that learns the VF can name it there.
    static CALL_SPAN: tracing::Span;
}

/// Runs `f` with `span` as the call span [`annotate_call`] writes to.
pub(crate) async fn with_call_span<F: Future>(span: tracing::Span, f: F) -> F::Output {
    CALL_SPAN.scope(span, f).await
}

/// Records the VF and resource a call got on its `nsm.*` span, and for a
/// Request whether it refreshed an established connection; a no-op outside
/// a served call (the sweep's Closes).
pub(crate) fn annotate_call(vf: &str, resource: &str, refresh: Option<bool>) {
    let _ = CALL_SPAN.try_with(|span| {
        span.record("vf.address", vf);
        span.record("resource", resource);
        if let Some(refresh) = refresh {
            span.record("refresh", refresh);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exported names follow OpenTelemetry's Prometheus rules from the
    /// instrument names, so the list the dashboard is checked against
    /// cannot drift from what is recorded.
    #[test]
    fn prometheus_names_follow_the_instrument_names() {
        let expected = [
            format!("{}_total", NSM_REQUESTS.replace('.', "_")),
            format!("{}_total", NSM_CLOSES.replace('.', "_")),
            format!("{}_seconds", CHAIN_ELEMENT_DURATION.replace('.', "_")),
            format!("{}_total", NETLINK_ERRORS.replace('.', "_")),
            format!("{}_total", SYSFS_ERRORS.replace('.', "_")),
        ];
        assert_eq!(
            PROMETHEUS_NAMES,
            expected.iter().map(String::as_str).collect::<Vec<_>>()
        );
    }

    #[test]
    fn labels_stay_within_their_sets() {
        assert_eq!(mechanism_label(Some("KERNEL")), "KERNEL");
        assert_eq!(mechanism_label(Some("MEMIF")), "unknown");
        assert_eq!(mechanism_label(None), "unknown");
        assert_eq!(result_label::<()>(&Ok(())), "ok");
        assert_eq!(
            result_label::<()>(&Err(Status::resource_exhausted("x"))),
            "RESOURCE_EXHAUSTED"
        );
    }
}
