//! What the pools record for issue #17: link health flips of their devices, and config
//! reloads (issue #18).
//! (Advertised devices, Allocate results and kubelet registrations are
//! recorded by `sriov-deviceplugin`, see `sriov_deviceplugin::metrics`.)

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

use crate::health::Unhealthy;

/// `sriov.link.health.changes` {resource, health = healthy|unhealthy, cause}:
/// devices of a pool whose health flipped. `cause` is why the device is (or,
/// on a flip to healthy, was) unhealthy: `link_down`, `link_gone`
/// (its uplink), `netdev_gone`, `driver_unbound`, `device_gone`; a device
/// that stays unhealthy for a new reason counts under the new cause.
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

/// Counts a device whose health went from `before` to `after`, if it changed.
pub(crate) fn health_flip(resource: &str, before: &Option<Unhealthy>, after: &Option<Unhealthy>) {
    let (health, cause) = match (before, after) {
        (None, None) => return,
        (Some(b), Some(a)) if b.cause == a.cause => return,
        (_, Some(a)) => ("unhealthy", a.cause),
        (Some(b), None) => ("healthy", b.cause),
    };
    changes().add(
        1,
        &[
            KeyValue::new("resource", resource.to_string()),
            KeyValue::new("health", health),
            KeyValue::new("cause", cause.as_str()),
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
