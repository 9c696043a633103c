//! What a device plugin records for issue #17: kubelet registrations,
//! Allocate results, the advertised devices by health and their health
//! flips. Instruments come from `opentelemetry::global::meter("sriov")` at
//! first use, so the binary's provider, installed before, is the one used.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, ObservableGauge};
use tokio::sync::watch;

use crate::Device;

/// `sriov.kubelet.registrations` {resource, result}: `Register` calls to
/// kubelet (and plugin-watcher verdicts), `ok` or why not.
pub const KUBELET_REGISTRATIONS: &str = "sriov.kubelet.registrations";
/// `sriov.dp.allocations` {resource, result}: kubelet's Allocate calls.
pub const DP_ALLOCATIONS: &str = "sriov.dp.allocations";
/// `sriov.dp.pool.devices` {resource, health = healthy|unhealthy}: the
/// devices advertised to kubelet.
pub const DP_POOL_DEVICES: &str = "sriov.dp.pool.devices";
/// `sriov.dp.health.changes` {resource, health}: advertised devices whose
/// health flipped, by the health they flipped to.
pub const DP_HEALTH_CHANGES: &str = "sriov.dp.health.changes";

/// The Prometheus names of what this crate exports; the dashboard's
/// queries are checked against it.
pub const PROMETHEUS_NAMES: &[&str] = &[
    "sriov_kubelet_registrations_total",
    "sriov_dp_allocations_total",
    "sriov_dp_pool_devices",
    "sriov_dp_health_changes_total",
];

struct Instruments {
    registrations: Counter<u64>,
    allocations: Counter<u64>,
    health_changes: Counter<u64>,
    _devices: ObservableGauge<u64>,
}

/// The device lists of the running plugins, by a key of their run.
type Advertised = std::collections::BTreeMap<u64, (String, watch::Receiver<Vec<Device>>)>;

static ADVERTISED: Mutex<Advertised> = Mutex::new(std::collections::BTreeMap::new());

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter("sriov");
        Instruments {
            registrations: meter
                .u64_counter(KUBELET_REGISTRATIONS)
                .with_description("Registrations with kubelet, by resource and result")
                .build(),
            allocations: meter
                .u64_counter(DP_ALLOCATIONS)
                .with_description("Allocate calls from kubelet, by resource and result")
                .build(),
            health_changes: meter
                .u64_counter(DP_HEALTH_CHANGES)
                .with_description("Advertised devices whose health flipped, by the new health")
                .build(),
            _devices: meter
                .u64_observable_gauge(DP_POOL_DEVICES)
                .with_description("Devices advertised to kubelet, by resource and health")
                .with_callback(|observer| {
                    let Ok(advertised) = ADVERTISED.lock() else {
                        return;
                    };
                    for (resource, devices) in advertised.values() {
                        let devices = devices.borrow();
                        let healthy = devices.iter().filter(|d| d.healthy).count() as u64;
                        let total = devices.len() as u64;
                        for (health, n) in [("healthy", healthy), ("unhealthy", total - healthy)] {
                            observer.observe(
                                n,
                                &[
                                    KeyValue::new("resource", resource.clone()),
                                    KeyValue::new("health", health),
                                ],
                            );
                        }
                    }
                })
                .build(),
        }
    })
}

/// The canonical (upper snake case) name of a gRPC code, for `result`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `result` of a failed registration: kubelet's code, or how it was
/// not reached.
pub(crate) fn registration_failure(e: &crate::Error) -> &'static str {
    match e {
        crate::Error::Register { status, .. } => code_name(status.code()),
        crate::Error::Timeout { .. } => "timeout",
        crate::Error::Connect { .. } => "unreachable",
        _ => "error",
    }
}

pub(crate) fn registration(resource: &str, result: &'static str) {
    instruments().registrations.add(
        1,
        &[
            KeyValue::new("resource", resource.to_string()),
            KeyValue::new("result", result),
        ],
    );
}

pub(crate) fn allocation(resource: &str, result: &'static str) {
    instruments().allocations.add(
        1,
        &[
            KeyValue::new("resource", resource.to_string()),
            KeyValue::new("result", result),
        ],
    );
}

/// Counts the devices whose health differs between `before` and `now`
/// (devices that came or went are not flips).
pub(crate) fn health_flips(resource: &str, before: &HealthById, now: &[Device]) {
    for healthy in flipped(before, now) {
        let health = if healthy { "healthy" } else { "unhealthy" };
        instruments().health_changes.add(
            1,
            &[
                KeyValue::new("resource", resource.to_string()),
                KeyValue::new("health", health),
            ],
        );
    }
}

/// The new health of each device of `now` whose health differs from `before`'s.
fn flipped<'a>(before: &'a HealthById, now: &'a [Device]) -> impl Iterator<Item = bool> + 'a {
    now.iter()
        .filter(|d| {
            before
                .0
                .get(&id_hash(&d.id))
                .is_some_and(|h| *h != d.healthy)
        })
        .map(|d| d.healthy)
}

/// A device list's health, kept between its changes to count flips: by a hash of each ID
/// rather than a copy of the list (about 0.5 MB with 4096 devices, against 0.1 MB). Two IDs
/// sharing a hash could only miscount a flip.
pub(crate) struct HealthById(HashMap<u64, bool>);

impl HealthById {
    pub(crate) fn of(devices: &[Device]) -> Self {
        Self(
            devices
                .iter()
                .map(|d| (id_hash(&d.id), d.healthy))
                .collect(),
        )
    }
}

fn id_hash(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// A plugin's device list, reported in `sriov.dp.pool.devices` and watched
/// for health flips while this lives.
pub(crate) struct Watched {
    key: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Watched {
    pub(crate) fn start(resource: &str, devices: watch::Receiver<Vec<Device>>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let key = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = instruments();
        if let Ok(mut advertised) = ADVERTISED.lock() {
            advertised.insert(key, (resource.to_string(), devices.clone()));
        }
        let resource = resource.to_string();
        let mut rx = devices;
        let task = tokio::spawn(async move {
            let mut last = HealthById::of(&rx.borrow_and_update());
            while rx.changed().await.is_ok() {
                let list = rx.borrow_and_update();
                health_flips(&resource, &last, &list);
                last = HealthById::of(&list);
            }
        });
        Self { key, task }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(mut advertised) = ADVERTISED.lock() {
            advertised.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, healthy: bool) -> Device {
        Device {
            id: id.into(),
            healthy,
            numa_node: None,
            group: None,
        }
    }

    #[test]
    fn only_devices_known_before_whose_health_changed_count_as_flips() {
        let before = HealthById::of(&[device("a", true), device("b", true), device("c", false)]);
        let now = [
            device("a", true),
            device("b", false),
            device("c", true),
            device("new", false),
        ];
        assert_eq!(flipped(&before, &now).collect::<Vec<_>>(), [false, true]);
        assert_eq!(flipped(&HealthById::of(&now), &now).count(), 0);
    }
}
