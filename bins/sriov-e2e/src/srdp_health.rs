//! `sriov-e2e srdp --health PF_NETDEV`: the standalone plugin's device health on real VFs.
//! With the plugin following links and uevents, a VF whose driver is unbound turns Unhealthy
//! in ListAndWatch and Healthy again once rebound; the PF set down makes every VF Unhealthy,
//! and set up again, Healthy. The host is left as found: the driver rebound, the PF up.

use std::path::Path;
use std::time::Duration;

use sriov_api::kubelet::deviceplugin::v1beta1::ListAndWatchResponse;
use sriov_api::tonic::Streaming;
use sriov_netlink::RtNetlink;
use sriov_netlink::rtnetlink::LinkUnspec;
use sriov_pci::{PciAddress, Sysfs};

use crate::checks::Report;

/// Real carrier takes a few seconds to come back on an emulated igb.
const WAIT: Duration = Duration::from_secs(60);

/// Waits for an update in which `want` holds of `(id, healthy)` pairs.
async fn until(
    law: &mut Streaming<ListAndWatchResponse>,
    want: impl Fn(&[(String, bool)]) -> bool,
) -> Result<Vec<(String, bool)>, String> {
    tokio::time::timeout(WAIT, async {
        loop {
            let msg = law
                .message()
                .await
                .map_err(|e| e.to_string())?
                .ok_or("ListAndWatch ended")?;
            let devices: Vec<(String, bool)> = msg
                .devices
                .iter()
                .map(|d| (d.id.clone(), d.health == "Healthy"))
                .collect();
            if want(&devices) {
                return Ok(devices);
            }
        }
    })
    .await
    .map_err(|_| format!("not seen within {WAIT:?}"))?
}

async fn set_link(nl: &RtNetlink, index: u32, up: bool) -> Result<(), String> {
    let msg = if up {
        LinkUnspec::new_with_index(index).up().build()
    } else {
        LinkUnspec::new_with_index(index).down().build()
    };
    nl.handle()
        .link()
        .change(msg)
        .execute()
        .await
        .map_err(|e| e.to_string())
}

/// Runs the flips on `law` (a ListAndWatch stream of a pool of `vfs`), the PF being `pf`.
pub(crate) async fn scenario(
    r: &mut Report,
    law: &mut Streaming<ListAndWatchResponse>,
    sysfs_root: &Path,
    pf: &str,
    vfs: &[String],
) -> Result<(), String> {
    let id = vfs.last().ok_or("the pool has no devices")?.clone();
    let vf: PciAddress = id.parse().map_err(|e| format!("{id}: {e}"))?;
    let sysfs = Sysfs::under_root(sysfs_root);

    let driver = sysfs
        .unbind(vf)
        .map_err(|e| e.to_string())?
        .ok_or(format!("{id} had no driver"))?;
    let seen = until(law, |d| d.iter().any(|(i, h)| *i == id && !h)).await;
    let rebound = sysfs.bind(vf, &driver).map_err(|e| e.to_string());
    r.check(
        "srdp-health-unbound-vf-unhealthy",
        seen.map(|_| format!("{id} Unhealthy once {driver} let go of it")),
    );
    rebound?;
    r.check(
        "srdp-health-rebound-vf-healthy",
        until(law, |d| d.iter().any(|(i, h)| *i == id && *h))
            .await
            .map(|_| format!("{id} Healthy again on {driver}")),
    );

    let nl = RtNetlink::new().map_err(|e| e.to_string())?;
    let link = nl
        .link(&pf.into())
        .await
        .map_err(|e| e.to_string())?
        .ok_or(format!("no link {pf}"))?;
    set_link(&nl, link.index, false).await?;
    let down = until(law, |d| !d.is_empty() && d.iter().all(|(_, h)| !h)).await;
    let up = set_link(&nl, link.index, true).await;
    r.check(
        "srdp-health-pf-down-all-unhealthy",
        down.map(|d| format!("{} VFs Unhealthy with {pf} down", d.len())),
    );
    up?;
    r.check(
        "srdp-health-pf-up-all-healthy",
        until(law, |d| d.iter().filter(|(_, h)| *h).count() == vfs.len())
            .await
            .map(|d| format!("{} VFs Healthy with {pf} up", d.len())),
    );
    Ok(())
}
