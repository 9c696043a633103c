//! Starting `forwarder-sriov` with the stand-ins' paths, optionally inside
//! a private network namespace holding veth stand-ins for the VF netdevs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sriov_netlink::testing::{PrivateNetns, add_veth};
use sriov_netlink::{NetnsUrl, RtNetlink};

use crate::Options;

/// Where the forwarder and its peers talk.
pub(crate) struct Paths {
    pub(crate) device_plugins: PathBuf,
    pub(crate) pod_resources: PathBuf,
    pub(crate) nsm_socket: PathBuf,
    pub(crate) listen_socket: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) cgroup: PathBuf,
    pub(crate) vfio: PathBuf,
}

impl Paths {
    pub(crate) fn under(work: &Path, vfio: Option<&Path>) -> Self {
        Self {
            device_plugins: work.join("device-plugins"),
            pod_resources: work.join("pod-resources"),
            nsm_socket: work.join("nsm/nsm.io.sock"),
            listen_socket: work.join("forwarder/listen.on.sock"),
            state: work.join("state"),
            cgroup: work.join("cgroup/devices"),
            vfio: vfio
                .map(Path::to_path_buf)
                .unwrap_or_else(|| work.join("dev-vfio")),
        }
    }

    /// The `cgroupDir` a Go NSM client sends for the pod of container
    /// cgroup `ctr`: the pod's directory below the cgroup root, with a
    /// trailing `*` (sdk-sriov `cgroup/dir_path.go`).
    pub(crate) fn pod_glob(&self, ctr: &Path) -> String {
        ctr.parent()
            .and_then(|pod| pod.strip_prefix(&self.cgroup).ok())
            .map(|p| format!("{}/*", p.display()))
            .unwrap_or_default()
    }
}

/// The running forwarder.
pub(crate) struct Forwarder {
    pub(crate) child: Child,
    /// The namespace it runs in, when it has a private one.
    pub(crate) netns: Option<PrivateNetns>,
}

impl Forwarder {
    /// A netlink handle in the forwarder's namespace.
    pub(crate) fn netlink(&self) -> Result<RtNetlink, String> {
        match &self.netns {
            Some(ns) => sriov_netlink::Netns::open(ns.url())
                .and_then(RtNetlink::in_netns)
                .map_err(|e| e.to_string()),
            None => RtNetlink::new().map_err(|e| e.to_string()),
        }
    }

    pub(crate) fn terminate(&mut self) -> Result<std::process::ExitStatus, String> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .map_err(|e| e.to_string())?;
        self.child.wait().map_err(|e| e.to_string())
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private namespace with a veth pair per VF netdev name (`<name>`
/// with peer `<name>p`), standing in for real VFs.
pub(crate) async fn veth_netns(netdevs: &[String]) -> Result<PrivateNetns, String> {
    let ns = PrivateNetns::new().map_err(|e| format!("creating the forwarder's namespace: {e}"))?;
    let names = netdevs.to_vec();
    ns.block_on(|| async move {
        let nl = RtNetlink::new().map_err(|e| e.to_string())?;
        for n in &names {
            let peer: String = format!("{n}p").chars().take(15).collect();
            add_veth(nl.handle(), n, &peer)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })
    .map_err(|e| e.to_string())??;
    Ok(ns)
}

pub(crate) fn start(
    o: &Options,
    p: &Paths,
    netns: Option<PrivateNetns>,
) -> Result<Forwarder, String> {
    start_with(o, p, netns, &[])
}

/// [`start`] with more variables (`extra` wins over the defaults here).
pub(crate) fn start_with(
    o: &Options,
    p: &Paths,
    netns: Option<PrivateNetns>,
    extra: &[(&str, &str)],
) -> Result<Forwarder, String> {
    let mut cmd = match &netns {
        Some(ns) => {
            let NetnsUrl::File(path) = ns.url().clone() else {
                return Err("private namespace without a file URL".into());
            };
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", path.display())).arg(&o.forwarder);
            c
        }
        None => Command::new(&o.forwarder),
    };
    let unix = |p: &Path| format!("unix://{}", p.display());
    let spire = crate::spire::get();
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "NSM_INSECURE",
            if spire.is_some() { "false" } else { "true" },
        )
        .env("NSM_NAME", "sriov-forwarder")
        .env("NSM_CONNECT_TO", unix(&p.nsm_socket))
        .env("NSM_LISTEN_ON", unix(&p.listen_socket))
        .env("NSM_DEVICE_PLUGIN_PATH", &p.device_plugins)
        .env("NSM_POD_RESOURCES_PATH", &p.pod_resources)
        .env("NSM_SRIOV_CONFIG_FILE", &o.config)
        .env("NSM_PCI_DEVICES_PATH", o.sysfs_root.join("bus/pci/devices"))
        .env("NSM_PCI_DRIVERS_PATH", o.sysfs_root.join("bus/pci/drivers"))
        .env("NSM_STATE_DIR", &p.state)
        .env("NSM_CGROUP_PATH", &p.cgroup)
        .env("NSM_VFIO_PATH", &p.vfio)
        .env("NSM_RESOURCE_POLL_TIMEOUT", "1s")
        // The default 50 ms bounds connect plus the mTLS handshake; debug
        // builds under the VM test's emulated CPU need longer than that.
        .env("NSM_DIAL_TIMEOUT", "2s")
        .env("NSM_LOG_LEVEL", "INFO")
        .envs(spire.map(|s| ("SPIFFE_ENDPOINT_SOCKET", s.forwarder_endpoint())))
        .envs(extra.iter().copied())
        .stdin(Stdio::null());
    // A restart appends to the log, so the whole story is in one file.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p.state.with_file_name("forwarder.log"))
        .map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    cmd.stdout(log).stderr(log2);
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", o.forwarder.display()))?;
    Ok(Forwarder { child, netns })
}
