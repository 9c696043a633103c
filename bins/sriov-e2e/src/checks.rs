//! The scenario, one check at a time, each printed as PASS or FAIL.

use std::os::unix::fs::FileTypeExt;
use std::time::Duration;

use sriov_api::kubelet::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use sriov_api::kubelet::deviceplugin::v1beta1::{AllocateRequest, ContainerAllocateRequest, Empty};
use sriov_api::nsm::registry::NetworkServiceEndpoint;
use sriov_deviceplugin::fake::FakeKubelet;
use sriov_netlink::NetnsUrl;
use sriov_netlink::testing::PrivateNetns;
use sriov_pci::{PciAddress, Sysfs};

use crate::forwarder::{self, Paths};

/// How long a VF netdev may take to come home after its Close answered
/// (the forwarder moves it in the background, about as long as the move
/// into the client took).
pub(crate) const RETURN_WAIT: Duration = Duration::from_secs(5);
use crate::nsc;
use crate::{Options, client, inspect};

/// PASS/FAIL lines.
#[derive(Debug, Default)]
pub(crate) struct Report {
    passed: usize,
    failed: usize,
}

impl Report {
    pub(crate) fn check(&mut self, name: &str, result: Result<String, String>) -> bool {
        match result {
            Ok(detail) => {
                self.passed += 1;
                println!(
                    "PASS {name}{}",
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {detail}")
                    }
                );
                true
            }
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {why}");
                false
            }
        }
    }

    pub(crate) fn failed(&self) -> usize {
        self.failed
    }

    pub(crate) fn summary(&self) -> String {
        format!("sriov-e2e: {} passed, {} failed", self.passed, self.failed)
    }
}

pub(crate) fn say(line: impl AsRef<str>) {
    println!("  | {}", line.as_ref());
}

async fn within<T>(what: &str, secs: u64, f: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .map_err(|_| format!("no {what} within {secs} s"))
}

/// The VF netdevs of the configured PFs, from sysfs, with their VFs.
fn vf_netdevs(o: &Options) -> Result<(Sysfs, Vec<(PciAddress, String)>), String> {
    let sysfs = Sysfs::under_root(&o.sysfs_root);
    let cfg = sriov_config::SriovConfig::load(&o.config).map_err(|e| e.to_string())?;
    let pfs: Vec<PciAddress> = cfg.config.physical_functions.keys().copied().collect();
    let mut names = Vec::new();
    for pf in sysfs.discover_pfs(&pfs).map_err(|e| e.to_string())? {
        for vf in pf.vfs {
            names.extend(vf.netdevs.into_iter().map(|n| (vf.address, n)));
        }
    }
    Ok((sysfs, names))
}

/// `/dev/vfio/vfio` (10:196, as on a real node) and one node per IOMMU
/// group of the configured VFs (major 511, minor = group), so VFIO
/// requests on a fixture tree find real character devices to stat.
fn fake_dev_vfio(sysfs: &Sysfs, o: &Options, dir: &std::path::Path) -> Result<(), String> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mk = |name: String, major: u64, minor: u64| {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            makedev(major, minor),
        )
        .map_err(|e| format!("mknod {}: {e}", path.display()))
    };
    mk("vfio".into(), 10, 196)?;
    let cfg = sriov_config::SriovConfig::load(&o.config).map_err(|e| e.to_string())?;
    let pfs: Vec<PciAddress> = cfg.config.physical_functions.keys().copied().collect();
    for pf in sysfs.discover_pfs(&pfs).map_err(|e| e.to_string())? {
        for vf in pf.vfs {
            if let Some(g) = vf.iommu_group {
                mk(g.to_string(), 511, u64::from(g))?;
            }
        }
    }
    Ok(())
}

/// Every VF of the configured PFs: the pool of the fixture's resource.
fn pool_vfs(o: &Options, sysfs: &Sysfs) -> Result<std::collections::BTreeSet<PciAddress>, String> {
    let cfg = sriov_config::SriovConfig::load(&o.config).map_err(|e| e.to_string())?;
    let pfs: Vec<PciAddress> = cfg.config.physical_functions.keys().copied().collect();
    Ok(sysfs
        .discover_pfs(&pfs)
        .map_err(|e| e.to_string())?
        .into_iter()
        .flat_map(|pf| pf.vfs.into_iter().map(|vf| vf.address))
        .collect())
}

