//! `--restart`: the forwarder killed with SIGKILL while it serves a KERNEL
//! connection, then started again on the same state. A Close sent to the
//! new process, and a lease that expires unrefreshed in it, must each bring
//! the VF netdev back from the client's namespace and free the VF: the new
//! process has no chain context for those connections, only the pool's
//! record. A client whose answer the kill lost takes its connection over
//! by asking again.

use std::path::Path;
use std::time::Duration;

use sriov_api::nsm::connection::Connection;
use sriov_netlink::testing::PrivateNetns;
use sriov_pci::PciAddress;

use crate::checks::Report;
use crate::forwarder::{self, Forwarder, Paths};
use crate::nsc;
use crate::{Options, client, inspect};

/// What the scenario works with, from the main flow.
pub(crate) struct Scene<'a> {
    pub(crate) o: &'a Options,
    pub(crate) paths: &'a Paths,
    pub(crate) listen: &'a Path,
    pub(crate) token: &'a str,
    pub(crate) client_ns: &'a PrivateNetns,
    pub(crate) inode_url: String,
    /// Each VF and its netdev name at home.
    pub(crate) vf_names: &'a [(PciAddress, String)],
    /// Sysfs, for VF drivers.
    pub(crate) sysfs: &'a sriov_pci::Sysfs,
    /// The client container's cgroup, for a VFIO connection.
    pub(crate) ctr: &'a Path,
    /// Kubelet, whose pod-resources answer can lose the pod.
    pub(crate) kubelet: &'a sriov_deviceplugin::fake::FakeKubelet,
    /// The pod holding `token`.
    pub(crate) pod: &'a str,
}

/// Lifetime given to the restarted forwarders, so an unrefreshed lease
/// expires within the scenario.
const SHORT_LIFETIME: &str = "3s";

async fn kill_and_restart(o: &Options, paths: &Paths, fwd: &mut Forwarder) -> Result<(), String> {
    kill_and_restart_for(o, paths, fwd, SHORT_LIFETIME).await
}

/// Kill -9, then start again with tokens lasting `lifetime`.
async fn kill_and_restart_for(
    o: &Options,
    paths: &Paths,
    fwd: &mut Forwarder,
    lifetime: &str,
) -> Result<(), String> {
    let _ = fwd.child.kill();
    let _ = fwd.child.wait();
    let netns = fwd.netns.take();
    *fwd = forwarder::start_with(o, paths, netns, &[("NSM_MAX_TOKEN_LIFETIME", lifetime)])?;
    Ok(())
}

async fn request(
    s: &Scene<'_>,
    nsc: &mut crate::nsc::Nsc,
    id: &str,
    name: &str,
) -> Result<(Connection, String), String> {
    let params = vec![
        ("tokenID", s.token.to_string()),
        ("inodeURL", s.inode_url.clone()),
        ("name", name.to_string()),
    ];
    let conn = nsc
        .request(client::request(id, "KERNEL", &params, true))
        .await
        .map_err(|e| format!("{id}: {}: {}", e.code(), e.message()))?
        .into_inner();
    let vf: Option<PciAddress> = conn
        .mechanism
        .as_ref()
        .and_then(|m| m.parameters.get("pciAddress"))
        .and_then(|a| a.parse().ok());
    let home = s
        .vf_names
        .iter()
        .find(|(a, _)| Some(*a) == vf)
        .map(|(_, n)| n.clone())
        .ok_or_else(|| format!("{id}: no known VF in the answer ({vf:?})"))?;
    if inspect::link(s.client_ns.url(), name).await?.is_none() {
        return Err(format!("{id}: {name} is not in the client's namespace"));
    }
    Ok((conn, home))
}

/// Whether the scenario's token is recorded in use (read from the state
/// directory as a restarted process would).
fn token_in_use(s: &Scene<'_>) -> Result<bool, String> {
    let tokens =
        sriov_token_pool::FileStore::read_tokens(&s.paths.state).map_err(|e| e.to_string())?;
    Ok(tokens
        .iter()
        .any(|t| t.id == s.token && matches!(t.state, sriov_token_pool::TokenState::InUse(_))))
}

