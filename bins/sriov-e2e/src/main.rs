//! `sriov-e2e`: drives the real `forwarder-sriov` binary end to end with
//! stand-ins for kubelet and the NSM manager, and prints a transcript with
//! a PASS or FAIL line per check.
//!
//! The demo (`cargo xtask demo`), the forwarder's end-to-end test and the
//! QEMU VM test all run it: on a fixture tree with veth stand-ins for the
//! VF netdevs (`--veth`, inside a private network namespace), or on a real
//! node's sysfs with real VFs. The flow is the one a pod sees: kubelet
//! registration and ListAndWatch, Allocate handing out a token, the
//! forwarder registering with NSM, a KERNEL Request moving a VF netdev
//! into the client's namespace with its addresses and routes, Close
//! bringing it back, optionally a VFIO Request, and a clean shutdown.

mod allocate;
mod apiserver;
mod chaos;
mod checks;
mod client;
mod dra;
mod forwarder;
mod hostile;
mod inspect;
mod nsc;
mod ops;
mod otlp;
mod restart;
mod soak;
mod spire;
mod srdp;
mod srdp_health;

use std::path::PathBuf;
use std::process::ExitCode;

/// Command-line options.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) forwarder: PathBuf,
    pub(crate) sysfs_root: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) resource: String,
    pub(crate) veth: bool,
    pub(crate) vfio: bool,
    pub(crate) vfio_path: Option<PathBuf>,
    pub(crate) ping: Option<String>,
    pub(crate) vf_config: bool,
    pub(crate) hostile: bool,
    /// Kill -9 and restart the forwarder mid-connection (`restart.rs`).
    pub(crate) restart: bool,
    /// Rounds of the crash campaign (`chaos.rs`); 0: none.
    pub(crate) chaos: usize,
    /// KERNEL cycles of the soak (`soak.rs`); 0: none.
    pub(crate) soak: usize,
    /// Racing Requests over every token the pod can get (`chaos::race`); 0: none.
    pub(crate) race: usize,
    /// The main KERNEL Request names the client's namespace by `file://`
    /// path instead of sending it by fd (a forwarder in development mode).
    pub(crate) netns_by_path: bool,
    /// Plaintext, as with `NSM_INSECURE=true` (secure mode is the default).
    pub(crate) insecure: bool,
    /// The forwarder pushes to a fake OTLP collector; its trace of the
    /// KERNEL Request and its metrics are checked (`otlp.rs`).
    pub(crate) telemetry: bool,
    /// The forwarder serves `/metrics`, `/readyz`, `/livez` and the debug
    /// endpoint; readiness, counters, the profile and the state are
    /// checked (`ops.rs`).
    pub(crate) ops: bool,
}

enum Mode {
    Forwarder(Options),
    Srdp(srdp::SrdpOptions),
    Allocate(allocate::AllocateOptions),
    Dra(dra::DraOptions),
    ApiServer(apiserver::ApiServerOptions),
}

const USAGE: &str = "usage: sriov-e2e --forwarder PATH --sysfs-root DIR --config FILE --work DIR \
[--resource NAME] [--veth] [--vfio] [--vfio-path DIR] [--ping IP] [--vf-config] [--hostile] [--restart] \
[--chaos ROUNDS] [--soak CYCLES] [--race REQUESTS] [--netns-by-path] [--insecure] [--telemetry] [--ops]";

fn parse() -> Result<Options, String> {
    let mut o = Options {
        forwarder: PathBuf::new(),
        sysfs_root: PathBuf::from("/sys"),
        config: PathBuf::new(),
        work: PathBuf::new(),
        resource: "worker.domain/10G".into(),
        veth: false,
        vfio: false,
        vfio_path: None,
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
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--forwarder" => o.forwarder = value()?.into(),
            "--sysfs-root" => o.sysfs_root = value()?.into(),
            "--config" => o.config = value()?.into(),
            "--work" => o.work = value()?.into(),
            "--resource" => o.resource = value()?,
            "--vfio-path" => o.vfio_path = Some(value()?.into()),
            "--ping" => o.ping = Some(value()?),
            "--veth" => o.veth = true,
            "--vfio" => o.vfio = true,
            "--vf-config" => o.vf_config = true,
            "--hostile" => o.hostile = true,
            "--restart" => o.restart = true,
            "--netns-by-path" => o.netns_by_path = true,
            "--insecure" => o.insecure = true,
            "--telemetry" => o.telemetry = true,
            "--ops" => o.ops = true,
            "--race" => {
                o.race = value()?
                    .parse()
                    .map_err(|e| format!("--race takes a number of Requests: {e}"))?;
            }
            "--soak" => {
                o.soak = value()?
                    .parse()
                    .map_err(|e| format!("--soak takes a number of cycles: {e}"))?;
            }
            "--chaos" => {
                o.chaos = value()?
                    .parse()
                    .map_err(|e| format!("--chaos takes a number of rounds: {e}"))?;
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.forwarder.as_os_str().is_empty()
        || o.config.as_os_str().is_empty()
        || o.work.as_os_str().is_empty()
    {
        return Err(USAGE.to_string());
    }
    Ok(o)
}

fn main() -> ExitCode {
    // `sriov-e2e srdp ...` checks the standalone device plugin instead.
    // `sriov-e2e allocate ...` hands a container runtime VFIO devices at Allocate.
    // `sriov-e2e fake-apiserver ...` only serves the API server stand-in, for other drivers.
    let parsed = match std::env::args().nth(1).as_deref() {
        Some("srdp") => srdp::parse(std::env::args().skip(2)).map(Mode::Srdp),
        Some("allocate") => allocate::parse(std::env::args().skip(2)).map(Mode::Allocate),
        Some("dra") => dra::parse(std::env::args().skip(2)).map(Mode::Dra),
        Some("fake-apiserver") => apiserver::parse(std::env::args().skip(2)).map(Mode::ApiServer),
        _ => parse().map(Mode::Forwarder),
    };
    let mode = match parsed {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sriov-e2e: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = rt.block_on(async {
        match mode {
            Mode::Forwarder(o) => checks::run(o).await,
            Mode::Srdp(o) => srdp::run(o).await,
            Mode::Allocate(o) => allocate::run(o).await,
            Mode::Dra(o) => dra::run(o).await,
            Mode::ApiServer(o) => apiserver::run(o).await,
        }
    });
    println!("{}", report.summary());
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
