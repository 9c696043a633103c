#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The pool as issue #17 shows it: the `sriov.pool.vfs` gauge and the
//! `/debug/state` view. One test binary, since the meter provider is
//! process-wide.

use std::sync::Arc;

use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use sriov_pci_fake::{FakeSysfs, fixtures};
use sriov_token_pool::metrics::POOL_VFS;
use sriov_token_pool::{DriverKind, FileStore, PfEntry, Pool, system_clock};

const NAME: &str = "worker.domain/10G";
const PF: &str = "0000:3b:00.0";

fn pool(fake: &FakeSysfs, state: &tempfile::TempDir) -> Pool {
    let sysfs = fake.sysfs();
    Pool::open(
        vec![PfEntry {
            pf: sysfs.physical_function(PF.parse().unwrap()).unwrap(),
            names: vec![NAME.into()],
            vf_kernel_driver: "iavf".into(),
        }],
        FileStore::in_dir(state.path()).unwrap(),
        &sysfs,
        system_clock(),
    )
    .unwrap()
    .0
}

/// The gauge's value for `state` of NAME on PF.
fn gauge(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter, state: &str) -> u64 {
    exporter.reset();
    provider.force_flush().unwrap();
    let mut found = None;
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == POOL_VFS) {
                let AggregatedMetrics::U64(MetricData::Gauge(g)) = m.data() else {
                    panic!("{POOL_VFS} is not a u64 gauge");
                };
                for p in g.data_points() {
                    let attr = |k: &str| {
                        p.attributes()
                            .find(|kv| kv.key.as_str() == k)
                            .map(|kv| kv.value.to_string())
                    };
                    if attr("state").as_deref() == Some(state)
                        && attr("resource").as_deref() == Some(NAME)
                        && attr("pf").as_deref() == Some(PF)
                    {
                        found = Some(p.value());
                    }
                }
            }
        }
    }
    found.unwrap_or_else(|| panic!("no {POOL_VFS} point for state {state}"))
}

#[test]
fn the_vf_gauge_and_the_state_view_follow_the_pool() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());

    let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
    let state = tempfile::tempdir().unwrap();
    let pool = Arc::new(pool(&fake, &state));
    sriov_token_pool::metrics::observe(&pool);
    let g = |s| gauge(&provider, &exporter, s);
    assert_eq!(
        (g("total"), g("free"), g("allocated"), g("in_use")),
        (4, 4, 0, 0)
    );

    let tokens: Vec<String> = pool
        .tokens()
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .take(2)
        .collect();
    pool.allocate(NAME, &tokens).unwrap();
    let lease = pool
        .use_token(&tokens[0], DriverKind::Kernel, "conn-1", u64::MAX)
        .unwrap();
    assert_eq!(
        (g("total"), g("free"), g("allocated"), g("in_use")),
        (4, 2, 1, 1)
    );

    let view = pool.debug_state(&|vf| (vf == lease.vf).then(|| "iavf".to_string()));
    let pf = &view[NAME]["pfs"][0];
    assert_eq!(pf["pf"], PF);
    assert_eq!(
        (pf["free"].as_u64(), pf["in_use"].as_u64()),
        (Some(2), Some(1))
    );
    let vfs = pf["vfs"].as_array().unwrap();
    assert_eq!(vfs.len(), 4);
    let used = vfs
        .iter()
        .find(|v| v["vf"] == lease.vf.to_string())
        .unwrap();
    assert_eq!(used["state"], "in_use");
    assert_eq!(used["connection"], "conn-1");
    assert_eq!(used["driver"], "iavf");
    let shown = used["token"].as_str().unwrap();
    assert!(shown.ends_with('…') && tokens[0].starts_with(shown.trim_end_matches('…')));
    assert!(
        !view.to_string().contains(&tokens[0]),
        "a whole token in the state view"
    );
    assert_eq!(
        vfs.iter().filter(|v| v["state"] == "free").count(),
        3,
        "{vfs:?}"
    );

    // A VF fixed to a token at Allocate shows as bound, its token's;
    // the one in use stays in use.
    let bound = pool
        .bind_at_allocate(NAME, &tokens[1..2], &|_| Some("iavf".to_string()))
        .unwrap();
    let views = pool.vf_views();
    let state_of = |vf| views.iter().find(|v| v.vf == vf).unwrap();
    let b = state_of(bound[0].binding.vf);
    assert_eq!((b.state, b.resource.as_deref()), ("bound", Some(NAME)));
    assert!(tokens[1].starts_with(b.token.as_deref().unwrap().trim_end_matches('…')));
    assert_eq!(b.connection, None);
    let u = state_of(lease.vf);
    assert_eq!(
        (u.state, u.connection.as_deref()),
        ("in_use", Some("conn-1"))
    );
    assert_eq!(views.iter().filter(|v| v.state == "free").count(), 2);

    // A dropped pool is no longer reported.
    drop(pool);
    exporter.reset();
    provider.force_flush().unwrap();
    let reported = exporter
        .get_finished_metrics()
        .unwrap()
        .iter()
        .flat_map(|rm| {
            rm.scope_metrics()
                .flat_map(|sm| sm.metrics().map(|m| m.name().to_string()))
                .collect::<Vec<_>>()
        })
        .any(|n| n == POOL_VFS);
    assert!(!reported);
}