/// Whether `name` has left the client and `home` is back, down, in the
/// forwarder's namespace, and the VF is free again.
async fn undone(
    s: &Scene<'_>,
    fwd: &Forwarder,
    name: &str,
    home: &str,
) -> Result<Result<String, String>, String> {
    // A Close of a connection this process serves answers before the move
    // home (it runs after the answer), so the verdict waits for it a while.
    let netlink = fwd.netlink()?;
    let deadline = tokio::time::Instant::now() + crate::checks::RETURN_WAIT;
    loop {
        let in_client = inspect::link(s.client_ns.url(), name).await?;
        let at_home = inspect::link_with(&netlink, home).await?;
        let verdict = match (in_client, at_home) {
            // The VF is freed last, after the move home and its driver.
            (None, Some(_)) if token_in_use(s)? => Err(format!("{home} home, its VF not yet free")),
            (None, Some(h)) if !h.up => {
                Ok(format!("{home} back in the forwarder's namespace, down"))
            }
            (Some(c), _) => Err(format!("still in the client: {c}")),
            (None, h) => Err(format!("{home} not back home: {h:?}")),
        };
        if verdict.is_ok() || tokio::time::Instant::now() > deadline {
            return Ok(verdict);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn run(s: Scene<'_>, r: &mut Report, fwd: &mut Forwarder) -> Result<(), String> {
    // 1. Close after a restart.
    let mut nsc = nsc::reconnect(s.listen).await?;
    let (conn, home) = request(&s, &mut nsc, "conn-restart-close", "nsm-r1").await?;
    kill_and_restart(s.o, s.paths, fwd).await?;
    let mut nsc = nsc::reconnect(s.listen).await?;
    let closed = nsc.close(conn).await;
    let verdict = match closed {
        Ok(_) => undone(&s, fwd, "nsm-r1", &home).await?,
        Err(e) => Err(format!("Close: {}: {}", e.code(), e.message())),
    };
    r.check("restart-close-undoes", verdict);

    // 2. Expiry after a restart: the VF is free again (this Request gets
    // it), then nobody refreshes and the process that knew is killed.
    let got = request(&s, &mut nsc, "conn-restart-expiry", "nsm-r2").await;
    let (_, home) = match got {
        Ok(g) => g,
        Err(e) => {
            r.check("restart-vf-reusable", Err(e));
            return Ok(());
        }
    };
    r.check(
        "restart-vf-reusable",
        Ok("the closed connection's token and VF serve a new Request".into()),
    );
    kill_and_restart(s.o, s.paths, fwd).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let verdict = loop {
        let v = undone(&s, fwd, "nsm-r2", &home).await?;
        if v.is_ok() || tokio::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    r.check("restart-expiry-undoes", verdict);

    // 3. VFIO: a Close after a restart revokes the recorded device rules
    // and gives the VF its kernel driver back.
    if s.o.vfio {
        let mut nsc = nsc::reconnect(s.listen).await?;
        let params = vec![
            ("tokenID", s.token.to_string()),
            ("cgroupDir", s.paths.pod_glob(s.ctr)),
        ];
        let conn = nsc
            .request(client::request("conn-restart-vfio", "VFIO", &params, false))
            .await
            .map_err(|e| format!("VFIO request: {}: {}", e.code(), e.message()))?
            .into_inner();
        let vf: Option<PciAddress> = conn
            .mechanism
            .as_ref()
            .and_then(|m| m.parameters.get("pciAddress"))
            .and_then(|a| a.parse().ok());
        let vf = vf.ok_or("VFIO answer without pciAddress")?;
        // Earlier Closes denied into this file too: start it empty, so what
        // is read after the Close is what the restarted process wrote.
        std::fs::write(s.ctr.join("devices.deny"), "").map_err(|e| e.to_string())?;
        kill_and_restart(s.o, s.paths, fwd).await?;
        let mut nsc = nsc::reconnect(s.listen).await?;
        let closed = nsc.close(conn).await;
        let driver = s.sysfs.driver(vf).map_err(|e| e.to_string())?;
        let denied = std::fs::read_to_string(s.ctr.join("devices.deny")).unwrap_or_default();
        r.check(
            "restart-vfio-close-undoes",
            match (closed, driver) {
                (Err(e), _) => Err(format!("Close: {}: {}", e.code(), e.message())),
                (Ok(_), Some(d)) if d != "vfio-pci" && denied.contains(" rw") => Ok(format!(
                    "VF {vf} back on {d}, {} denied again",
                    denied.trim()
                )),
                (Ok(_), d) => Err(format!("VF {vf} on {d:?}, devices.deny {denied:?}")),
            },
        );
    }

    // 4. On real VFs: the client's namespace vanishes, then the forwarder
    // is killed; the kernel hands a real VF netdev back to the initial
    // namespace (a veth stand-in would die with the namespace instead).
    if !s.o.veth {
        vanished_namespace(&s, r, fwd).await?;
    }

    // 5. Tokens live long from here, so no expiry can act instead.
    kill_and_restart_for(s.o, s.paths, fwd, "10m").await?;
    let mut nsc = nsc::reconnect(s.listen).await?;
    // 5a. The answer lost: the forwarder killed after the Request was
    // established, before the client read the answer. The client's retry,
    // the same request without our segment's id, takes the connection over
    // (the answer names the one made before the kill, its netdev still in
    // the client), and its Close undoes it.
    let (lost, home) = request(&s, &mut nsc, "conn-restart-retry", "nsm-rr").await?;
    kill_and_restart_for(s.o, s.paths, fwd, "10m").await?;
    let mut nsc = nsc::reconnect(s.listen).await?;
    let ours = |c: &Connection| {
        c.path
            .as_ref()
            .and_then(|p| p.path_segments.get(1))
            .map(|seg| seg.id.clone())
    };
    let verdict = match request(&s, &mut nsc, "conn-restart-retry", "nsm-rr").await {
        Ok((again, _)) if ours(&again) == ours(&lost) => match nsc.close(again).await {
            Ok(_) => undone(&s, fwd, "nsm-rr", &home)
                .await?
                .map(|u| format!("the retry refreshed the connection made before the kill; {u}")),
            Err(e) => Err(format!("Close: {}: {}", e.code(), e.message())),
        },
        Ok((again, _)) => Err(format!(
            "served as another connection: {:?}, not {:?}",
            ours(&again),
            ours(&lost)
        )),
        Err(e) => Err(e),
    };
    r.check("restart-retry-takes-over", verdict);

    // 5b. The pod goes away while a connection made before a restart uses
    // its token: kubelet's pod-resources stop listing it, and the sweep
    // closes the connection from the record.
    let (_, home) = request(&s, &mut nsc, "conn-restart-pod-gone", "nsm-r5").await?;
    kill_and_restart_for(s.o, s.paths, fwd, "10m").await?;
    s.kubelet.remove_pod(s.pod);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let verdict = loop {
        let v = undone(&s, fwd, "nsm-r5", &home).await?;
        if v.is_ok() || tokio::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    r.check("restart-pod-gone-undoes", verdict);
    Ok(())
}

/// 4. (real VFs only; see `run`).
async fn vanished_namespace(
    s: &Scene<'_>,
    r: &mut Report,
    fwd: &mut Forwarder,
) -> Result<(), String> {
    let mut nsc = nsc::reconnect(s.listen).await?;
    let (o, paths) = (s.o, s.paths);
    let home = {
        let doomed = PrivateNetns::new().map_err(|e| format!("a namespace to lose: {e}"))?;
        let gone_scene = Scene {
            client_ns: &doomed,
            inode_url: crate::checks::file_url(&doomed)?,
            ..*s
        };
        let (_, home) = request(&gone_scene, &mut nsc, "conn-restart-gone", "nsm-r3").await?;
        home
        // `doomed` is dropped here: the client's namespace vanishes.
    };
    kill_and_restart(o, paths, fwd).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let verdict = loop {
        let at_home = inspect::link_with(&fwd.netlink()?, &home).await?;
        match at_home {
            // Freed last: a kill before then would leave the next start to do it.
            Some(h) if !h.up && !token_in_use(s)? => {
                break Ok(format!(
                    "{home} recovered, down, after its namespace vanished"
                ));
            }
            other if tokio::time::Instant::now() > deadline => {
                break Err(format!("{home} not recovered: {other:?}"));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    r.check("restart-vanished-namespace-recovered", verdict);
    Ok(())
}
