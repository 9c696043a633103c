//! Command-line flags: SRDP's three, path overrides for tests, and SRDP's logging flags
//! accepted and ignored so a DaemonSet's args keep working.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// SR-IOV network device plugin, a drop-in for sriov-network-device-plugin.
/// `--version`: the package version and the commit baked in at build time
/// (`SRIOV_BUILD_VERSION` / `SRIOV_BUILD_COMMIT`, set by the Dockerfile).
pub(crate) fn version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let v = option_env!("SRIOV_BUILD_VERSION").unwrap_or(env!("CARGO_PKG_VERSION"));
        format!(
            "{v} (commit {})",
            option_env!("SRIOV_BUILD_COMMIT").unwrap_or("unknown")
        )
    })
}

#[derive(Debug, Parser)]
#[command(name = "sriov-device-plugin", version = version())]
pub(crate) struct Args {
    /// Without one, the plugin serves kubelet.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// JSON device pool config file.
    #[arg(long, global = true, default_value = sriov_selector_pools::DEFAULT_CONFIG_FILE)]
    pub(crate) config_file: PathBuf,
    /// Resource name prefix for resources that set none.
    #[arg(long, global = true, default_value = sriov_selector_pools::DEFAULT_RESOURCE_PREFIX)]
    pub(crate) resource_prefix: String,
    /// Hand devices to containers as CDI devices and keep CDI specs in --cdi-dir.
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", action = clap::ArgAction::Set)]
    pub(crate) use_cdi: bool,
    /// With --use-cdi: name devices in kubelet's `cdi_devices` field (kubelet 1.28+, GA in 1.31)
    /// instead of SRDP's `cdi.k8s.io/<prefix>_<class>` annotation.
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", action = clap::ArgAction::Set)]
    pub(crate) cdi_devices_field: bool,
    /// Refuse the whole config when a resource's selectors do not parse (SRDP, and the default,
    /// skip that resource with an error log and serve the others).
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", action = clap::ArgAction::Set)]
    pub(crate) strict: bool,
    /// Print each pool's members and why each device matched or not, then exit.
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", action = clap::ArgAction::Set)]
    pub(crate) dry_run: bool,

