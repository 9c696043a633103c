//! Compiles `proto/pprof/profile.proto` with the protoc shipped in
//! `protoc-bin-vendored`, as `sriov-api` does for its protos.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let proto = root.join("pprof/profile.proto");

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.compile_protos(&[&proto], &[&root])?;

    println!("cargo:rerun-if-changed={}", proto.display());
    Ok(())
}
