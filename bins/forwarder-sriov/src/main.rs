//! `forwarder-sriov`: the NSM SR-IOV forwarder binary.
//!
//! This crate only composes the library crates; behaviour lives in them.
//! Without a subcommand it runs the daemon (`daemon.rs`, its metrics and
//! debug endpoints in `ops.rs`); `check-config`
//! validates the environment and the config file; `explain` says why each
//! device serves which resource or none; `inventory` shows what
//! discovery sees; `pci` runs operator actions on PFs and VFs through the
//! same code the daemon uses.

mod check;
mod cli;
mod daemon;
mod explain;
mod inventory;
mod memory;
mod ops;
mod telemetry;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("forwarder-sriov: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
