//! The pool's gauge for issue #17: `sriov.pool.vfs` {resource, pf, state},
//! read from every pool handed to [`observe`] each time the meter collects.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use opentelemetry::KeyValue;
use opentelemetry::metrics::ObservableGauge;

use crate::Pool;

/// `sriov.pool.vfs` {resource, pf, state = total|free|allocated|in_use}.
pub const POOL_VFS: &str = "sriov.pool.vfs";

/// The Prometheus names of what this crate exports (a gauge keeps its
/// name, dots as underscores); the dashboard's queries are checked
/// against it.
pub const PROMETHEUS_NAMES: &[&str] = &["sriov_pool_vfs"];

/// Pools observed; a dropped pool drops out at the next collection.
static POOLS: Mutex<Vec<Weak<Pool>>> = Mutex::new(Vec::new());

/// Reports `pool`'s VF counts in `sriov.pool.vfs` from now on, for as long
/// as it lives. The gauge is made at the first call, so call this after the
/// binary installed its meter provider.
pub fn observe(pool: &Arc<Pool>) {
    if let Ok(mut pools) = POOLS.lock() {
        pools.push(Arc::downgrade(pool));
    }
    static GAUGE: OnceLock<ObservableGauge<u64>> = OnceLock::new();
    GAUGE.get_or_init(|| {
        opentelemetry::global::meter("sriov")
            .u64_observable_gauge(POOL_VFS)
            .with_description("VFs per resource and PF, by state")
            .with_callback(|observer| {
                let live: Vec<Arc<Pool>> = match POOLS.lock() {
                    Ok(mut pools) => {
                        pools.retain(|p| p.strong_count() > 0);
                        pools.iter().filter_map(Weak::upgrade).collect()
                    }
                    Err(_) => return,
                };
                for pool in live {
                    for c in pool.vf_counts() {
                        for (state, n) in [
                            ("total", c.total),
                            ("free", c.free),
                            ("allocated", c.allocated),
                            ("in_use", c.in_use),
                        ] {
                            observer.observe(
                                n,
                                &[
                                    KeyValue::new("resource", c.resource.clone()),
                                    KeyValue::new("pf", c.pf.to_string()),
                                    KeyValue::new("state", state),
                                ],
                            );
                        }
                    }
                }
            })
            .build()
    });
}
