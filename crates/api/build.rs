//! Compiles `proto/` with the protoc shipped in `protoc-bin-vendored`, so a
//! fresh machine needs no system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let wkt = protoc_bin_vendored::include_path()?;

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    let protos = [
        "kubelet/deviceplugin/v1beta1/api.proto",
        "kubelet/podresources/v1/api.proto",
        "kubelet/pluginregistration/v1/api.proto",
        "kubelet/dra/v1/api.proto",
        "kubelet/dra/v1beta1/api.proto",
        "kubelet/dra-health/v1alpha1/api.proto",
        "nsm/networkservice/connectioncontext.proto",
        "nsm/networkservice/connection.proto",
        "nsm/networkservice/networkservice.proto",
        "nsm/registry/registry.proto",
    ]
    .map(|p| root.join(p));

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &protos, &[root.clone(), wkt])?;

    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
