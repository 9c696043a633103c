//! Dynamic Resource Allocation (`resource.k8s.io/v1`, GA in Kubernetes 1.34)
//! for SR-IOV VFs: the standalone plugin's DRA mode (`sriov-device-plugin
//! dra`), over the same discovery, selectors, health and CDI files as its
//! device-plugin mode (`sriov-selector-pools`).
//!
//! # Model
//!
//! - [`devices`]: every member of every selector pool becomes one DRA
//!   device, named from its PCI address (`0000-3b-02-1`), carrying the
//!   pool's resource name. Devices are the same whichever mode serves them.
//! - [`attributes`] and [`slices`]: the attributes dra-driver-sriov publishes
//!   (so existing DeviceClasses, CEL selectors and Multus keep working), cut
//!   into ResourceSlices of one pool per node; [`publisher`] keeps the API
//!   server's slices equal to them (create, update, delete, generation,
//!   conflicts) and follows a watch on them.
//! - [`claims`]: reads a ResourceClaim's allocation for this driver.
//! - [`vfconfig`]: the opaque `VfConfig` parameters (driver, interface name,
//!   network attachment), as dra-driver-sriov reads them, checked strictly.
//! - [`checkpoint`] and [`prepare`]: NodePrepareResources binds drivers,
//!   writes one CDI spec per claim and the device-info files for CNI, each
//!   host change recorded before it is made; NodeUnprepareResources undoes
//!   exactly what was recorded, also after a restart.
//! - [`service`]: the kubelet side: plugin-watcher registration
//!   (`DRAPlugin`), the `DRAPlugin` service in v1 and v1beta1, and the
//!   KEP-4680 health stream ([`health`]).
//!
//! The kubelet wire is also checked by a second, independent kubelet:
//! `crates/dra/interop/fake_kubelet_dra.py`, Python grpcio built from protos
//! written apart from `proto/`, drives registration, prepare, unprepare (v1
//! and v1beta1) and health through the real `sriov-device-plugin dra` binary
//! against `sriov-e2e fake-apiserver` (the grpc-interop suite, `cargo xtask
//! interop`).

// This crate reads kubelet, API server and file input: a panic here is a
// denial of service of a node agent, so the panicking shortcuts are refused.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod attributes;
pub mod checkpoint;
pub mod claims;
pub mod devices;
pub mod health;
pub mod prepare;
pub mod publisher;
pub mod service;
pub mod slices;
#[cfg(feature = "testing")]
pub mod testing;
pub mod vfconfig;

/// The driver name dra-driver-sriov registers and publishes under; ours by
/// default, so its DeviceClasses select our devices.
pub const DEFAULT_DRIVER_NAME: &str = "sriovnetwork.k8snetworkplumbingwg.io";
/// CDI class of a prepared VF (`<driver>/vf=<claim uid>-<device>`), as
/// dra-driver-sriov names them.
pub const CDI_CLASS: &str = "vf";
