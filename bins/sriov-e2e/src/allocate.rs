//! `sriov-e2e allocate`: VFIO given at kubelet's Allocate, for a real
//! container runtime to apply (the VM test's runc check).
//!
//! The forwarder runs with `NSM_CGROUP_PATH` on the node's cgroup v2 mount,
//! so it binds each token to a VF at Allocate. This mode allocates one
//! device, checks the VF it was bound to is on vfio-pci, and prints the
//! answer's device specs, one `DEVICE host=… container=… permissions=…`
//! line each, then `BOUND vf=… group=… token=…` and `READY`. It then waits
//! for one line (or end of file) on stdin: meanwhile the caller builds and
//! runs its container from those lines. After that a VFIO Request with the
//! token must get that same VF, Close must leave it on vfio-pci (the pod
//! still holds it), and once pod-resources no longer lists the pod the VF
//! must be back on the driver it had before Allocate.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use sriov_api::kubelet::deviceplugin::v1beta1::{AllocateRequest, ContainerAllocateRequest, Empty};
use sriov_api::nsm::registry::NetworkServiceEndpoint;
use sriov_deviceplugin::fake::FakeKubelet;
use sriov_pci::{PciAddress, Sysfs};

use crate::checks::Report;
use crate::forwarder::{self, Paths};
use crate::nsc;
use crate::{Options, client};

/// Options of the `allocate` mode.
#[derive(Debug)]
pub(crate) struct AllocateOptions {
    forwarder: PathBuf,
    config: PathBuf,
    work: PathBuf,
    sysfs_root: PathBuf,
    resource: String,
    /// The node's cgroup v2 mount (`NSM_CGROUP_PATH`).
    cgroup_root: PathBuf,
    /// The node's /dev/vfio (`NSM_VFIO_PATH`).
    vfio_path: PathBuf,
    /// The `cgroupDir` the VFIO Request carries.
    cgroup_dir: String,
}

pub(crate) const USAGE: &str = "usage: sriov-e2e allocate --forwarder PATH --config FILE --work DIR \
[--sysfs-root DIR] [--resource NAME] [--cgroup-root DIR] [--vfio-path DIR] [--cgroup-dir DIR]";

/// The pod pod-resources reports as holding the token until the release.
const POD: &str = "pod-runc";

/// Device specs name host paths (kubelet and the runtime resolve them on the
/// host), whatever directory the forwarder reads the nodes through.
const HOST_VFIO: &str = "/dev/vfio";

pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<AllocateOptions, String> {
    let mut o = AllocateOptions {
        forwarder: PathBuf::new(),
        config: PathBuf::new(),
        work: PathBuf::new(),
        sysfs_root: "/sys".into(),
        resource: "worker.domain/1G".into(),
        cgroup_root: "/sys/fs/cgroup".into(),
        vfio_path: "/dev/vfio".into(),
        cgroup_dir: "vmtest-runc/*".into(),
    };
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--forwarder" => o.forwarder = value()?.into(),
            "--config" => o.config = value()?.into(),
            "--work" => o.work = value()?.into(),
            "--sysfs-root" => o.sysfs_root = value()?.into(),
            "--resource" => o.resource = value()?,
            "--cgroup-root" => o.cgroup_root = value()?.into(),
            "--vfio-path" => o.vfio_path = value()?.into(),
            "--cgroup-dir" => o.cgroup_dir = value()?,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.forwarder.as_os_str().is_empty()
        || o.config.as_os_str().is_empty()
        || o.work.as_os_str().is_empty()
    {
        return Err(USAGE.into());
    }
    Ok(o)
}

pub(crate) async fn run(o: AllocateOptions) -> Report {
    let mut r = Report::default();
    if let Err(e) = scenario(&o, &mut r).await {
        r.check("allocate-scenario", Err(e));
    }
    r
}

