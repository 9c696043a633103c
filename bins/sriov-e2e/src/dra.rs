//! `sriov-e2e dra`: the plugin's DRA mode against stand-ins for kubelet and the API server.
//!
//! The API server is `sriov-dra`'s `FakeApiServer` (resource.k8s.io/v1 ResourceSlices and
//! ResourceClaims, checked against k8s-openapi's types); kubelet is played here: the plugin
//! watcher's GetInfo and NotifyRegistrationStatus, NodePrepareResources and
//! NodeUnprepareResources in v1 and v1beta1, and the KEP-4680 health stream. Steps: the
//! plugin registers as a DRAPlugin and publishes every expected device with dra-driver-sriov's
//! attributes; a claim asking vfio-pci is prepared (the VF on vfio-pci, a CDI spec naming its
//! group's device node), twice with one answer; the plugin is killed and restarted, and
//! Unprepare then restores the VF's driver and removes the spec; an unknown claim unprepares
//! fine; a claim with no config keeps the kernel driver (v1beta1); SIGTERM ends it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::resource::v1::ResourceClaim;
use sriov_api::kubelet::dra::{health_v1alpha1 as health, v1, v1beta1};
use sriov_api::kubelet::pluginregistration as reg;
use sriov_dra::testing::FakeApiServer;
use sriov_pci::{PciAddress, Sysfs};

use crate::checks::{Report, say};

/// Options of the `dra` mode.
#[derive(Debug, Default)]
pub(crate) struct DraOptions {
    plugin: PathBuf,
    config: PathBuf,
    sysfs_root: PathBuf,
    work: PathBuf,
    /// How many devices the slices must hold.
    expect: usize,
    /// Check that the CDI spec's device nodes exist (a real /dev).
    check_dev_nodes: bool,
    /// `--reload FILE=COUNT`: at the end, this config replaces `config` (renamed over it, as
    /// a ConfigMap update does) and the slices must come to hold COUNT devices.
    reload: Option<(PathBuf, usize)>,
}

pub(crate) const USAGE: &str = "usage: sriov-e2e dra --plugin PATH --config FILE --sysfs-root DIR --work DIR --expect COUNT [--check-dev-nodes] [--reload FILE=COUNT]";

const DRIVER: &str = sriov_dra::DEFAULT_DRIVER_NAME;
const NODE: &str = "e2e-node";

pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<DraOptions, String> {
    let mut o = DraOptions {
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
            "--expect" => {
                let v = value()?;
                o.expect = v
                    .parse()
                    .map_err(|_| format!("--expect {v}: not a number"))?;
            }
            "--check-dev-nodes" => o.check_dev_nodes = true,
            "--reload" => {
                let v = value()?;
                let (file, n) = v
                    .rsplit_once('=')
                    .ok_or_else(|| format!("--reload {v}: want FILE=COUNT"))?;
                let n = n
                    .parse()
                    .map_err(|_| format!("--reload {v}: COUNT is not a number"))?;
                o.reload = Some((file.into(), n));
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.plugin.as_os_str().is_empty()
        || o.config.as_os_str().is_empty()
        || o.work.as_os_str().is_empty()
        || o.expect == 0
    {
        return Err(USAGE.into());
    }
    Ok(o)
}

pub(crate) async fn run(o: DraOptions) -> Report {
    let mut r = Report::default();
    if let Err(e) = scenario(&o, &mut r).await {
        r.check("dra-scenario", Err(e));
    }
    r
}

struct Dirs {
    registry: PathBuf,
    plugin: PathBuf,
    cdi: PathBuf,
    devinfo: PathBuf,
}

impl Dirs {
    fn new(work: &Path) -> Result<Self, String> {
        let d = Self {
            registry: work.join("plugins_registry"),
            plugin: work.join("plugins").join(DRIVER),
            cdi: work.join("cdi"),
            devinfo: work.join("devinfo"),
        };
        for p in [&d.registry, &d.cdi, &d.devinfo] {
            std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        Ok(d)
    }
}

fn start(o: &DraOptions, d: &Dirs, kubeconfig: &Path, round: u32) -> Result<Child, String> {
    let log = std::fs::File::create(o.work.join(format!("sriov-device-plugin-dra.{round}.log")))
        .map_err(|e| e.to_string())?;
    Command::new(&o.plugin)
        .arg("dra")
        .arg("--node-name")
        .arg(NODE)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--config-file")
        .arg(&o.config)
        .arg("--sysfs-root")
        .arg(&o.sysfs_root)
        .arg("--plugins-registry-dir")
        .arg(&d.registry)
        .arg("--plugin-dir")
        .arg(&d.plugin)
        .arg("--cdi-dir")
        .arg(&d.cdi)
        .arg("--devinfo-dir")
        .arg(&d.devinfo)
        .arg("--link-health=none")
        // Rescans every second, so the held-device check below sees at least one.
        .arg("--rescan-interval=1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", o.plugin.display()))
}

/// Plays kubelet's plugin watcher: GetInfo on the registration socket, then the verdict.
async fn register(d: &Dirs) -> Result<reg::PluginInfo, String> {
    let sock = d.registry.join(format!("{DRIVER}-reg.sock"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let channel = loop {
        if sock.exists()
            && let Ok(c) = sriov_deviceplugin::connect_unix(&sock).await
        {
            break c;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{} never appeared", sock.display()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut client = reg::registration_client::RegistrationClient::new(channel);
    let info = client
        .get_info(reg::InfoRequest {})
        .await
        .map_err(|e| format!("GetInfo: {e}"))?
        .into_inner();
    client
        .notify_registration_status(reg::RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        })
        .await
        .map_err(|e| format!("NotifyRegistrationStatus: {e}"))?;
    Ok(info)
}

fn expect_info(info: &reg::PluginInfo, d: &Dirs) -> Result<String, String> {
    let endpoint = d.plugin.join("dra.sock");
    if info.r#type != reg::DRA_PLUGIN_TYPE
        || info.name != DRIVER
        || Path::new(&info.endpoint) != endpoint
        || info.supported_versions != [v1::SERVICE, v1beta1::SERVICE]
    {
        return Err(format!("unexpected PluginInfo {info:?}"));
    }
    Ok(format!(
        "{} {} at {} ({})",
        info.r#type,
        info.name,
        info.endpoint,
        info.supported_versions.join(", ")
    ))
}

/// The attributes Multus, DeviceClasses and CEL selectors written for dra-driver-sriov read.
const ATTRIBUTES: [&str; 6] = [
    "sriovnetwork.k8snetworkplumbingwg.io/pciAddress",
    "sriovnetwork.k8snetworkplumbingwg.io/resourceName",
    "sriovnetwork.k8snetworkplumbingwg.io/vfID",
    "k8s.cni.cncf.io/deviceID",
    "k8s.cni.cncf.io/resourceName",
    "resource.kubernetes.io/pciBusID",
];

/// Waits for slices holding `want` devices; returns (device name, pci address) pairs.
async fn published(api: &FakeApiServer, want: usize) -> Result<Vec<(String, String)>, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let slices = api.slices();
        let devices: Vec<_> = slices
            .iter()
            .filter(|s| s.spec.driver == DRIVER && s.spec.node_name.as_deref() == Some(NODE))
            .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
            .collect();
        if devices.len() == want {
            let mut out = Vec::new();
            for dev in &devices {
                let attrs = dev.attributes.clone().unwrap_or_default();
                for a in ATTRIBUTES {
                    if !attrs.contains_key(a) {
                        return Err(format!("device {} has no attribute {a}", dev.name));
                    }
                }
                let pci = attrs
                    .get("sriovnetwork.k8snetworkplumbingwg.io/pciAddress")
                    .and_then(|v| v.string.clone())
                    .ok_or_else(|| format!("device {}: pciAddress is not a string", dev.name))?;
                out.push((dev.name.clone(), pci));
            }
            return Ok(out);
        }
        if tokio::time::Instant::now() > deadline {
            let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
            return Err(format!(
                "{} slice(s) hold {} devices, want {want}: {names:?}",
                slices.len(),
                devices.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A claim allocated to `device` on our node, optionally configured with `vf_driver`.
fn claim(
    uid: &str,
    name: &str,
    device: &str,
    vf_driver: Option<&str>,
) -> Result<ResourceClaim, String> {
    let config = match vf_driver {
        Some(driver) => serde_json::json!([{
            "source": "FromClaim",
            "requests": ["vf"],
            "opaque": {
                "driver": DRIVER,
                "parameters": {
                    "apiVersion": "sriovnetwork.k8snetworkplumbingwg.io/v1alpha1",
                    "kind": "VfConfig",
                    "driver": driver,
                    "ifName": "net1",
                },
            },
        }]),
        None => serde_json::json!([]),
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"namespace": "e2e", "name": name, "uid": uid},
        "spec": {"devices": {"requests": [{"name": "vf", "exactly": {"deviceClassName": "sriov-vf"}}]}},
        "status": {"allocation": {"devices": {
            "results": [{"request": "vf", "driver": DRIVER, "pool": NODE, "device": device}],
            "config": config,
        }}},
    }))
    .map_err(|e| format!("building the claim: {e}"))
}

async fn dra_channel(d: &Dirs) -> Result<sriov_api::tonic::transport::Channel, String> {
    sriov_deviceplugin::connect_unix(&d.plugin.join("dra.sock"))
        .await
        .map_err(|e| format!("dialing dra.sock: {e}"))
}

fn v1_claim(uid: &str, name: &str) -> v1::Claim {
    v1::Claim {
        namespace: "e2e".into(),
        uid: uid.into(),
        name: name.into(),
    }
}

async fn prepare_v1(
    d: &Dirs,
    uid: &str,
    name: &str,
) -> Result<v1::NodePrepareResourceResponse, String> {
    let mut c = v1::dra_plugin_client::DraPluginClient::new(dra_channel(d).await?);
    let mut answer = c
        .node_prepare_resources(v1::NodePrepareResourcesRequest {
            claims: vec![v1_claim(uid, name)],
        })
        .await
        .map_err(|e| format!("NodePrepareResources: {e}"))?
        .into_inner();
    let one = answer
        .claims
        .remove(uid)
        .ok_or_else(|| format!("no answer for claim {uid}"))?;
    if !one.error.is_empty() {
        return Err(format!("claim {uid}: {}", one.error));
    }
    Ok(one)
}

async fn unprepare_v1(d: &Dirs, uid: &str, name: &str) -> Result<(), String> {
    let mut c = v1::dra_plugin_client::DraPluginClient::new(dra_channel(d).await?);
    let mut answer = c
        .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
            claims: vec![v1_claim(uid, name)],
        })
        .await
        .map_err(|e| format!("NodeUnprepareResources: {e}"))?
        .into_inner();
    match answer.claims.remove(uid) {
        Some(a) if a.error.is_empty() => Ok(()),
        Some(a) => Err(format!("claim {uid}: {}", a.error)),
        None => Err(format!("no answer for claim {uid}")),
    }
}

/// The CDI device `id` (`vendor/class=name`) in the specs under `cdi`: its device node paths
/// and env.
fn cdi_device(cdi: &Path, id: &str) -> Result<(PathBuf, Vec<String>, Vec<String>), String> {
    let (kind, name) = id
        .split_once('=')
        .ok_or_else(|| format!("CDI id {id} has no '='"))?;
    for entry in std::fs::read_dir(cdi).map_err(|e| format!("{}: {e}", cdi.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(spec) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if spec["kind"] != kind {
            continue;
        }
        for dev in spec["devices"].as_array().into_iter().flatten() {
            if dev["name"] != name {
                continue;
            }
            let strings = |v: &serde_json::Value, key: Option<&str>| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| match key {
                        Some(k) => x[k].as_str().map(str::to_string),
                        None => x.as_str().map(str::to_string),
                    })
                    .collect()
            };
            let edits = &dev["containerEdits"];
            return Ok((
                path,
                strings(&edits["deviceNodes"], Some("path")),
                strings(&edits["env"], None),
            ));
        }
    }
    Err(format!("no CDI spec under {} names {id}", cdi.display()))
}

fn driver_of(sysfs: &Sysfs, pci: &str) -> Result<Option<String>, String> {
    let a: PciAddress = pci.parse().map_err(|e| format!("{pci}: {e}"))?;
    sysfs.driver(a).map_err(|e| format!("{pci}: {e}"))
}

async fn health_says(d: &Dirs, want: usize) -> Result<String, String> {
    let mut c =
        health::dra_resource_health_client::DraResourceHealthClient::new(dra_channel(d).await?);
    let mut stream = c
        .node_watch_resources(health::NodeWatchResourcesRequest {})
        .await
        .map_err(|e| format!("NodeWatchResources: {e}"))?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .map_err(|_| "no health message within 10 s".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or("health stream ended")?;
    let healthy = first
        .devices
        .iter()
        .filter(|h| h.health == health::HealthStatus::Healthy as i32)
        .filter(|h| h.device.as_ref().is_some_and(|id| id.pool_name == NODE))
        .count();
    if healthy == want && first.devices.len() == want {
        Ok(format!("{want} devices HEALTHY in pool {NODE}"))
    } else {
        Err(format!(
            "want {want} healthy devices, got {:?}",
            first.devices
        ))
    }
}

fn stop(child: &mut Child) -> Result<String, String> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).map_err(|e| e.to_string())?),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return if status.success() {
                Ok("exit 0 on SIGTERM".into())
            } else {
                Err(format!("{status} on SIGTERM"))
            };
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return Err("still running 20 s after SIGTERM".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn scenario(o: &DraOptions, r: &mut Report) -> Result<(), String> {
    let d = Dirs::new(&o.work)?;
    let api = FakeApiServer::start().await.map_err(|e| e.to_string())?;
    let kubeconfig = api.kubeconfig(&o.work).map_err(|e| e.to_string())?;
    let sysfs = Sysfs::under_root(&o.sysfs_root);
    let mut child = start(o, &d, &kubeconfig, 1)?;

    let info = register(&d).await;
    r.check("dra-registered", info.and_then(|i| expect_info(&i, &d)));
    let devices = published(&api, o.expect).await;
    let devices = match devices {
        Ok(devs) => {
            r.check(
                "dra-slices-published",
                Ok(format!(
                    "{} devices with dra-driver-sriov's attributes in {} slice(s)",
                    devs.len(),
                    api.slices().len()
                )),
            );
            devs
        }
        Err(e) => {
            r.check("dra-slices-published", Err(e));
            let _ = child.kill();
            return Ok(());
        }
    };
    r.check("dra-health", health_says(&d, o.expect).await);

    let [(dev_a, pci_a), (dev_b, pci_b), ..] = devices.as_slice() else {
        let _ = child.kill();
        return Err("the scenario needs at least two devices".into());
    };
    let before_a = driver_of(&sysfs, pci_a)?;
    let uid_a = "5b1e9f4e-7f8a-4c1e-9d55-0000000000a1";
    api.put_claim(claim(uid_a, "vfio-claim", dev_a, Some("vfio-pci"))?);
    let first = prepare_v1(&d, uid_a, "vfio-claim").await;
    let cdi_id = format!("{DRIVER}/vf={uid_a}-{dev_a}");
    let ok = r.check(
        "dra-prepare-vfio",
        first.clone().and_then(|a| {
            let ids: Vec<&String> = a.devices.iter().flat_map(|x| &x.cdi_device_ids).collect();
            if ids != [&cdi_id] || a.devices.first().map(|x| x.device_name.as_str()) != Some(dev_a)
            {
                return Err(format!("answer {a:?}, want CDI id {cdi_id}"));
            }
            let now = driver_of(&sysfs, pci_a)?;
            if now.as_deref() != Some("vfio-pci") {
                return Err(format!("{pci_a} is on {now:?}, not vfio-pci"));
            }
            Ok(format!("{pci_a} on vfio-pci, CDI {cdi_id}"))
        }),
    );
    if ok {
        r.check(
            "dra-cdi-spec",
            cdi_device(&d.cdi, &cdi_id).and_then(|(path, nodes, env)| {
                let group = nodes
                    .iter()
                    .find(|n| n.starts_with("/dev/vfio/") && n.as_str() != "/dev/vfio/vfio")
                    .ok_or_else(|| {
                        format!("{}: no /dev/vfio/<group> node in {nodes:?}", path.display())
                    })?;
                if !nodes.iter().any(|n| n == "/dev/vfio/vfio") {
                    return Err(format!(
                        "{}: no /dev/vfio/vfio in {nodes:?}",
                        path.display()
                    ));
                }
                if o.check_dev_nodes && !Path::new(group).exists() {
                    return Err(format!("{group} does not exist"));
                }
                if !env
                    .iter()
                    .any(|e| e.starts_with("PCIDEVICE_") && e.ends_with(pci_a.as_str()))
                {
                    return Err(format!("no PCIDEVICE_* env naming {pci_a} in {env:?}"));
                }
                Ok(format!(
                    "{} names {group}{}",
                    path.display(),
                    if o.check_dev_nodes { " (exists)" } else { "" }
                ))
            }),
        );
    }
    // The VF is now on vfio-pci, which a `drivers` selector may not take: it stays published
    // while the claim holds it.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    r.check(
        "dra-held-device-stays-published",
        published(&api, o.expect).await.and_then(|devs| {
            if devs.iter().any(|(name, _)| name == dev_a) {
                Ok(format!(
                    "{dev_a} still published after rescans, on vfio-pci"
                ))
            } else {
                Err(format!("{dev_a} left the slices while prepared"))
            }
        }),
    );
    let again = prepare_v1(&d, uid_a, "vfio-claim").await;
    r.check(
        "dra-prepare-idempotent",
        match (&first, &again) {
            (Ok(a), Ok(b)) if a == b => Ok("the same answer, the VF untouched".into()),
            (a, b) => Err(format!("first {a:?}, second {b:?}")),
        },
    );

    // A crash between prepare and unprepare loses nothing.
    let _ = child.kill();
    let _ = child.wait();
    let mut child = start(o, &d, &kubeconfig, 2)?;
    r.check(
        "dra-restarted",
        register(&d).await.map(|_| "registered again".into()),
    );
    // Restarted with the VF still on vfio-pci, which its pool's selector may not take: the
    // checkpoint keeps it published. (The slices outlive the first plugin: give the new
    // one time to reconcile them, which would drop the VF if it forgot it.)
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    r.check(
        "dra-held-device-published-after-restart",
        published(&api, o.expect).await.and_then(|devs| {
            if devs.iter().any(|(name, _)| name == dev_a) {
                Ok(format!("{dev_a} published by the restarted plugin"))
            } else {
                Err(format!("{dev_a} left the slices after the restart"))
            }
        }),
    );
    let undone = unprepare_v1(&d, uid_a, "vfio-claim").await.and_then(|()| {
        let now = driver_of(&sysfs, pci_a)?;
        if now != before_a {
            return Err(format!("{pci_a} is on {now:?}, was on {before_a:?}"));
        }
        if cdi_device(&d.cdi, &cdi_id).is_ok() {
            return Err(format!("the CDI device {cdi_id} is still there"));
        }
        Ok(format!(
            "after a kill and restart: {pci_a} back on {before_a:?}, CDI spec gone"
        ))
    });
    r.check("dra-unprepare-after-restart", undone);
    r.check(
        "dra-unprepare-unknown",
        unprepare_v1(&d, "00000000-0000-0000-0000-00000000dead", "never")
            .await
            .map(|()| "an unknown claim unprepares without error".into()),
    );

    // Kubelet 1.32/1.33: v1beta1; no config keeps the kernel driver.
    let uid_b = "5b1e9f4e-7f8a-4c1e-9d55-0000000000b2";
    api.put_claim(claim(uid_b, "kernel-claim", dev_b, None)?);
    let before_b = driver_of(&sysfs, pci_b)?;
    let beta = async {
        let mut c = v1beta1::dra_plugin_client::DraPluginClient::new(dra_channel(&d).await?);
        let claim = v1beta1::Claim {
            namespace: "e2e".into(),
            uid: uid_b.into(),
            name: "kernel-claim".into(),
        };
        let mut a = c
            .node_prepare_resources(v1beta1::NodePrepareResourcesRequest {
                claims: vec![claim.clone()],
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let one = a.claims.remove(uid_b).ok_or("no answer")?;
        if !one.error.is_empty() || one.devices.len() != 1 {
            return Err(format!("prepare: {one:?}"));
        }
        let now = driver_of(&sysfs, pci_b)?;
        if now != before_b {
            return Err(format!(
                "{pci_b} moved from {before_b:?} to {now:?} with no config"
            ));
        }
        let mut u = c
            .node_unprepare_resources(v1beta1::NodeUnprepareResourcesRequest {
                claims: vec![claim],
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        match u.claims.remove(uid_b) {
            Some(x) if x.error.is_empty() => Ok(format!(
                "{pci_b} prepared and unprepared on {before_b:?} through v1beta1"
            )),
            other => Err(format!("unprepare: {other:?}")),
        }
    };
    r.check("dra-v1beta1-kernel-driver", beta.await);
    if let Some((file, want)) = &o.reload {
        let swapped = o.config.with_extension("next");
        let reloaded = std::fs::copy(file, &swapped)
            .and_then(|_| std::fs::rename(&swapped, &o.config))
            .map_err(|e| format!("replacing {}: {e}", o.config.display()));
        let reloaded = match reloaded {
            Ok(()) => published(&api, *want).await,
            Err(e) => Err(e),
        };
        r.check(
            "dra-reload",
            reloaded.map(|d| format!("the new config's {} devices published, no restart", d.len())),
        );
    }
    say(format!("plugin logs in {}", o.work.display()));
    r.check("dra-graceful-shutdown", stop(&mut child));
    r.check(
        "dra-sockets-removed",
        if d.plugin.join("dra.sock").exists()
            || d.registry.join(format!("{DRIVER}-reg.sock")).exists()
        {
            Err("a socket is still there after exit".into())
        } else {
            Ok("dra.sock and the registration socket removed".into())
        },
    );
    Ok(())
}