    /// Root of sysfs (its bus/pci/devices and bus/pci/drivers are read).
    #[arg(long, global = true, default_value = "/sys")]
    pub(crate) sysfs_root: PathBuf,
    /// IPv4 routing table, for leaving NICs with the default route to the host.
    #[arg(long, global = true, default_value = "/proc/net/route")]
    pub(crate) proc_net_route: PathBuf,
    /// Directory holding vhost-net and net/tun.
    #[arg(long, global = true, default_value = "/dev")]
    pub(crate) dev_dir: PathBuf,
    /// Kubelet's device-plugin directory (kubelet.sock).
    #[arg(long, default_value = "/var/lib/kubelet/device-plugins")]
    pub(crate) device_plugin_dir: PathBuf,
    /// Kubelet's plugin-watcher directory; used when it exists, as SRDP does
    /// (in `dra` mode, always: the registration socket goes there).
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/kubelet/plugins_registry"
    )]
    pub(crate) plugins_registry_dir: PathBuf,
    /// Kubelet's pod-resources socket, to learn which VFs pods still hold.
    #[arg(long, default_value = "/var/lib/kubelet/pod-resources/kubelet.sock")]
    pub(crate) pod_resources_socket: PathBuf,
    /// Where device-info files go.
    #[arg(long, global = true, default_value = sriov_selector_pools::DEFAULT_DEVINFO_DIR)]
    pub(crate) devinfo_dir: PathBuf,
    /// Where CDI specs go (with --use-cdi, and always in `dra` mode).
    #[arg(long, global = true, default_value = sriov_selector_pools::DEFAULT_CDI_DIR)]
    pub(crate) cdi_dir: PathBuf,
    /// Seconds between rescans of sysfs (VF count changes, driver rebinds).
    #[arg(long, global = true, default_value_t = 10)]
    pub(crate) rescan_interval: u64,
    /// Where device health comes from: `none` (SRDP's: healthy while the device exists) or
    /// `netlink` (also unhealthy while the PF's link is down or the VF's netdev is gone).
    #[arg(long, global = true, default_value = "none", value_parser = ["netlink", "none"])]
    pub(crate) link_health: String,
    /// With `--link-health netlink`: a PF link that is down or without carrier leaves its VFs
    /// healthy (VF-to-VF traffic on the NIC still works); only a link that is gone counts.
    #[arg(long, global = true)]
    pub(crate) ignore_carrier: bool,
    /// Log lines as `text` or `json` (one object per line). The level comes
    /// from RUST_LOG (default `info`); SIGUSR1 switches to trace, SIGUSR2 back.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", value_parser = parse_log_format)]
    pub(crate) log_format: sriov_telemetry::logging::LogFormat,
    /// Push traces and metrics over OTLP/gRPC to this collector (`host:port`
    /// or a URL; plain gRPC without TLS). Without it metrics are only kept for
    /// a Prometheus scrape.
    #[arg(
        long,
        global = true,
        value_name = "ENDPOINT",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    pub(crate) otlp_endpoint: Option<String>,
    /// Serve Prometheus `/metrics`, `/readyz` and `/livez` on ADDR
    /// (`host:port`, `:port` or a port; without a host, loopback). Off
    /// unless given.
    #[arg(long, global = true, value_name = "ADDR", value_parser = crate::ops::metrics_addr)]
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    /// Serve CPU profiles (`/debug/pprof/profile?seconds=N`), memory figures
    /// and the pools as JSON (`/debug/state`) on ADDR, a loopback address.
    /// Off unless given.
    #[arg(long, global = true, value_name = "ADDR", value_parser = crate::ops::pprof_addr)]
    pub(crate) pprof_listen: Option<std::net::SocketAddr>,

    /// SRDP (glog) logging flag; ignored, use RUST_LOG. glog's own spelling
    /// (`log_dir`) is accepted too.
    #[arg(long, hide = true, alias = "log_dir")]
    pub(crate) log_dir: Option<String>,
    /// glog per-module verbosity; ignored, use RUST_LOG.
    #[arg(long, hide = true)]
    pub(crate) vmodule: Option<String>,
    /// glog flag; ignored.
    #[arg(long = "log_backtrace_at", hide = true, alias = "log-backtrace-at")]
    pub(crate) log_backtrace_at: Option<String>,
    /// SRDP (glog) logging flag; ignored, use RUST_LOG.
    #[arg(long, hide = true)]
    pub(crate) log_level: Option<String>,
    /// glog verbosity; ignored, use RUST_LOG.
    #[arg(long = "v", hide = true)]
    pub(crate) verbosity: Option<String>,
    /// glog flag; ignored.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) logtostderr: Option<String>,
    /// glog flag; ignored.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) alsologtostderr: Option<String>,
    /// glog flag; ignored.
    #[arg(long, hide = true)]
    pub(crate) stderrthreshold: Option<String>,
}

fn parse_log_format(s: &str) -> Result<sriov_telemetry::logging::LogFormat, String> {
    s.parse().map_err(|e: sriov_telemetry::Error| e.to_string())
}

/// What to do instead of serving.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// For every network device on the node, the pool it joined or the first selector that
    /// kept it out of each pool; for every pool, why it has the count kubelet shows
    /// (members, unhealthy, taken by an earlier pool, left out by discovery). Reads only.
    Explain {
        /// The config file to judge (default: --config-file).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve the pools through Dynamic Resource Allocation (resource.k8s.io/v1, Kubernetes
    /// 1.34+) instead of the device-plugin API: publish the devices as ResourceSlices of this
    /// node, register with kubelet's plugin watcher as a DRAPlugin, and prepare and unprepare
    /// the claims kubelet hands over (drivers, CDI specs, device-info files).
    Dra(DraArgs),
}

/// `sriov-device-plugin dra`: what only DRA mode needs; the config, sysfs, health, CDI and
/// device-info flags are the device-plugin mode's.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DraArgs {
    /// The DRA driver name the devices are published and claimed under (dra-driver-sriov's, so
    /// its DeviceClasses select them).
    #[arg(long, default_value = sriov_dra::DEFAULT_DRIVER_NAME)]
    pub(crate) driver_name: String,
    /// This node's name (the downward API's spec.nodeName); the ResourceSlices' node and pool.
    #[arg(long, env = "NODE_NAME")]
    pub(crate) node_name: String,
    /// A kubeconfig file for the API server; without one, the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Where the DRA socket (dra.sock) and the prepared-claims checkpoint live
    /// (default: `/var/lib/kubelet/plugins/<driver name>`).
    #[arg(long)]
    pub(crate) plugin_dir: Option<PathBuf>,
}

