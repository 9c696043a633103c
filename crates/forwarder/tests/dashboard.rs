#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `deploy/grafana/sriov-dashboard.json` queries exactly the metrics the
//! crates export: every `sriov_*` name in a query is in one of the crates'
//! `PROMETHEUS_NAMES` lists (kept beside their instruments), and every
//! listed metric has a panel. A renamed instrument fails here, not on an
//! operator's empty graph. (Whether the running binary exports them is the
//! scrape test's.)

use std::collections::BTreeSet;

/// Every metric the forwarder and the standalone device plugin export.
fn exported() -> BTreeSet<&'static str> {
    [
        sriov_chain::metrics::PROMETHEUS_NAMES,
        sriov_token_pool::metrics::PROMETHEUS_NAMES,
        sriov_deviceplugin::metrics::PROMETHEUS_NAMES,
        sriov_selector_pools::metrics::PROMETHEUS_NAMES,
        sriov_forwarder::metrics::PROMETHEUS_NAMES,
    ]
    .concat()
    .into_iter()
    .collect()
}

fn dashboard() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/sriov-dashboard.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every PromQL string in the dashboard: panel targets (rows' panels too)
/// and query variables.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The `sriov_*` metric names a query uses, histogram series folded into
/// their histogram's name.
fn names_in(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("sriov_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| word.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
            .unwrap_or(&word);
        names.push(base.to_string());
    }
    names
}

#[test]
fn the_dashboard_queries_only_exported_metrics_and_all_of_them() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let datasource = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["query"], "prometheus");

    let mut all = Vec::new();
    queries(&d["panels"], &mut all);
    queries(&d["templating"], &mut all);
    let exported = exported();
    let mut used = BTreeSet::new();
    for q in &all {
        let names = names_in(q);
        for n in names {
            assert!(
                exported.contains(n.as_str()),
                "the dashboard queries {n}, which nothing exports: {q}"
            );
            used.insert(n);
        }
    }
    let unused: Vec<_> = exported.iter().filter(|n| !used.contains(**n)).collect();
    assert!(unused.is_empty(), "no panel shows {unused:?}");

    // Every panel that draws has a query, on the datasource variable.
    let mut panels = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
    }
}

#[test]
fn histogram_series_fold_into_their_histogram() {
    assert_eq!(
        names_in(
            "rate(sriov_chain_element_duration_seconds_bucket[5m]) / sriov_nsm_requests_total"
        ),
        [
            "sriov_chain_element_duration_seconds",
            "sriov_nsm_requests_total"
        ]
    );
    // A counter named `_count` is not a histogram series.
    assert_eq!(names_in("sriov_x_count"), ["sriov_x_count"]);
}

/// The one instrument labelled by PF gets the wide series limit: with the
/// narrow one, a node with more than 32 PFs would fold its per-PF VF counts
/// into the overflow series.
#[test]
fn the_per_pf_gauge_gets_the_per_pf_series_limit() {
    assert_eq!(
        sriov_telemetry::PER_PF_INSTRUMENTS,
        [sriov_token_pool::metrics::POOL_VFS]
    );
}