/// Every VF of the configured PFs with its driver.
fn vf_drivers(
    sysfs: &Sysfs,
    config: &std::path::Path,
) -> Result<HashMap<PciAddress, Option<String>>, String> {
    let cfg = sriov_config::SriovConfig::load(config).map_err(|e| e.to_string())?;
    let pfs: Vec<PciAddress> = cfg.config.physical_functions.keys().copied().collect();
    let mut drivers = HashMap::new();
    for pf in sysfs.discover_pfs(&pfs).map_err(|e| e.to_string())? {
        for vf in pf.vfs {
            let d = sysfs.driver(vf.address).map_err(|e| e.to_string())?;
            drivers.insert(vf.address, d);
        }
    }
    Ok(drivers)
}

/// The VF whose IOMMU group is `group`.
fn vf_of_group(sysfs: &Sysfs, vfs: &[PciAddress], group: u32) -> Option<PciAddress> {
    vfs.iter()
        .copied()
        .find(|vf| sysfs.iommu_group(*vf).ok().flatten() == Some(group))
}

/// The VF's iommufd cdev under /dev/vfio/devices, when the kernel made one:
/// without `CONFIG_VFIO_DEVICE_CDEV` (Debian's 6.12) `vfio-dev/vfioN` is
/// still in sysfs, but without the `dev` attribute a character device has.
fn cdev_of(sysfs_root: &std::path::Path, vf: PciAddress) -> Option<String> {
    let dir = sysfs_root.join(format!("bus/pci/devices/{vf}/vfio-dev"));
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    entry.path().join("dev").is_file().then(|| {
        format!(
            "{HOST_VFIO}/devices/{}",
            entry.file_name().to_string_lossy()
        )
    })
}

