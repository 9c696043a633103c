//! `forwarder-sriov`: the NSM SR-IOV forwarder binary.
//!
//! This crate only composes the library crates; behaviour lives in them.
//! Subcommands so far: `inventory` (what discovery sees and would
//! advertise) and `pci` (operator actions on PFs and VFs through the same
//! code the daemon uses).

mod cli;
mod inventory;

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
