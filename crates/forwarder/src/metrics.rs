//! What the forwarder itself records for issue #17: its reconciliations
//! (the sweep and the start-up roll-back) and what they repaired, and its
//! registrations with the NSM registry. Instruments are fetched at first
//! use, after the binary installed its meter provider.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use sriov_nsm::RegistrationState;

/// `sriov.reconcile.runs`: reconciliation passes (each sweep, and the
/// start-up roll-back of unfinished Requests).
pub const RECONCILE_RUNS: &str = "sriov.reconcile.runs";
/// `sriov.reconcile.repairs` {what}: what a reconciliation repaired.
pub const RECONCILE_REPAIRS: &str = "sriov.reconcile.repairs";
/// `sriov.registry.registrations` {result = ok|error}: Register calls to
/// the NSM registry (first, refreshes, re-registrations).
pub const REGISTRY_REGISTRATIONS: &str = "sriov.registry.registrations";
/// `sriov.reloads` {result = ok|invalid|error}: config reloads and sysfs
/// rescans (`invalid`: the new config was refused; `error`: it could not
/// be applied). The running config stays on anything but `ok`.
pub const RELOADS: &str = "sriov.reloads";

/// `sriov.link.health.changes` {resource, health = healthy|unhealthy, cause}:
/// the same counter the standalone plugin keeps for its devices; here a VF
/// whose health flipped, counted once for each resource its PF serves.
/// `cause` is why it is (or, on a flip to healthy, was) unhealthy:
/// `link_down` (its PF's link), `driver_unbound`, `netdev_gone`,
/// `device_gone` (the VF or its PF).
pub const LINK_HEALTH_CHANGES: &str = "sriov.link.health.changes";

/// The Prometheus names of what this crate exports; with the lists of
/// `sriov_chain::metrics`, `sriov_token_pool::metrics` and
/// `sriov_deviceplugin::metrics` they are everything the forwarder
/// exports, and the dashboard's queries are checked against them.
pub const PROMETHEUS_NAMES: &[&str] = &[
    "sriov_reconcile_runs_total",
    "sriov_reconcile_repairs_total",
    "sriov_registry_registrations_total",
    "sriov_reloads_total",
    "sriov_link_health_changes_total",
];

struct Instruments {
    runs: Counter<u64>,
    repairs: Counter<u64>,
    registrations: Counter<u64>,
    reloads: Counter<u64>,
    health: Counter<u64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter("sriov");
        Instruments {
            runs: meter
                .u64_counter(RECONCILE_RUNS)
                .with_description("Reconciliation passes: sweeps and the start-up roll-back")
                .build(),
            repairs: meter
                .u64_counter(RECONCILE_REPAIRS)
                .with_description("What reconciliations repaired")
                .build(),
            registrations: meter
                .u64_counter(REGISTRY_REGISTRATIONS)
                .with_description("Register calls to the NSM registry, by result")
                .build(),
            reloads: meter
                .u64_counter(RELOADS)
                .with_description("Config reloads and sysfs rescans, by result")
                .build(),
            health: meter
                .u64_counter(LINK_HEALTH_CHANGES)
                .with_description("VFs whose health flipped, by the new health and the cause")
                .build(),
        }
    })
}

/// One reconciliation pass.
pub(crate) fn reconcile_run() {
    instruments().runs.add(1, &[]);
}

/// `n` repairs of one kind: `unfinished_request` (rolled back at start),
/// `gone_pod` (its connection closed), `expired` (undone), `stale_use`
/// (a use released by the pool's sweep).
pub(crate) fn repaired(what: &'static str, n: u64) {
    if n > 0 {
        instruments().repairs.add(n, &[KeyValue::new("what", what)]);
    }
}

/// One reload or rescan and how it ended: `ok`, `invalid`, `error`.
pub(crate) fn reload(result: &'static str) {
    instruments()
        .reloads
        .add(1, &[KeyValue::new("result", result)]);
}

/// Counts the Register calls between two states of the registration: the
/// successes from its counter, a failure per new failed attempt.
pub(crate) fn registry_change(before: &RegistrationState, now: &RegistrationState) {
    let ok = |s: &RegistrationState| match s {
        RegistrationState::Registered { registrations, .. } => Some(*registrations),
        _ => None,
    };
    let succeeded = match (ok(before), ok(now)) {
        (Some(b), Some(n)) => n.saturating_sub(b),
        (None, Some(n)) => u64::from(n > 0),
        _ => 0,
    };
    let failed = match (before, now) {
        (
            RegistrationState::Retrying { attempts: b, .. },
            RegistrationState::Retrying { attempts: n, .. },
        ) => n.saturating_sub(*b),
        (_, RegistrationState::Retrying { attempts, .. }) => (*attempts).min(1),
        _ => 0,
    };
    if succeeded > 0 {
        instruments()
            .registrations
            .add(succeeded, &[KeyValue::new("result", "ok")]);
    }
    if failed > 0 {
        instruments()
            .registrations
            .add(u64::from(failed), &[KeyValue::new("result", "error")]);
    }
}

/// A VF's health flipped to `healthy`, for `cause`; counted for each of `resources`.
pub(crate) fn vf_health_flip(resources: Option<&Vec<String>>, healthy: bool, cause: &'static str) {
    let health = if healthy { "healthy" } else { "unhealthy" };
    for resource in resources.into_iter().flatten() {
        instruments().health.add(
            1,
            &[
                KeyValue::new("resource", resource.clone()),
                KeyValue::new("health", health),
                KeyValue::new("cause", cause),
            ],
        );
    }
}
