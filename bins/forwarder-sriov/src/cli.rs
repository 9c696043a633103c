//! Command line: subcommands and the sysfs location options they share.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use sriov_pci::{PciAddress, Sysfs};

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

/// NSM SR-IOV forwarder: serves NSM's KERNEL and VFIO mechanisms from
/// SR-IOV VFs and advertises them to kubelet. Without a subcommand it runs
/// the daemon, configured by the environment below and the SR-IOV config
/// file (NSM_SRIOV_CONFIG_FILE).
#[derive(Debug, Parser)]
// The daemon's flags are accepted both bare (the DaemonSet runs the binary
// without a subcommand) and after `run`; `args_conflicts_with_subcommands`
// keeps them from being silently ignored before another subcommand.
#[command(
    version = version(),
    about,
    long_about = None,
    after_help = sriov_config::EnvConfig::help(),
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

/// Options of the daemon (`run`, or no subcommand).
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Start with an empty pool when the state file (in NSM_STATE_DIR) is
    /// unreadable or corrupt, keeping the bad file aside as
    /// `sriov-pool.json.corrupt-<unix-seconds>`. Without it the daemon
    /// refuses to start, since an empty pool would hand out tokens pods
    /// already hold. Remove it again once the daemon has started.
    #[arg(long)]
    reset_state: bool,
    /// Give VFIO devices at kubelet's Allocate on a cgroup v1 node too (on
    /// cgroup v2 they always are): each token is bound to a VF on vfio-pci
    /// from pod creation until the pod releases it, and its /dev/vfio nodes
    /// are returned as device specs, instead of writing devices.allow at
    /// Request time.
    #[arg(long)]
    vfio_at_allocate: bool,
    /// Log lines as `text` or `json` (one object per line); overrides
    /// NSM_LOG_FORMAT.
    #[arg(long, value_name = "FORMAT", value_parser = parse_log_format)]
    log_format: Option<sriov_telemetry::logging::LogFormat>,
    /// Serve Prometheus `/metrics`, `/readyz` and `/livez` on ADDR
    /// (`host:port`, `:port` or a port; without a host, loopback); empty:
    /// off. Overrides NSM_METRICS_LISTEN.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

