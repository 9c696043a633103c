//! `explain`: the pools this config gives on this node and why, read-only (no kubelet, no
//! device-info or CDI files). Health is the uplink's: with `--link-health netlink` one dump of
//! the links is taken, as the daemon's first pass would see them.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use sriov_pci::Sysfs;
use sriov_selector_pools::{
    Config, DdpTools, Host, HostPaths, LinkHealth, LinkTable, NoLinkHealth, PoolManager,
    PoolSettings, Strictness,
};

use crate::args::Args;

pub(crate) fn run(
    args: &Args,
    file: Option<&Path>,
    json: bool,
    strictness: Strictness,
) -> anyhow::Result<()> {
    let file = file.unwrap_or(&args.config_file);
    let config = Config::load_with(file, &args.resource_prefix, strictness)
        .with_context(|| format!("invalid config {}", file.display()))?;
    let host = Host::new(HostPaths {
        sysfs: Sysfs::under_root(&args.sysfs_root),
        proc_net_route: args.proc_net_route.clone(),
        dev_dir: args.dev_dir.clone(),
    })
    .with_extra_facts(Arc::new(DdpTools::new()));
    let links: Arc<dyn LinkHealth> = match args.link_health.as_str() {
        "netlink" => Arc::new(link_snapshot()?),
        _ => Arc::new(NoLinkHealth),
    };
    // Files are never written by a report, so the directories do not matter.
    let settings = PoolSettings::new(args.resource_prefix.clone());
    let report = PoolManager::new(&config, host, settings, links)
        .report()
        .context("discovering devices")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

fn link_snapshot() -> anyhow::Result<LinkTable> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let links = rt.block_on(async {
        let nl = sriov_netlink::RtNetlink::new().context("opening netlink")?;
        nl.links().await.context("listing links")
    })?;
    let table = LinkTable::new();
    table.replace_all(links.iter().map(|l| (l.name.clone(), l.is_healthy())));
    Ok(table)
}
