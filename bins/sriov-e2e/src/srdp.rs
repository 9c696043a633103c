//! `sriov-e2e srdp`: the standalone device plugin against the kubelet
//! stand-in: every expected resource registers and advertises its count of
//! healthy devices, Allocate returns the `PCIDEVICE_*` env, SIGTERM stops it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use sriov_api::kubelet::deviceplugin::v1beta1::{AllocateRequest, ContainerAllocateRequest, Empty};
use sriov_deviceplugin::fake::FakeKubelet;

use crate::checks::Report;

/// Options of the `srdp` mode.
#[derive(Debug, Default)]
pub(crate) struct SrdpOptions {
    plugin: PathBuf,
    config: PathBuf,
    sysfs_root: PathBuf,
    work: PathBuf,
    expect: Vec<(String, usize)>,
    /// `--health PF_NETDEV`: also flip device health (`srdp_health.rs`).
    health: Option<String>,
}

pub(crate) const USAGE: &str = "usage: sriov-e2e srdp --plugin PATH --config FILE --sysfs-root DIR --work DIR --expect PREFIX/NAME=COUNT... [--health PF_NETDEV]";

pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<SrdpOptions, String> {
    let mut o = SrdpOptions {
        sysfs_root: "/sys".into(),
        ..Default::default()
    };
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--plugin" => o.plugin = value()?.into(),
            "--config" => o.config = value()?.into(),
            "--sysfs-root" => o.sysfs_root = value()?.into(),
            "--work" => o.work = value()?.into(),
            "--health" => o.health = Some(value()?),
            "--expect" => {
                let v = value()?;
                let (name, n) = v
                    .rsplit_once('=')
                    .ok_or_else(|| format!("--expect {v}: want NAME=COUNT"))?;
                let n = n
                    .parse()
                    .map_err(|_| format!("--expect {v}: COUNT is not a number"))?;
                o.expect.push((name.to_string(), n));
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.plugin.as_os_str().is_empty()
        || o.config.as_os_str().is_empty()
        || o.work.as_os_str().is_empty()
        || o.expect.is_empty()
    {
        return Err(USAGE.into());
    }
    Ok(o)
}

/// SRDP's env name: `PCIDEVICE_` + the resource name upper-cased with `.` and `/` as `_`.
fn env_name(resource: &str) -> String {
    format!(
        "PCIDEVICE_{}",
        resource.to_uppercase().replace(['.', '/'], "_")
    )
}

pub(crate) async fn run(o: SrdpOptions) -> Report {
    let mut r = Report::default();
    if let Err(e) = scenario(&o, &mut r).await {
        r.check("srdp-scenario", Err(e));
    }
    r
}

async fn scenario(o: &SrdpOptions, r: &mut Report) -> Result<(), String> {
    let dp = o.work.join("device-plugins");
    let pr = o.work.join("pod-resources");
    let devinfo = o.work.join("devinfo");
    for d in [&dp, &pr, &devinfo] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let kubelet = FakeKubelet::start(&dp, &pr).map_err(|e| e.to_string())?;
    let log =
        std::fs::File::create(o.work.join("sriov-device-plugin.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(&o.plugin)
        .arg("--config-file")
        .arg(&o.config)
        .arg("--sysfs-root")
        .arg(&o.sysfs_root)
        .arg("--device-plugin-dir")
        .arg(&dp)
        .arg("--plugins-registry-dir")
        .arg(o.work.join("no-plugins-registry"))
        .arg("--pod-resources-socket")
        .arg(pr.join("kubelet.sock"))
        .arg("--devinfo-dir")
        .arg(&devinfo)
        .args(o.health.as_ref().map(|_| "--link-health=netlink"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", o.plugin.display()))?;
    for (name, want) in &o.expect {
        if *want == 0 {
            // As SRDP: a pool with no devices is not offered to kubelet.
            let reg =
                tokio::time::timeout(Duration::from_secs(3), kubelet.wait_registered(name)).await;
            r.check(
                &format!("srdp-empty-not-registered {name}"),
                match reg {
                    Ok(g) => Err(format!("registered with no devices at {}", g.endpoint)),
                    Err(_) => Ok("not offered to kubelet while it has no devices".into()),
                },
            );
            continue;
        }
        let reg =
            tokio::time::timeout(Duration::from_secs(30), kubelet.wait_registered(name)).await;
        if !r.check(
            &format!("srdp-registered {name}"),
            reg.map(|g| format!("endpoint {}", g.endpoint))
                .map_err(|_| "no registration within 30 s".into()),
        ) {
            continue;
        }
        let mut plugin = kubelet.plugin(name).await.map_err(|e| e.to_string())?;
        let mut law = plugin
            .list_and_watch(Empty {})
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), law.message())
            .await
            .map_err(|_| "no ListAndWatch answer".to_string())?
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let healthy: Vec<String> = first
            .devices
            .iter()
            .filter(|d| d.health == "Healthy")
            .map(|d| d.id.clone())
            .collect();
        r.check(
            &format!("srdp-advertises {name}"),
            if healthy.len() == *want {
                Ok(format!("{} healthy: {}", healthy.len(), healthy.join(" ")))
            } else {
                Err(format!(
                    "{} healthy, want {want}: {healthy:?}",
                    healthy.len()
                ))
            },
        );
        let Some(id) = healthy.first().cloned() else {
            continue;
        };
        if let Some(pf) = &o.health {
            crate::srdp_health::scenario(r, &mut law, &o.sysfs_root, pf, &healthy).await?;
        }
        let alloc = plugin
            .allocate(AllocateRequest {
                container_requests: vec![ContainerAllocateRequest {
                    devices_ids: vec![id.clone()],
                }],
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let env = env_name(name);
        let got = alloc
            .container_responses
            .first()
            .and_then(|c| c.envs.get(&env))
            .cloned();
        r.check(
            &format!("srdp-allocate {name}"),
            match got {
                Some(v) if v == id => Ok(format!("{env}={v}")),
                other => Err(format!("{env} is {other:?}, want {id}")),
            },
        );
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| e.to_string())?;
    r.check(
        "srdp-shutdown",
        if status.success() {
            Ok("exit 0 on SIGTERM".into())
        } else {
            Err(format!("{status}"))
        },
    );
    Ok(())
}