async fn scenario(o: &AllocateOptions, r: &mut Report) -> Result<(), String> {
    let p = Paths::under(&o.work, Some(&o.vfio_path));
    crate::spire::start(&o.work.join("spire")).await?;
    for d in [&p.device_plugins, &p.pod_resources, &p.state] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let sysfs = Sysfs::under_root(&o.sysfs_root);
    let before = vf_drivers(&sysfs, &o.config)?;
    let vfs: Vec<PciAddress> = before.keys().copied().collect();

    let kubelet =
        FakeKubelet::start(&p.device_plugins, &p.pod_resources).map_err(|e| e.to_string())?;
    let nsmgr = crate::spire::nsmgr(&p.nsm_socket).await?;
    nsmgr.insert_endpoint(NetworkServiceEndpoint {
        name: "endpoint-1".into(),
        network_service_names: vec!["sriov-ns".into()],
        url: "unix:///endpoint-1.sock".into(),
        ..Default::default()
    });
    let fwd_opts = Options {
        forwarder: o.forwarder.clone(),
        sysfs_root: o.sysfs_root.clone(),
        config: o.config.clone(),
        work: o.work.clone(),
        resource: o.resource.clone(),
        veth: false,
        vfio: true,
        vfio_path: Some(o.vfio_path.clone()),
        ping: None,
        vf_config: false,
        hostile: false,
        restart: false,
        chaos: 0,
        soak: 0,
        race: 0,
        netns_by_path: false,
        insecure: false,
        telemetry: false,
        ops: false,
    };
    let cgroup_root = o.cgroup_root.to_string_lossy().into_owned();
    let mut fwd = forwarder::start_with(
        &fwd_opts,
        &p,
        None,
        &[("NSM_CGROUP_PATH", cgroup_root.as_str())],
    )?;
    let log = p.state.with_file_name("forwarder.log");

    let registered = tokio::time::timeout(
        Duration::from_secs(30),
        kubelet.wait_registered(&o.resource),
    )
    .await;
    if !r.check(
        "v2-device-plugin-registered",
        registered
            .map(|reg| format!("{} at {}", reg.resource_name, reg.endpoint))
            .map_err(|_| format!("no registration within 30 s (see {})", log.display())),
    ) {
        return Ok(());
    }
    let said_v2 = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("kubelet's Allocate");
    r.check(
        "v2-mode-detected",
        if said_v2 {
            Ok(format!(
                "{} is cgroup v2: VFIO at Allocate",
                o.cgroup_root.display()
            ))
        } else {
            Err(format!(
                "the forwarder did not log VFIO at Allocate (see {})",
                log.display()
            ))
        },
    );
    let mut plugin = kubelet
        .plugin(&o.resource)
        .await
        .map_err(|e| e.to_string())?;
    let mut law = plugin
        .list_and_watch(Empty {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), law.message())
        .await
        .map_err(|_| "no ListAndWatch answer within 10 s".to_string())?
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let id = first
        .devices
        .iter()
        .find(|d| d.health == "Healthy")
        .map(|d| d.id.clone())
        .ok_or("no healthy device advertised")?;

    let alloc = plugin
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![id],
            }],
        })
        .await
        .map_err(|e| format!("Allocate: {}", e.message()))?
        .into_inner();
    let answer = alloc
        .container_responses
        .into_iter()
        .next()
        .unwrap_or_default();
    let env_name = format!("NSM_SRIOV_TOKENS_{}", o.resource);
    let token = answer
        .envs
        .get(&env_name)
        .cloned()
        .ok_or_else(|| format!("no {env_name} in the Allocate answer"))?;
    kubelet.set_pod(POD, &o.resource, std::slice::from_ref(&token));

    // The group node among the specs names the VF the token was bound to.
    let group = answer.devices.iter().find_map(|d| {
        d.host_path
            .strip_prefix(&format!("{HOST_VFIO}/"))
            .and_then(|g| g.parse::<u32>().ok())
    });
    let vf = group.and_then(|g| vf_of_group(&sysfs, &vfs, g));
    let (Some(group), Some(vf)) = (group, vf) else {
        r.check(
            "allocate-binds-vf",
            Err(format!(
                "no VF's group node among the device specs {:?}",
                answer.devices
            )),
        );
        return Ok(());
    };
    let driver = sysfs.driver(vf).map_err(|e| e.to_string())?;
    let mut want = vec![format!("{HOST_VFIO}/vfio"), format!("{HOST_VFIO}/{group}")];
    want.extend(cdev_of(&o.sysfs_root, vf));
    let hosts: Vec<&str> = answer
        .devices
        .iter()
        .map(|d| d.host_path.as_str())
        .collect();
    let missing: Vec<&String> = want
        .iter()
        .filter(|w| !hosts.contains(&w.as_str()))
        .collect();
    let not_rw: Vec<&str> = answer
        .devices
        .iter()
        .filter(|d| d.permissions != "rw")
        .map(|d| d.host_path.as_str())
        .collect();
    if !r.check(
        "allocate-binds-vf",
        match driver.as_deref() {
            Some("vfio-pci") if missing.is_empty() && not_rw.is_empty() => Ok(format!(
                "VF {vf} (group {group}) on vfio-pci at Allocate; specs {}",
                hosts.join(" ")
            )),
            Some("vfio-pci") => Err(format!(
                "specs {hosts:?} lack {missing:?} or are not rw: {not_rw:?}"
            )),
            other => Err(format!("VF {vf} is on {other:?} after Allocate")),
        },
    ) {
        return Ok(());
    }

    // The caller's half: build a container from these lines.
    {
        let mut out = std::io::stdout().lock();
        for d in &answer.devices {
            let _ = writeln!(
                out,
                "DEVICE host={} container={} permissions={}",
                d.host_path, d.container_path, d.permissions
            );
        }
        let _ = writeln!(out, "BOUND vf={vf} group={group} token={token}");
        let _ = writeln!(out, "READY");
        let _ = out.flush();
    }
    // Any line, or the caller going away, moves on: the release below
    // must run either way so the VF is not left on vfio-pci.
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)
    })
    .await;

    // The NSM Request with that token gets that VF.
    let mut nsc = nsc::reconnect(&p.listen_socket).await?;
    let params = vec![
        ("tokenID", token.clone()),
        ("cgroupDir", o.cgroup_dir.clone()),
    ];
    match nsc
        .request(client::request("conn-runc", "VFIO", &params, false))
        .await
    {
        Ok(c) => {
            let conn = c.into_inner();
            let m = conn.mechanism.clone().unwrap_or_default();
            let got = m.parameters.get("pciAddress").cloned().unwrap_or_default();
            let got_group = m.parameters.get("iommuGroup").cloned().unwrap_or_default();
            r.check(
                "vfio-request-gets-allocated-vf",
                if got == vf.to_string() && got_group == group.to_string() {
                    Ok(format!("VF {got}, iommuGroup {got_group}"))
                } else {
                    Err(format!(
                        "got VF {got:?} group {got_group:?}, bound {vf} group {group}"
                    ))
                },
            );
            let closed = nsc.close(conn).await.map(|_| ());
            let after = sysfs.driver(vf).map_err(|e| e.to_string())?;
            r.check(
                "vfio-close-keeps-vf-for-pod",
                match (closed, after.as_deref()) {
                    (Ok(()), Some("vfio-pci")) => Ok(format!(
                        "VF {vf} stays on vfio-pci while {POD} holds the token"
                    )),
                    (Ok(()), other) => Err(format!("VF {vf} is on {other:?} after Close")),
                    (Err(e), _) => Err(format!("Close: {}", e.message())),
                },
            );
        }
        Err(e) => {
            r.check(
                "vfio-request-gets-allocated-vf",
                Err(format!("{}: {}", e.code(), e.message())),
            );
        }
    }

    // The pod goes away: pod-resources stops listing it.
    kubelet.remove_pod(POD);
    let home = before.get(&vf).cloned().flatten();
    let restored = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let now = sysfs.driver(vf).ok().flatten();
            if now.is_some() && now == home {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    r.check(
        "release-returns-vf",
        match restored {
            Ok(()) => Ok(format!(
                "VF {vf} back on {} once no pod holds the token",
                home.as_deref().unwrap_or_default()
            )),
            Err(_) => Err(format!(
                "VF {vf} is on {:?} 30 s after the pod went, want {home:?}",
                sysfs.driver(vf).ok().flatten()
            )),
        },
    );

    let status = fwd.terminate()?;
    r.check(
        "v2-graceful-shutdown",
        if status.success() {
            Ok("exit 0 on SIGTERM".into())
        } else {
            Err(format!("{status}"))
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> impl Iterator<Item = String> {
        a.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn parse_defaults_to_the_node_cgroup_v2_mount_and_dev_vfio() {
        let o = parse(args(&["--forwarder", "f", "--config", "c", "--work", "w"])).unwrap();
        assert_eq!(o.cgroup_root, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(o.vfio_path, PathBuf::from("/dev/vfio"));
        assert_eq!(o.resource, "worker.domain/1G");
        let o = parse(args(&[
            "--forwarder",
            "f",
            "--config",
            "c",
            "--work",
            "w",
            "--cgroup-root",
            "/cg",
            "--cgroup-dir",
            "pod/*",
        ]))
        .unwrap();
        assert_eq!(o.cgroup_root, PathBuf::from("/cg"));
        assert_eq!(o.cgroup_dir, "pod/*");
    }

    #[test]
    fn parse_refuses_missing_and_unknown_arguments_with_the_usage() {
        let e = parse(args(&["--forwarder", "f"])).unwrap_err();
        assert!(e.contains("usage: sriov-e2e allocate"), "{e}");
        let e = parse(args(&["--forwarder", "f", "--bogus"])).unwrap_err();
        assert!(
            e.contains("--bogus") && e.contains("usage: sriov-e2e allocate"),
            "{e}"
        );
    }

    #[test]
    fn cdev_counts_only_with_a_device_number() {
        let tmp = tempfile::tempdir().unwrap();
        let vf: PciAddress = "0000:01:10.0".parse().unwrap();
        let entry = tmp
            .path()
            .join(format!("bus/pci/devices/{vf}/vfio-dev/vfio0"));
        std::fs::create_dir_all(&entry).unwrap();
        assert_eq!(cdev_of(tmp.path(), vf), None);
        std::fs::write(entry.join("dev"), "239:0\n").unwrap();
        assert_eq!(
            cdev_of(tmp.path(), vf).as_deref(),
            Some("/dev/vfio/devices/vfio0")
        );
    }
}