fn parse_log_format(s: &str) -> Result<sriov_telemetry::logging::LogFormat, String> {
    s.parse().map_err(|e: sriov_telemetry::Error| e.to_string())
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the forwarder daemon (the default).
    Run(RunArgs),
    /// Validate the environment and the SR-IOV config file against sysfs;
    /// exit non-zero with every problem found. Names every configured PF that
    /// is skipped (not on this node, no SR-IOV, no VFs) with its line and the
    /// reason, and exits non-zero if a configured PF is not on this node.
    /// Changes nothing.
    CheckConfig {
        /// Exit 0 even when configured PFs are not on this node (a staged
        /// roll-out, where the ConfigMap names PFs some nodes lack); they are
        /// still listed.
        #[arg(long)]
        allow_missing: bool,
    },
    /// For every PCI network device, the resources it serves or why it serves
    /// none (PF not in the config, VF not listed, PF skipped and why); for
    /// every configured resource, why kubelet shows the count it shows.
    /// Reads the same environment as check-config, and NSM_STATE_DIR for the
    /// VFs pods hold. Changes nothing.
    Explain {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print PFs, VFs, drivers and IOMMU groups as discovery sees them.
    Inventory {
        #[command(flatten)]
        sysfs: SysfsArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// An SR-IOV config file: also show the resources it would advertise
        /// (read-only: no VFs are created).
        #[arg(long, env = "NSM_SRIOV_CONFIG_FILE")]
        config: Option<PathBuf>,
    },
    /// Operator actions on PCI functions (the same code paths the daemon uses).
    Pci {
        #[command(flatten)]
        sysfs: SysfsArgs,
        #[command(subcommand)]
        action: PciAction,
    },
}

#[derive(Debug, Subcommand)]
enum PciAction {
    /// Set the number of VFs of a PF (through 0 when changing a non-zero count).
    /// Refused while the forwarder's pool (NSM_STATE_DIR) has a VF of the PF
    /// in use by a connection, or more of its VFs held by pods than the new
    /// count, since changing the count removes every VF first.
    SetNumvfs {
        /// The PF's PCI address.
        pf: PciAddress,
        /// The VF count.
        count: u32,
        /// The forwarder's state directory, to see what pods hold.
        #[arg(long, env = "NSM_STATE_DIR", default_value = sriov_config::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Change the count even though pods hold VFs of the PF.
        #[arg(long)]
        force: bool,
    },
    /// Bind a function to a driver (driver_override + drivers_probe).
    Bind {
        /// The function's PCI address.
        address: PciAddress,
        /// The driver, e.g. vfio-pci.
        driver: String,
    },
    /// Unbind a function from its driver.
    Unbind {
        /// The function's PCI address.
        address: PciAddress,
    },
    /// Bind back to a driver and clear driver_override.
    Restore {
        /// The function's PCI address.
        address: PciAddress,
        /// The original driver; omit to leave it unbound.
        driver: Option<String>,
    },
}

/// Where sysfs is.
#[derive(Debug, Args)]
pub(crate) struct SysfsArgs {
    /// A sysfs root (a real /sys, or a fixture tree such as testdata/sysfs/node);
    /// overrides the two paths below.
    #[arg(long, value_name = "DIR")]
    sysfs_root: Option<PathBuf>,
    /// PCI devices directory.
    #[arg(long, env = "NSM_PCI_DEVICES_PATH", default_value = sriov_pci::DEFAULT_DEVICES_DIR)]
    pci_devices_path: PathBuf,
    /// PCI drivers directory.
    #[arg(long, env = "NSM_PCI_DRIVERS_PATH", default_value = sriov_pci::DEFAULT_DRIVERS_DIR)]
    pci_drivers_path: PathBuf,
}

impl SysfsArgs {
    /// The sysfs view, for a command that `writes` or only reads.
    pub(crate) fn sysfs(&self, writes: bool) -> Result<Sysfs> {
        match &self.sysfs_root {
            Some(root) => sysfs_at(
                &root.join("bus/pci/devices"),
                &root.join("bus/pci/drivers"),
                writes,
            ),
            None => sysfs_at(&self.pci_devices_path, &self.pci_drivers_path, writes),
        }
    }
}

/// The file that marks a fixture tree's root (`sriov_pci_fake::META_FILE`,
/// named here so that a build without the fake can still recognise one).
const FIXTURE_MARK: &str = "fake-kernel.json";

/// A sysfs view of the given dirs, for a command that `writes` or only
/// reads. When their root (`<root>/bus/pci/devices`) is a fixture tree,
/// marked by `fake-kernel.json`, a `testing` build sends writes through the
/// fake kernel so they react as on a real node (the demo and the end-to-end
/// tests). Any other build reads such a tree as it is and refuses to write
/// to it, so the file changes nothing it does to a host. A real sysfs never
/// has that file.
pub(crate) fn sysfs_at(devices: &Path, drivers: &Path, writes: bool) -> Result<Sysfs> {
    let sysfs = Sysfs::new(devices, drivers);
    let Some(root) = devices.ancestors().nth(3) else {
        return Ok(sysfs);
    };
    if !root.join(FIXTURE_MARK).exists() {
        return Ok(sysfs);
    }
    #[cfg(feature = "testing")]
    {
        // The fake kernel answers reads as the tree stands, so readers go
        // through it too: one view, whatever the command.
        let _ = writes;
        let fake = sriov_pci_fake::FakeKernel::attach(root)
            .with_context(|| format!("attaching the fake kernel to {}", root.display()))?;
        eprintln!(
            "note: {} is a fixture tree; writes go through the fake kernel",
            root.display()
        );
        Ok(sysfs.with_writer(std::sync::Arc::new(fake)))
    }
    #[cfg(not(feature = "testing"))]
    {
        anyhow::ensure!(
            !writes,
            "{} is a fixture tree ({FIXTURE_MARK}): this build has no fake kernel to drive it \
             (build with --features testing for the demo and the tests)",
            root.display()
        );
        Ok(sysfs)
    }
}

impl Cli {
    pub(crate) fn run(self) -> Result<()> {
        match self.command.unwrap_or(Command::Run(self.run)) {
            Command::Run(args) => {
                crate::memory::tune();
                let loaded = sriov_config::EnvConfig::from_env()?;
                let env = loaded.config;
                let endpoints = crate::ops::Addrs::new(&env, args.metrics_listen.as_deref())?;
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                // The OTLP exporters' channels run on the runtime; the
                // providers come before anything records.
                let (telemetry, levels) = {
                    let _in_runtime = rt.enter();
                    crate::telemetry::start(&env, args.log_format)?
                };
                for w in &loaded.warnings {
                    tracing::warn!("{w}");
                }
                let sysfs = sysfs_at(&env.pci_devices_path, &env.pci_drivers_path, true)?;
                let result = rt.block_on(crate::daemon::run(
                    env,
                    sysfs,
                    levels,
                    endpoints,
                    telemetry.prometheus(),
                    args.reset_state,
                    args.vfio_at_allocate,
                ));
                crate::telemetry::stop(&telemetry);
                result
            }
            Command::CheckConfig { allow_missing } => crate::check::run(allow_missing),
            Command::Explain { json } => crate::explain::run(json),
            Command::Inventory {
                sysfs,
                json,
                config,
            } => {
                let sysfs = sysfs.sysfs(false)?;
                let inv = sysfs.discover_all()?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&inv)?);
                    return Ok(());
                }
                print!("{}", crate::inventory::render(&inv));
                if let Some(file) = config.filter(|f| f.exists()) {
                    let found = sriov_forwarder::pool_entries(&file, &sysfs, false)?;
                    println!("With {}:", file.display());
                    for s in &found.skipped {
                        println!("  {s}");
                    }
                    print!("{}", crate::inventory::render_resources(&found.entries));
                }
                Ok(())
            }
            Command::Pci { sysfs, action } => {
                let sysfs = sysfs.sysfs(true)?;
                match action {
                    PciAction::SetNumvfs {
                        pf,
                        count,
                        state_dir,
                        force,
                    } => {
                        if !force {
                            refuse_held_vfs(&state_dir, pf, count)?;
                        }
                        let vfs = sysfs.set_num_vfs(pf, count)?;
                        println!("{pf}: {} VFs", vfs.len());
                        for vf in vfs {
                            println!("  virtfn{} {}", vf.index, vf.address);
                        }
                    }
                    PciAction::Bind { address, driver } => {
                        let prev = sysfs.bind(address, &driver)?;
                        println!(
                            "{address}: bound to {driver} (was {})",
                            prev.as_deref().unwrap_or("unbound")
                        );
                    }
                    PciAction::Unbind { address } => {
                        let prev = sysfs.unbind(address)?;
                        println!(
                            "{address}: unbound (was {})",
                            prev.as_deref().unwrap_or("unbound")
                        );
                    }
                    PciAction::Restore { address, driver } => {
                        sysfs.restore_driver(address, driver.as_deref())?;
                        println!(
                            "{address}: restored to {}",
                            driver.as_deref().unwrap_or("no driver")
                        );
                    }
                }
                Ok(())
            }
        }
    }
}

