//! Link flags for the daemon's binary.

fn main() {
    // RELR (`-z pack-relative-relocs`) packs this PIE's relative relocations, 0.9 MB of
    // `.rela.dyn` that ld.so reads whole at every start and that then stays resident, into a
    // few KB (issue #21's idle RSS). glibc 2.36 and later apply them: Debian 12, the build
    // image's and the distroless runtime image's; an older glibc refuses to load the binary.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