/// The MAC and VLAN `--vf-config` asks for.
pub(crate) const VF_MAC: &str = "02:00:5e:00:00:42";
pub(crate) const VF_VLAN: i32 = 100;

/// The PF's VF list through our netlink crate (as the forwarder sees it).
pub(crate) async fn pf_vfs(pf: &str) -> Result<Vec<sriov_netlink::VfState>, String> {
    let nl = sriov_netlink::RtNetlink::new().map_err(|e| e.to_string())?;
    nl.vfs(&sriov_netlink::LinkRef::Name(pf.to_string()))
        .await
        .map_err(|e| format!("VF list of {pf}: {e}"))
}

pub(crate) fn file_url(ns: &PrivateNetns) -> Result<String, String> {
    match ns.url() {
        NetnsUrl::File(p) => Ok(format!("file://{}", p.display())),
        other => Err(format!("unexpected namespace URL {other:?}")),
    }
}

pub(crate) async fn run(o: Options) -> Report {
    let mut r = Report::default();
    if let Err(e) = scenario(&o, &mut r).await {
        r.check("scenario", Err(e));
    }
    r
}

async fn scenario(o: &Options, r: &mut Report) -> Result<(), String> {
    let p = Paths::under(&o.work, o.vfio_path.as_deref());
    if !o.insecure {
        crate::spire::start(&o.work.join("spire")).await?;
    }
    for d in [&p.device_plugins, &p.pod_resources, &p.state, &p.cgroup] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    // A cgroup v1 devices hierarchy has the control files in every
    // directory, the root and the pod's included.
    let ctr = p.cgroup.join("kubepods/pod-e2e/ctr");
    std::fs::create_dir_all(&ctr).map_err(|e| e.to_string())?;
    // Containers see only their own devices; the levels above see all.
    for (depth, dir) in ctr.ancestors().take(4).enumerate() {
        for f in ["devices.allow", "devices.deny"] {
            std::fs::write(dir.join(f), "").map_err(|e| e.to_string())?;
        }
        let list = if depth == 0 {
            "c 1:3 rwm\nc 1:5 rwm\n"
        } else {
            "a *:* rwm\n"
        };
        std::fs::write(dir.join("devices.list"), list).map_err(|e| e.to_string())?;
    }
    let (sysfs, vf_names) = vf_netdevs(o)?;
    let netdevs: Vec<String> = vf_names.iter().map(|(_, n)| n.clone()).collect();
    if o.vfio && o.vfio_path.is_none() {
        fake_dev_vfio(&sysfs, o, &p.vfio)?;
        say(format!(
            "{} holds stand-in /dev/vfio nodes (char devices made with mknod)",
            p.vfio.display()
        ));
    }
    say(format!(
        "VF netdevs of the configured PFs: {}",
        netdevs.join(" ")
    ));

    let kubelet =
        FakeKubelet::start(&p.device_plugins, &p.pod_resources).map_err(|e| e.to_string())?;
    let mut nsmgr = crate::spire::nsmgr(&p.nsm_socket).await?;
    nsmgr.insert_endpoint(NetworkServiceEndpoint {
        name: "endpoint-1".into(),
        network_service_names: vec!["sriov-ns".into()],
        url: "unix:///endpoint-1.sock".into(),
        ..Default::default()
    });
    say(format!(
        "stand-ins: kubelet in {}, NSM manager at {}",
        p.device_plugins.display(),
        p.nsm_socket.display()
    ));

    let netns = if o.veth {
        let ns = forwarder::veth_netns(&netdevs).await?;
        say(
            "forwarder runs in a private network namespace with veth stand-ins for those VF netdevs",
        );
        Some(ns)
    } else {
        None
    };
    let collector = match o.telemetry {
        true => Some(crate::otlp::collector(netns.as_ref()).await?),
        false => None,
    };
    let ops = match o.ops {
        true => Some(crate::ops::Ops::new(netns.as_ref())?),
        false => None,
    };
    let mut extra_env = collector.as_ref().map(crate::otlp::env).unwrap_or_default();
    if let Some(ops) = &ops {
        extra_env.extend(ops.env());
        // Kubelet away at start, so that `/readyz` is seen not ready.
        kubelet.stop_registration().await;
    }
    let extra_env: Vec<(&str, &str)> = extra_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut fwd = forwarder::start_with(o, &p, netns, &extra_env)?;
    if let Some(ops) = &ops {
        ops.before_registrations(r, &p.listen_socket).await?;
        kubelet.start_registration().map_err(|e| e.to_string())?;
    }

    // Kubelet.
    let reg = within(
        "device plugin registration",
        30,
        kubelet.wait_registered(&o.resource),
    )
    .await;
    if !r.check(
        "device-plugin-registered",
        reg.map(|reg| {
            format!(
                "{} at {} (version {})",
                reg.resource_name, reg.endpoint, reg.version
            )
        }),
    ) {
        return Err(format!(
            "forwarder log: {}",
            p.state.with_file_name("forwarder.log").display()
        ));
    }
    let mut plugin = kubelet
        .plugin(&o.resource)
        .await
        .map_err(|e| e.to_string())?;
    let mut law = plugin
        .list_and_watch(Empty {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let first = within("ListAndWatch", 10, law.message())
        .await?
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let healthy: Vec<String> = first
        .devices
        .iter()
        .filter(|d| d.health == "Healthy")
        .map(|d| d.id.clone())
        .collect();
    r.check(
        "list-and-watch",
        if healthy.is_empty() {
            Err("no healthy devices".into())
        } else {
            Ok(format!("{} healthy VFs advertised", healthy.len()))
        },
    );
    let alloc = plugin
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![healthy[0].clone()],
            }],
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let env_name = format!("NSM_SRIOV_TOKENS_{}", o.resource);
    let token = alloc
        .container_responses
        .first()
        .and_then(|c| c.envs.get(&env_name))
        .cloned();
    if !r.check(
        "allocate",
        token
            .clone()
            .ok_or("no token env".to_string())
            .map(|t| format!("{env_name}={t}")),
    ) {
        return Ok(());
    }
    let token = token.unwrap_or_default();
    kubelet.set_pod("pod-e2e", &o.resource, std::slice::from_ref(&token));

    // NSM registration.
    let registered = within("NSE registration", 15, async {
        loop {
            if let Some(nse) = nsmgr.registers().into_iter().next() {
                return nse;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    r.check(
        "nse-registered",
        registered.map(|n| format!("{} for {:?} at {}", n.name, n.network_service_names, n.url)),
    );
    if let Some(ops) = &ops {
        ops.after_registrations(r).await?;
    }

    // nsmgr's registry sees the `path` header the Go forwarder sends.
    let paths = nsmgr.registry_paths();
    r.check(
        "registry-path-header",
        match paths.first() {
            Some(Some(p)) => Ok(format!(
                "Register carried a path of {} segments",
                p.segments.len()
            )),
            _ => Err(format!("no path header on Register: {paths:?}")),
        },
    );
    // Select the forwarder as nsmgr does (sdk discoverforwarder: the
    // network service `forwarder`, labels `p2p: true` under it) and talk to
    // it at the URL it registered.
    let p2p = [("p2p".to_string(), "true".to_string())].into();
    let selected = nsmgr.discover_forwarders(&p2p);
    let listen = match selected.first() {
        Some(nse) => match sriov_nsm::NsmUrl::parse(&nse.url) {
            Ok(sriov_nsm::NsmUrl::Unix(path)) => {
                r.check(
                    "nsmgr-selects-forwarder",
                    Ok(format!("{} at {}", nse.name, nse.url)),
                );
                path
            }
            other => {
                r.check(
                    "nsmgr-selects-forwarder",
                    Err(format!("registered URL {}: {other:?}", nse.url)),
                );
                return Ok(());
            }
        },
        None => {
            r.check(
                "nsmgr-selects-forwarder",
                Err("no endpoint of network service `forwarder` with p2p=true".into()),
            );
            return Ok(());
        }
    };

    // The scenarios that restart the forwarder dial its socket by path: the
    // URL nsmgr found (the fd it received, when we registered by fd) names
    // the socket of the forwarder that registered, and a restarted one
    // registers a new socket.
    //
    // KERNEL.
    let client_ns = PrivateNetns::new().map_err(|e| format!("client namespace: {e}"))?;
    let (mut nsc, fds) = nsc::connect_with_fds(&listen).await?;
    // As the NSM manager sends it: the namespace by fd, named inode://
    // (or, with --netns-by-path, the file:// path a forwarder in
    // development mode finds by itself).
    let netns_url = if o.netns_by_path {
        file_url(&client_ns)?
    } else {
        let NetnsUrl::File(path) = client_ns.url().clone() else {
            return Err("client URL".into());
        };
        nsc::send_netns(&fds, &path)?
    };
    let params = vec![
        ("tokenID", token.clone()),
        ("inodeURL", netns_url),
        ("name", "nsm-1".to_string()),
    ];
    let scraped = match &ops {
        Some(ops) => Some(ops.scrape(r, Some("prometheus-text-parses")).await?),
        None => None,
    };
    let mut request = tonic::Request::new(client::request("conn-kernel", "KERNEL", &params, true));
    if collector.is_some() {
        crate::otlp::traced(&mut request)?;
    }
    let conn = nsc.request(request).await;
    let conn = match conn {
        Ok(c) => c.into_inner(),
        Err(e) => {
            r.check(
                "kernel-request",
                Err(format!("{}: {}", e.code(), e.message())),
            );
            return Ok(());
        }
    };
    let m = conn.mechanism.clone().unwrap_or_default();
    let vf = m.parameters.get("pciAddress").cloned().unwrap_or_default();
    r.check(
        "kernel-request",
        Ok(format!(
            "{} on VF {vf}, endpoint {}",
            m.r#type, conn.network_service_endpoint_name
        )),
    );
    if let Some(collector) = &collector {
        crate::otlp::check(collector, r).await;
    }
    let scraped = match (&ops, scraped) {
        (Some(ops), Some(before)) => {
            let requested = ops.scrape(r, None).await?;
            let pool = pool_vfs(o, &sysfs)?;
            ops.state(r, &o.resource, &pool, &conn, &token).await?;
            Some((before, requested))
        }
        _ => None,
    };
    let seen = inspect::link(client_ns.url(), "nsm-1").await?;
    r.check(
        "vf-in-client-namespace",
        match &seen {
            Some(s)
                if s.up && s.addresses.iter().any(|a| a == "172.16.1.2/30") && s.mtu == 1400 =>
            {
                Ok(s.to_string())
            }
            Some(s) => Err(format!("seen as {s}")),
            None => Err("no nsm-1 in the client namespace".into()),
        },
    );
    if let Some(ip) = &o.ping {
        let NetnsUrl::File(path) = client_ns.url().clone() else {
            return Err("client URL".into());
        };
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .args(["ping", "-c", "1", "-W", "3", ip])
            .output()
            .map_err(|e| e.to_string())?;
        r.check(
            "ping-across-the-vf",
            if out.status.success() {
                Ok(format!("{ip} answered"))
            } else {
                Err(String::from_utf8_lossy(&out.stdout).into_owned())
            },
        );
    }
    if o.hostile {
        let id = healthy
            .get(2)
            .cloned()
            .ok_or("a third device for the attacker")?;
        let attacker = allocate(&mut plugin, o, id).await?;
        kubelet.set_pod("pod-attacker", &o.resource, std::slice::from_ref(&attacker));
        let scene = crate::hostile::Scene {
            paths: &p,
            forwarder: &fwd,
            sysfs: &sysfs,
            vfs: vf_names.iter().map(|(a, _)| *a).collect(),
            victim: &conn,
            victim_ns: &client_ns,
            secrets: vec![token.clone(), attacker.clone()],
            token: attacker,
        };
        crate::hostile::run(scene, r, &mut nsc).await?;
        crate::spire::hostile(&p.listen_socket, r).await?;
    }
    // The VF's netdev name from before the request: while the client has
    // it, sysfs no longer lists it under the VF.
    let vf_netdev = vf.parse::<PciAddress>().ok().and_then(|a| {
        vf_names
            .iter()
            .find(|(v, _)| *v == a)
            .map(|(_, n)| n.clone())
    });
    nsc.close(conn)
        .await
        .map_err(|e| format!("close: {}", e.message()))?;
    // Close answers once the interface is unusable; the move home follows.
    let at_answer = inspect::link(client_ns.url(), "nsm-1").await?;
    r.check(
        "close-disables-at-answer",
        match at_answer {
            None => Ok("nsm-1 already gone from the client".to_string()),
            Some(l) if !l.up && !l.addresses.iter().any(|a| a.starts_with("172.16.1.2/")) => Ok(
                format!("nsm-1 down and without its address at the answer: {l}"),
            ),
            Some(l) => Err(format!(
                "still usable in the client after Close answered: {l}"
            )),
        },
    );
    let netlink = fwd.netlink()?;
    let deadline = tokio::time::Instant::now() + RETURN_WAIT;
    let (gone, home) = loop {
        let gone = inspect::link(client_ns.url(), "nsm-1").await?;
        let home = match &vf_netdev {
            Some(n) => inspect::link_with(&netlink, n).await?,
            None => None,
        };
        if (gone.is_none() && home.is_some()) || tokio::time::Instant::now() > deadline {
            break (gone, home);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    r.check(
        "close-returns-vf",
        match (gone, home) {
            (None, Some(h)) if !h.up => Ok(format!(
                "{} back in the forwarder's namespace, down",
                h.name
            )),
            (Some(g), _) => Err(format!("still in the client: {g}")),
            (None, h) => Err(format!("not back home as {:?}: {h:?}", vf_netdev)),
        },
    );

    if let (Some(ops), Some((before, requested))) = (&ops, &scraped) {
        let closed = ops.scrape(r, None).await?;
        ops.counted(r, before, requested, &closed);
        ops.kubelet_flap(r, &kubelet, &p.listen_socket).await?;
    }

    if o.vfio {
        vfio(o, r, &sysfs, &mut plugin, &mut nsc, &healthy, &ctr).await?;
    }

    if o.restart {
        let scene = crate::restart::Scene {
            o,
            paths: &p,
            listen: &p.listen_socket,
            token: &token,
            client_ns: &client_ns,
            inode_url: file_url(&client_ns)?,
            vf_names: &vf_names,
            sysfs: &sysfs,
            ctr: &ctr,
            kubelet: &kubelet,
            pod: "pod-e2e",
        };
        crate::restart::run(scene, r, &mut fwd).await?;
    }

    // The crash campaign and the race work on the pod's tokens (`chaos.rs`).
    let chaos_scene = |tokens: Vec<String>| crate::chaos::Scene {
        o,
        paths: &p,
        listen: &p.listen_socket,
        tokens,
        client_ns: &client_ns,
        vf_names: &vf_names,
        sysfs: &sysfs,
        ctr: &ctr,
        kubelet: &kubelet,
    };
    if o.chaos > 0 {
        // The pod holds a second token, for the VFIO faults and the race.
        let second = healthy
            .get(1)
            .cloned()
            .ok_or("a second device for the chaos")?;
        let second = allocate(&mut plugin, o, second).await?;
        let tokens = vec![token.clone(), second];
        kubelet.set_pod("pod-e2e", &o.resource, &tokens);
        crate::chaos::run(chaos_scene(tokens), r, &mut fwd, &mut nsmgr, o.chaos).await?;
    }

    if o.race > 0 {
        // Every device kubelet may hand out goes to the pod, one token each.
        let mut tokens = vec![token.clone()];
        for id in healthy.iter().skip(1) {
            tokens.push(allocate(&mut plugin, o, id.clone()).await?);
        }
        kubelet.set_pod("pod-e2e", &o.resource, &tokens);
        crate::chaos::race(chaos_scene(tokens), r, &mut fwd, o.race).await?;
    }

    if o.soak > 0 {
        // The pod holds a second token for the VFIO cycles.
        let vfio = match healthy.get(1).filter(|_| o.vfio) {
            Some(id) => {
                let second = allocate(&mut plugin, o, id.clone()).await?;
                kubelet.set_pod("pod-e2e", &o.resource, &[token.clone(), second.clone()]);
                Some((second, p.pod_glob(&ctr)))
            }
            None => None,
        };
        let scene = crate::soak::Scene {
            listen: &p.listen_socket,
            kernel_token: token.clone(),
            vfio,
            client_ns: &client_ns,
            vf_names: &vf_names,
            sysfs: &sysfs,
        };
        crate::soak::run(scene, r, &fwd, o.soak).await?;
    }

    // SIGUSR1 switches logging to trace, SIGUSR2 back.
    let log = p.state.with_file_name("forwarder.log");
    for sig in [
        nix::sys::signal::Signal::SIGUSR1,
        nix::sys::signal::Signal::SIGUSR2,
    ] {
        let pid = nix::unistd::Pid::from_raw(fwd.child.id() as i32);
        nix::sys::signal::kill(pid, sig).map_err(|e| e.to_string())?;
        let want = if sig == nix::sys::signal::Signal::SIGUSR1 {
            "log level: trace"
        } else {
            "log level restored"
        };
        let seen = within("log level change", 5, async {
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(want)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        r.check(
            &format!("log-level-{sig}"),
            seen.map(|()| format!("logged {want:?}")),
        );
    }

    // Shutdown.
    let status = fwd.terminate()?;
    r.check(
        "graceful-shutdown",
        if status.success() {
            Ok("exit 0 on SIGTERM".into())
        } else {
            Err(format!("{status}"))
        },
    );
    let unregistered = nsmgr
        .unregisters()
        .iter()
        .any(|n| n.name == "sriov-forwarder");
    r.check(
        "nse-unregistered",
        if unregistered {
            Ok(String::new())
        } else {
            Err("no Unregister seen".into())
        },
    );
    if o.hostile {
        crate::hostile::corrupt_state(o, &p, r).await?;
    }
    Ok(())
}

/// Kubelet's Allocate of one device: the token env the container gets.
pub(crate) async fn allocate(
    plugin: &mut DevicePluginClient<tonic::transport::Channel>,
    o: &Options,
    id: String,
) -> Result<String, String> {
    let alloc = plugin
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![id],
            }],
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let env_name = format!("NSM_SRIOV_TOKENS_{}", o.resource);
    alloc
        .container_responses
        .first()
        .and_then(|c| c.envs.get(&env_name))
        .cloned()
        .ok_or_else(|| format!("no {env_name} in the Allocate answer"))
}

#[allow(clippy::too_many_arguments)]
async fn vfio(
    o: &Options,
    r: &mut Report,
    sysfs: &Sysfs,
    plugin: &mut DevicePluginClient<tonic::transport::Channel>,
    nsc: &mut crate::nsc::Nsc,
    healthy: &[String],
    ctr: &std::path::Path,
) -> Result<(), String> {
    let id = healthy.get(1).cloned().ok_or("a second device for VFIO")?;
    let alloc = plugin
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![id],
            }],
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let env_name = format!("NSM_SRIOV_TOKENS_{}", o.resource);
    let token = alloc
        .container_responses
        .first()
        .and_then(|c| c.envs.get(&env_name))
        .cloned()
        .unwrap_or_default();
    // The pod's cgroup with a trailing glob, as Go NSM clients send it
    // (sdk-sriov `cgroup/dir_path.go`); it expands to the one container.
    let cgroup_dir = ctr
        .parent()
        .and_then(|pod| pod.strip_prefix(ctr.ancestors().nth(3).unwrap_or(ctr)).ok())
        .map(|p| format!("{}/*", p.display()))
        .unwrap_or_default();
    let params = vec![("tokenID", token), ("cgroupDir", cgroup_dir)];
    // With --vf-config the VF also gets a MAC and VLAN through its PF.
    let ethernet = o.vf_config.then_some((VF_MAC, VF_VLAN));
    let pf_view = |sysfs: &Sysfs| -> Option<(String, Vec<(PciAddress, u32)>)> {
        let cfg = sriov_config::SriovConfig::load(&o.config).ok()?;
        let pf = *cfg.config.physical_functions.keys().next()?;
        let netdev = sysfs.netdevs(pf).ok()?.into_iter().next()?;
        let vfs = sysfs
            .vfs(pf)
            .ok()?
            .into_iter()
            .map(|v| (v.address, v.index))
            .collect();
        Some((netdev, vfs))
    };
    let before = match (o.vf_config, pf_view(sysfs)) {
        (true, Some((pf, _))) => Some(pf_vfs(&pf).await?),
        _ => None,
    };
    let conn = match nsc
        .request(client::request_with(
            "conn-vfio",
            "VFIO",
            &params,
            false,
            ethernet,
        ))
        .await
    {
        Ok(c) => c.into_inner(),
        Err(e) => {
            r.check(
                "vfio-request",
                Err(format!("{}: {}", e.code(), e.message())),
            );
            return Ok(());
        }
    };
    let m = conn.mechanism.clone().unwrap_or_default();
    let get = |k: &str| m.parameters.get(k).cloned().unwrap_or_default();
    let vf: PciAddress = get("pciAddress")
        .parse()
        .map_err(|e| format!("pciAddress: {e}"))?;
    let driver = sysfs.driver(vf).map_err(|e| e.to_string())?;
    r.check(
        "vfio-request",
        if driver.as_deref() == Some("vfio-pci") {
            Ok(format!(
                "VF {vf} on vfio-pci, iommuGroup {} /dev/vfio/vfio {}:{} group {}:{}",
                get("iommuGroup"),
                get("vfioMajor"),
                get("vfioMinor"),
                get("deviceMajor"),
                get("deviceMinor")
            ))
        } else {
            Err(format!("VF {vf} driver is {driver:?}"))
        },
    );
    let vfio_dir = Paths::under(&o.work, o.vfio_path.as_deref()).vfio;
    let node = vfio_dir.join(get("iommuGroup"));
    let numbers = std::fs::metadata(&node).map(|m| {
        use std::os::unix::fs::MetadataExt;
        (
            m.file_type().is_char_device(),
            nix::sys::stat::major(m.rdev()),
            nix::sys::stat::minor(m.rdev()),
        )
    });
    r.check(
        "vfio-device-node",
        match numbers {
            Ok((true, maj, min))
                if maj.to_string() == get("deviceMajor")
                    && min.to_string() == get("deviceMinor") =>
            {
                Ok(format!("{} is {maj}:{min}", node.display()))
            }
            Ok(n) => Err(format!("{} is {n:?}", node.display())),
            Err(e) => Err(format!("{}: {e}", node.display())),
        },
    );
    let index = pf_view(sysfs)
        .and_then(|(pf, vfs)| vfs.iter().find(|(a, _)| *a == vf).map(|(_, i)| (pf, *i)));
    if let (Some(_), Some((pf, i))) = (&before, &index) {
        let now = pf_vfs(pf).await?;
        let state = now.iter().find(|s| s.vf == *i);
        r.check(
            "vf-config-through-pf",
            match state {
                Some(s) if s.mac.to_string() == VF_MAC && i32::from(s.vlan.id) == VF_VLAN => {
                    Ok(format!("{pf} vf {i}: mac {} vlan {}", s.mac, s.vlan.id))
                }
                other => Err(format!("{pf} vf {i} is {other:?}")),
            },
        );
    }
    nsc.close(conn)
        .await
        .map_err(|e| format!("close: {}", e.message()))?;
    if let (Some(before), Some((pf, i))) = (&before, &index) {
        let now = pf_vfs(pf).await?;
        let (was, is) = (
            before.iter().find(|s| s.vf == *i),
            now.iter().find(|s| s.vf == *i),
        );
        r.check(
            "vf-config-restored",
            match (was, is) {
                (Some(w), Some(n)) if w.mac == n.mac && w.vlan == n.vlan => Ok(format!(
                    "{pf} vf {i}: mac {} vlan {} again",
                    n.mac, n.vlan.id
                )),
                other => Err(format!("before/after {other:?}")),
            },
        );
    }
    let after = sysfs.driver(vf).map_err(|e| e.to_string())?;
    r.check(
        "vfio-close-restores-driver",
        if after.as_deref() != Some("vfio-pci") && after.is_some() {
            Ok(format!("VF {vf} back on {}", after.unwrap_or_default()))
        } else {
            Err(format!("driver {after:?}"))
        },
    );
    Ok(())
}