impl DraArgs {
    /// `--plugin-dir`, or kubelet's plugins directory plus the driver name.
    pub(crate) fn plugin_dir(&self) -> PathBuf {
        self.plugin_dir.clone().unwrap_or_else(|| {
            PathBuf::from(sriov_api::kubelet::dra::PLUGINS_PATH).join(&self.driver_name)
        })
    }
}

/// Go's flag package accepts `-flag` as well as `--flag`; clap wants two dashes for long
/// flags, so single-dash long flags are rewritten before parsing.
pub(crate) fn go_style(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let long_single = i > 0
                && a.starts_with('-')
                && !a.starts_with("--")
                && a.len() > 2
                && a[1..].starts_with(|c: char| c.is_ascii_alphabetic());
            // `-v=10` and `-v 10` are glog's verbosity, also a long flag in Go.
            if long_single || (i > 0 && (a == "-v" || a.starts_with("-v="))) {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(go_style(args.iter().map(|s| s.to_string()))).unwrap()
    }

    #[test]
    fn explain_takes_its_config_and_the_path_flags_on_either_side() {
        let a = parse(&[
            "x",
            "--sysfs-root=/tmp/a",
            "explain",
            "--config",
            "/etc/c.json",
            "--json",
            "--proc-net-route=/tmp/route",
        ]);
        match a.command {
            Some(Command::Explain { config, json }) => {
                assert_eq!(config, Some(PathBuf::from("/etc/c.json")));
                assert!(json);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.sysfs_root, PathBuf::from("/tmp/a"));
        assert_eq!(a.proc_net_route, PathBuf::from("/tmp/route"));
        assert!(parse(&["x"]).command.is_none(), "no subcommand serves");
    }

    #[test]
    fn the_operator_endpoints_are_off_unless_asked_for() {
        let a = parse(&["x"]);
        assert_eq!((a.metrics_listen, a.pprof_listen), (None, None));
        let a = parse(&[
            "x",
            "--metrics-listen=:9465",
            "-pprof-listen=localhost:6061",
        ]);
        assert_eq!(a.metrics_listen, Some(([127, 0, 0, 1], 9465).into()));
        assert_eq!(a.pprof_listen, Some(([127, 0, 0, 1], 6061).into()));
        assert!(
            Args::try_parse_from(["x", "--pprof-listen=0.0.0.0:6061"]).is_err(),
            "the debug endpoint is loopback only"
        );
    }

    #[test]
    fn defaults_are_srdps() {
        let a = parse(&["sriov-device-plugin"]);
        assert_eq!(a.config_file, PathBuf::from("/etc/pcidp/config.json"));
        assert_eq!(a.resource_prefix, "intel.com");
        assert!(!a.use_cdi);
        assert_eq!(a.link_health, "none", "SRDP's health unless asked");
    }

    #[test]
    fn go_style_single_dash_flags_and_glog_flags_are_accepted() {
        let a = parse(&[
            "x",
            "-config-file=/etc/x.json",
            "--resource-prefix=openshift.io",
            "-use-cdi",
            "--log-dir=sriovdp",
            "--log-level=10",
            "-v=4",
            "-logtostderr",
            "-vmodule=pool=2",
            "-log_backtrace_at=pool.go:10",
        ]);
        assert_eq!(a.config_file, PathBuf::from("/etc/x.json"));
        assert_eq!(a.resource_prefix, "openshift.io");
        assert!(a.use_cdi);
        assert_eq!(a.verbosity.as_deref(), Some("4"));
        assert!(!parse(&["x", "-use-cdi=false"]).use_cdi);
        assert_eq!(
            parse(&["x", "-log_dir=/var/log"]).log_dir.as_deref(),
            Some("/var/log")
        );
    }

    /// What SRDP's image runs: its DaemonSet's args go to `/entrypoint.sh`,
    /// which execs `sriovdp` with glog's spellings, values as separate words.
    /// Both vectors must parse, so either our binary as the entrypoint or
    /// our binary behind SRDP's script works unchanged.
    #[test]
    fn srdps_daemonset_args_and_its_entrypoints_exec_line_parse() {
        let daemonset = parse(&["x", "--log-dir=sriovdp", "--log-level=10"]);
        assert_eq!(daemonset.log_dir.as_deref(), Some("sriovdp"));
        let exec = parse(&[
            "sriovdp",
            "-v",
            "10",
            "--log_dir",
            "/var/log/sriovdp",
            "--alsologtostderr",
            "--resource-prefix",
            "openshift.io",
            "--config-file",
            "/etc/pcidp/worker-1",
            "--use-cdi",
        ]);
        assert_eq!(exec.verbosity.as_deref(), Some("10"));
        assert_eq!(exec.log_dir.as_deref(), Some("/var/log/sriovdp"));
        assert_eq!(exec.resource_prefix, "openshift.io");
        assert_eq!(exec.config_file, PathBuf::from("/etc/pcidp/worker-1"));
        assert!(exec.use_cdi);
        let plain = parse(&["sriovdp", "-v", "10", "--logtostderr"]);
        assert_eq!(plain.logtostderr.as_deref(), Some("true"));
    }

    /// The SR-IOV network operator's device plugin DaemonSet (its
    /// bindata/manifests/plugins/sriov-device-plugin.yaml): these args, and
    /// a read-only root filesystem with these mounts (path, writable). Our
    /// example of the swap must be exactly that.
    const OPERATOR_ARGS: &[&str] = &[
        "--log-level=10",
        "--resource-prefix=openshift.io",
        "--config-file=/etc/pcidp/$(NODE_NAME)",
        "--use-cdi",
    ];
    const OPERATOR_MOUNTS: &[(&str, bool)] = &[
        ("/var/lib/kubelet/device-plugins", true),
        ("/var/lib/kubelet/plugins_registry", true),
        ("/etc/pcidp/", false),
        ("/var/run/k8s.cni.cncf.io/devinfo/dp", true),
        ("/var/run/cdi", true),
    ];
    const OPERATOR_SWAP: &str = include_str!("../../../deploy/examples/srdp-operator-swap.yaml");

    /// The container's args and its mounts (path, writable) in a manifest
    /// written as deploy/ writes them (one item per line).
    fn args_and_mounts(yaml: &str) -> (Vec<String>, Vec<(String, bool)>) {
        let lines: Vec<&str> = yaml.lines().map(str::trim).collect();
        let args = lines
            .iter()
            .filter_map(|l| l.strip_prefix("- --"))
            .map(|a| format!("--{a}"))
            .collect();
        let mut mounts = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if let Some(path) = line.strip_prefix("mountPath:") {
                let read_only = lines
                    .iter()
                    .skip(i + 1)
                    .take_while(|l| !l.starts_with('-'))
                    .any(|l| *l == "readOnly: true");
                mounts.push((path.trim().to_string(), !read_only));
            }
        }
        (args, mounts)
    }

    #[test]
    fn the_operator_swap_example_is_the_operators_daemonset() {
        let (args, mounts) = args_and_mounts(OPERATOR_SWAP);
        assert_eq!(args, OPERATOR_ARGS);
        let want: Vec<(String, bool)> = OPERATOR_MOUNTS
            .iter()
            .map(|(p, w)| (p.to_string(), *w))
            .collect();
        assert_eq!(mounts, want);
        assert!(OPERATOR_SWAP.contains("readOnlyRootFilesystem: true"));
        assert!(OPERATOR_SWAP.contains("sriovnetwork.openshift.io/device-plugin: Enabled"));
    }

    /// Under the operator's read-only root, every place the plugin writes
    /// (sockets in either registration mode, device-info files, CDI specs)
    /// is in a writable mount, and the config is in a mount.
    #[test]
    fn under_the_operators_args_every_write_lands_in_a_writable_mount() {
        let mut argv = vec!["sriov-device-plugin".to_string()];
        argv.extend(
            OPERATOR_ARGS
                .iter()
                .map(|a| a.replace("$(NODE_NAME)", "worker-1")),
        );
        let a = Args::try_parse_from(go_style(argv)).unwrap();
        assert_eq!(a.config_file, PathBuf::from("/etc/pcidp/worker-1"));
        assert_eq!(a.resource_prefix, "openshift.io");
        assert!(a.use_cdi);
        assert_eq!(a.log_level.as_deref(), Some("10"));
        let under = |dir: &std::path::Path, writable: bool| {
            OPERATOR_MOUNTS
                .iter()
                .any(|(m, w)| (*w || !writable) && dir.starts_with(m))
        };
        for dir in [
            &a.device_plugin_dir,
            &a.plugins_registry_dir,
            &a.devinfo_dir,
            &a.cdi_dir,
        ] {
            assert!(
                under(dir, true),
                "{} is not in a writable mount",
                dir.display()
            );
        }
        assert!(under(&a.config_file, false));
        // Not mounted by the operator: the plugin does without it (see main.rs).
        assert!(!under(&a.pod_resources_socket, false));
    }
}
