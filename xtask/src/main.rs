//! Project automation, run as `cargo xtask <command>`.
//!
//! `test` is what CI runs (`.ci/run` calls it): formatting, clippy with
//! warnings denied, the dependency policy, every test suite, and the suites
//! that need more than cargo (network namespaces, the QEMU VM). Every suite
//! reports whether it ran, passed, failed or was skipped, and why.

mod architecture;
mod bench;
mod chaos;
mod conventions;
mod demo;
mod deploy;
mod fuzz;
mod interop;
mod publish;
mod report;
mod setup;
mod suites;
mod vm;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test      everything CI runs: fmt, clippy, deny, all test suites, the
            publish dry run of the reusable crates, vm-test
  lint      fmt check, clippy (-D warnings) and cargo-deny
  bench     benchmarks; prints figures (never asserts on time)
  demo      the main job on the shipped fixtures
  deploy-check
            the image and manifest checks: Dockerfile shape and hadolint,
            kustomize renderings, Kubernetes schema validation, checkov
  fuzz      the cargo-fuzz targets [--time SECS] [--list] [TARGET...]
  chaos     the crash campaign: SIGKILL at every failpoint and at random
            instants, host audited after each fault; the full one ends on
            real VFs in the VM [--rounds N] [--vm-rounds N]
  interop   only the grpc-interop suite: Python grpcio as kubelet against
            the device plugin and DRA mode
  vm-test   boot a QEMU guest with an igb SR-IOV NIC and run the checks on real VFs
            [--update-fixture] [--timeout SECS]
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    // A full run builds everything once: incremental caches would only fill
    // the disk (several GiB on a fresh CI machine). Re-run with them off.
    if cmd == "test" && std::env::var_os("CARGO_INCREMENTAL").is_none() {
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env("CARGO_INCREMENTAL", "0")
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    match cmd.as_str() {
        "test" => suites::test(&rest),
        "lint" => suites::lint(),
        "bench" => bench::run(&rest),
        "demo" => demo::run(&rest),
        "deploy-check" => deploy::run(&rest),
        "vm-test" => vm::run(&rest),
        "interop" => interop::main(),
        "fuzz" => fuzz::run(&rest),
        "chaos" => chaos::run(&rest),
        "" | "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}
