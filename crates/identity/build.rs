//! Compiles the SPIFFE Workload API proto for the fake agent, only with
//! feature `testing`: a production build carries no Workload API server.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.join("spiffe").display());
    if std::env::var_os("CARGO_FEATURE_TESTING").is_none() {
        return Ok(());
    }
    let wkt = protoc_bin_vendored::include_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(
            config,
            &[root.join("spiffe/workload.proto")],
            &[root.clone(), wkt],
        )?;
    Ok(())
}