/// Refuses a VF count change that would pull VFs from under pods (see
/// `pci set-numvfs --help`).
fn refuse_held_vfs(state_dir: &Path, pf: PciAddress, count: u32) -> Result<()> {
    let tokens = sriov_token_pool::FileStore::read_tokens(state_dir)
        .with_context(|| format!("reading the pool state in {}", state_dir.display()))?;
    let of_pf: Vec<_> = tokens.iter().filter(|t| t.pf == pf).collect();
    let in_use: Vec<String> = of_pf
        .iter()
        .filter_map(|t| match &t.state {
            sriov_token_pool::TokenState::InUse(u) => Some(format!("{} ({})", u.vf, u.connection)),
            _ => None,
        })
        .collect();
    if !in_use.is_empty() {
        anyhow::bail!(
            "PF {pf}: VFs in use by connections: {}; changing the VF count removes every VF \
             first (close the connections, or pass --force)",
            in_use.join(", ")
        );
    }
    let held = of_pf.iter().filter(|t| t.reserves()).count();
    if held > count as usize {
        anyhow::bail!(
            "PF {pf}: pods hold {held} of its VFs, more than {count}; pass --force to change \
             the count anyway"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("forwarder-sriov").chain(args.iter().copied()))
    }

    fn reset_asked(cli: Cli) -> Option<bool> {
        match cli.command {
            None => Some(cli.run.reset_state),
            Some(Command::Run(args)) => Some(args.reset_state),
            Some(_) => None,
        }
    }

    #[cfg(feature = "testing")]
    #[test]
    fn the_fixture_mark_is_the_fake_kernels() {
        assert_eq!(FIXTURE_MARK, sriov_pci_fake::META_FILE);
    }

    #[cfg(not(feature = "testing"))]
    #[test]
    fn without_the_fake_kernel_a_fixture_tree_is_read_but_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let devices = dir.path().join("bus/pci/devices");
        std::fs::create_dir_all(&devices).unwrap();
        let drivers = dir.path().join("bus/pci/drivers");
        assert!(sysfs_at(&devices, &drivers, true).is_ok());
        std::fs::write(dir.path().join(FIXTURE_MARK), "{}").unwrap();
        assert!(
            sysfs_at(&devices, &drivers, false).is_ok(),
            "reading is harmless"
        );
        let err = sysfs_at(&devices, &drivers, true).unwrap_err();
        assert!(err.to_string().contains("no fake kernel"), "{err}");
    }

    #[test]
    fn reset_state_is_a_flag_of_the_daemon_only() {
        assert_eq!(reset_asked(parse(&[]).unwrap()), Some(false));
        assert_eq!(reset_asked(parse(&["--reset-state"]).unwrap()), Some(true));
        assert_eq!(reset_asked(parse(&["run"]).unwrap()), Some(false));
        assert_eq!(
            reset_asked(parse(&["run", "--reset-state"]).unwrap()),
            Some(true)
        );
        // Elsewhere it would be ignored, so it is refused.
        for args in [
            &["inventory", "--reset-state"][..],
            &["--reset-state", "check-config"][..],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn log_format_is_a_flag_of_the_daemon() {
        use sriov_telemetry::logging::LogFormat;
        let format = |cli: Cli| match cli.command {
            None => cli.run.log_format,
            Some(Command::Run(args)) => args.log_format,
            Some(other) => panic!("parsed as {other:?}"),
        };
        assert_eq!(format(parse(&[]).unwrap()), None);
        assert_eq!(
            format(parse(&["--log-format", "json"]).unwrap()),
            Some(LogFormat::Json)
        );
        assert_eq!(
            format(parse(&["run", "--log-format", "text"]).unwrap()),
            Some(LogFormat::Text)
        );
        assert!(parse(&["--log-format", "xml"]).is_err());
        assert!(parse(&["inventory", "--log-format", "json"]).is_err());
    }

    #[test]
    fn metrics_listen_is_a_flag_of_the_daemon() {
        let listen = |cli: Cli| match cli.command {
            None => cli.run.metrics_listen,
            Some(Command::Run(args)) => args.metrics_listen,
            Some(other) => panic!("parsed as {other:?}"),
        };
        assert_eq!(listen(parse(&[]).unwrap()), None);
        assert_eq!(
            listen(parse(&["--metrics-listen", ":9464"]).unwrap()).as_deref(),
            Some(":9464")
        );
        assert_eq!(
            listen(parse(&["run", "--metrics-listen", "127.0.0.1:9"]).unwrap()).as_deref(),
            Some("127.0.0.1:9")
        );
        assert!(parse(&["check-config", "--metrics-listen", ":9464"]).is_err());
    }

    #[test]
    fn allow_missing_is_a_flag_of_check_config() {
        for (args, want) in [
            (&["check-config"][..], false),
            (&["check-config", "--allow-missing"][..], true),
        ] {
            match parse(args).unwrap().command {
                Some(Command::CheckConfig { allow_missing }) => assert_eq!(allow_missing, want),
                other => panic!("{args:?} parsed as {other:?}"),
            }
        }
        assert!(parse(&["--allow-missing"]).is_err());
        assert!(parse(&["inventory", "--allow-missing"]).is_err());
    }
}
