//! What the pools record for issue #17: link health flips of their devices, and config
//! reloads (issue #18).
//! (Advertised devices, Allocate results and kubelet registrations are
//! recorded by `sriov-deviceplugin`, see `sriov_deviceplugin::metrics`.)

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

/// `sriov.link.health.changes` {resource, health = healthy|unhealthy}:
/// devices of a pool whose health, which follows their links (uplink down
/// or gone, netdev vanished), flipped.
pub const LINK_HEALTH_CHANGES: &str = "sriov.link.health.changes";

/// The Prometheus names of what this crate exports; the dashboard's
/// queries are checked against it.
pub const PROMETHEUS_NAMES: &[&str] =
    &["sriov_link_health_changes_total", "sriov_dp_reloads_total"];

/// `sriov.dp.reloads` {result = applied|unchanged|invalid|failed}: config reloads of the
/// standalone plugin (file change or SIGHUP). `invalid`: the new config was refused and the
/// running one stays; `failed`: discovery under the new config failed, same outcome.
pub const DP_RELOADS: &str = "sriov.dp.reloads";

fn changes() -> &'static Counter<u64> {
    static CHANGES: OnceLock<Counter<u64>> = OnceLock::new();
    CHANGES.get_or_init(|| {
        opentelemetry::global::meter("sriov")
            .u64_counter(LINK_HEALTH_CHANGES)
            .with_description("Pool devices whose link health flipped, by the new health")
            .build()
    })
}

pub(crate) fn link_health_changed(resource: &str, healthy: bool) {
    let health = if healthy { "healthy" } else { "unhealthy" };
    changes().add(
        1,
        &[
            KeyValue::new("resource", resource.to_string()),
            KeyValue::new("health", health),
        ],
    );
}

fn reloads() -> &'static Counter<u64> {
    static RELOADS: OnceLock<Counter<u64>> = OnceLock::new();
    RELOADS.get_or_init(|| {
        opentelemetry::global::meter("sriov")
            .u64_counter(DP_RELOADS)
            .with_description("Config reloads of the device plugin, by result")
            .build()
    })
}

/// Counts one reload with its `result` (see [`DP_RELOADS`]).
pub(crate) fn reload_done(result: &'static str) {
    reloads().add(1, &[KeyValue::new("result", result)]);
}
