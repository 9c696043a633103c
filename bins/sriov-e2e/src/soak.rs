//! `--soak N`: N KERNEL and N/4 VFIO Request/Close cycles against one
//! forwarder process, after a warm-up. The forwarder's open file
//! descriptors must be the same at the end as after the warm-up, its
//! resident memory must not have grown by more than [`RSS_SLACK_KIB`], and
//! every VF must be as it was: on the same driver, its netdev home under the
//! same name, down.

use std::collections::BTreeMap;
use std::path::Path;

use sriov_netlink::testing::PrivateNetns;
use sriov_pci::{PciAddress, Sysfs};

use crate::checks::Report;
use crate::forwarder::Forwarder;
use crate::nsc;
use crate::{client, inspect};

/// What the scenario works with, from the main flow.
pub(crate) struct Scene<'a> {
    pub(crate) listen: &'a Path,
    pub(crate) kernel_token: String,
    /// A token for VFIO cycles, with the cgroupDir to grant; none skips them.
    pub(crate) vfio: Option<(String, String)>,
    pub(crate) client_ns: &'a PrivateNetns,
    pub(crate) vf_names: &'a [(PciAddress, String)],
    pub(crate) sysfs: &'a Sysfs,
}

/// Allocator noise allowed between the warm-up and the end.
const RSS_SLACK_KIB: u64 = 1024;

/// Cycles before the baseline is taken (connection pools, lazy statics).
const WARM_UP: usize = 5;

fn fds(pid: u32) -> Result<usize, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .map_err(|e| format!("/proc/{pid}/fd: {e}"))
}

/// [`fds`] once the Closes' background work is done (a move home holds the
/// client's namespace open until it ends): the count unchanged for 500 ms,
/// or whatever it is after 10 s.
async fn settled_fds(pid: u32) -> Result<usize, String> {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = fds(pid)?;
    let mut same_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = fds(pid)?;
        if now != last {
            last = now;
            same_since = Instant::now();
        } else if same_since.elapsed() >= Duration::from_millis(500) || Instant::now() > deadline {
            return Ok(last);
        }
    }
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for {pid}"))
}

/// Each VF's driver and, at home, its netdev's state.
async fn vf_state(s: &Scene<'_>, fwd: &Forwarder) -> Result<BTreeMap<String, String>, String> {
    let nl = fwd.netlink()?;
    let mut out = BTreeMap::new();
    for (vf, home) in s.vf_names {
        let driver = s.sysfs.driver(*vf).map_err(|e| e.to_string())?;
        let link = inspect::link_with(&nl, home).await?;
        out.insert(
            vf.to_string(),
            format!(
                "{driver:?} {}",
                link.map_or("not home".into(), |l| l.to_string())
            ),
        );
    }
    Ok(out)
}

async fn cycle(
    s: &Scene<'_>,
    nsc: &mut crate::nsc::Nsc,
    n: usize,
    vfio: bool,
) -> Result<(), String> {
    let id = format!("soak-{n}");
    let (mechanism, params, ip) = match (&s.vfio, vfio) {
        (Some((token, cgroup_dir)), true) => (
            "VFIO",
            vec![
                ("tokenID", token.clone()),
                ("cgroupDir", cgroup_dir.clone()),
            ],
            false,
        ),
        _ => (
            "KERNEL",
            vec![
                ("tokenID", s.kernel_token.clone()),
                ("inodeURL", crate::checks::file_url(s.client_ns)?),
                ("name", "soak0".to_string()),
            ],
            true,
        ),
    };
    let conn = nsc
        .request(client::request(&id, mechanism, &params, ip))
        .await
        .map_err(|e| format!("{id} {mechanism}: {}: {}", e.code(), e.message()))?
        .into_inner();
    nsc.close(conn)
        .await
        .map_err(|e| format!("{id} Close: {}: {}", e.code(), e.message()))?;
    Ok(())
}

pub(crate) async fn run(
    s: Scene<'_>,
    r: &mut Report,
    fwd: &Forwarder,
    kernel_cycles: usize,
) -> Result<(), String> {
    let mut nsc = nsc::connect(s.listen).await?;
    let vfio_cycles = if s.vfio.is_some() {
        kernel_cycles / 4
    } else {
        0
    };
    for n in 0..WARM_UP {
        cycle(&s, &mut nsc, n, n % 2 == 1).await?;
    }
    let pid = fwd.child.id();
    let fds0 = settled_fds(pid).await?;
    let (rss0, vfs0) = (rss_kib(pid)?, vf_state(&s, fwd).await?);
    let started = std::time::Instant::now();
    for n in 0..kernel_cycles + vfio_cycles {
        // VFIO cycles spread among the KERNEL ones.
        let vfio = vfio_cycles > 0 && n % 5 == 4;
        cycle(&s, &mut nsc, WARM_UP + n, vfio).await?;
    }
    let took = started.elapsed();
    let fds1 = settled_fds(pid).await?;
    let (rss1, vfs1) = (rss_kib(pid)?, vf_state(&s, fwd).await?);
    let grew = rss1.saturating_sub(rss0);
    r.check(
        "soak",
        if fds1 == fds0 && grew <= RSS_SLACK_KIB && vfs1 == vfs0 {
            Ok(format!(
                "{kernel_cycles} KERNEL + {vfio_cycles} VFIO cycles in {:.1} s: {fds1} open fds \
                 before and after, RSS {rss0} -> {rss1} KiB, every VF as it was",
                took.as_secs_f64()
            ))
        } else {
            Err(format!(
                "fds {fds0} -> {fds1}, RSS {rss0} -> {rss1} KiB (slack {RSS_SLACK_KIB}), VFs \
                 {vfs0:?} -> {vfs1:?}"
            ))
        },
    );
    Ok(())
}
