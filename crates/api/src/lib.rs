//! Generated gRPC code for the two APIs this project speaks: kubelet's
//! (device plugins, pod resources, plugin registration, DRA) and Network Service
//! Mesh's (connections, the NetworkService, the registry).
//!
//! The `.proto` files under `proto/` at the repository root are written by
//! hand from the upstream wire facts: package, service, method and message
//! names and every field number are the upstream ones, so the gRPC paths
//! (for example `/v1beta1.DevicePlugin/Allocate`,
//! `/networkservice.NetworkService/Request`) and the encoded bytes are what
//! kubelet and NSM expect. `build.rs` compiles them with the protoc from
//! `protoc-bin-vendored`; no system protoc is needed.
//!
//! Each module holds prost messages plus a tonic client (`*_client`) and
//! server (`*_server`) per service. Module paths follow the upstream proto
//! packages:
//!
//! | module | proto package | upstream |
//! |---|---|---|
//! | [`kubelet::deviceplugin::v1beta1`] | `v1beta1` | k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1 |
//! | [`kubelet::podresources::v1`] | `v1` | k8s.io/kubelet/pkg/apis/podresources/v1 |
//! | [`kubelet::pluginregistration`] | `pluginregistration` | k8s.io/kubelet/pkg/apis/pluginregistration/v1 |
//! | [`kubelet::dra::v1`], [`kubelet::dra::v1beta1`] | `k8s.io.kubelet.pkg.apis.dra.v1`, `...v1beta1` | k8s.io/kubelet/pkg/apis/dra/v1, v1beta1 |
//! | [`kubelet::dra::health_v1alpha1`] | `v1alpha1` | k8s.io/kubelet/pkg/apis/dra-health/v1alpha1 |
//! | [`nsm::connection`], [`nsm::connectioncontext`], [`nsm::networkservice`] | same names | networkservicemesh/api/pkg/api/networkservice |
//! | [`nsm::registry`] | `registry` | networkservicemesh/api/pkg/api/registry |
//!
//! `google.protobuf.Timestamp` maps to [`prost_types::Timestamp`] and
//! `google.protobuf.Empty` to `()`.
//!
//! # Example
//!
//! ```
//! use sriov_api::kubelet::deviceplugin::v1beta1::{
//!     Device, ListAndWatchResponse, NumaNode, TopologyInfo,
//! };
//! use sriov_api::prost::Message;
//!
//! let update = ListAndWatchResponse {
//!     devices: vec![Device {
//!         id: "0000:3b:02.1".into(),
//!         health: sriov_api::kubelet::deviceplugin::HEALTHY.into(),
//!         topology: Some(TopologyInfo { nodes: vec![NumaNode { id: 0 }] }),
//!     }],
//! };
//! let bytes = update.encode_to_vec();
//! assert_eq!(ListAndWatchResponse::decode(bytes.as_slice()).unwrap(), update);
//! ```

mod backoff;
pub use backoff::Backoff;
pub use prost;
/// Largest NSM message (Request, Close, Connection, registry entries) our
/// servers decode and our clients send or accept; real ones are a few KiB,
/// so a peer cannot make us buffer more than this per call.
pub const NSM_MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Largest kubelet device-plugin message we decode or send (a
/// ListAndWatch of every VF on a large node stays far below it).
pub const DEVICE_PLUGIN_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest pod-resources `List` answer we accept: kubelet's own server
/// limit, since the answer covers every pod on the node.
pub const POD_RESOURCES_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// HTTP/2 streams one client may have open on our servers at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 128;
pub use prost_types;
pub use tonic;

/// Kubelet's gRPC APIs.
pub mod kubelet {
    /// The device plugin API and its well-known constants.
    pub mod deviceplugin {
        /// The only device plugin API version kubelet accepts in `Register`.
        pub const VERSION: &str = "v1beta1";
        /// `Device.health` of a usable device.
        pub const HEALTHY: &str = "Healthy";
        /// `Device.health` of a device kubelet must not hand out.
        pub const UNHEALTHY: &str = "Unhealthy";
        /// Default directory of plugin sockets and of kubelet's `kubelet.sock`.
        pub const DEVICE_PLUGIN_PATH: &str = "/var/lib/kubelet/device-plugins/";
        /// File name of kubelet's registration socket in the device-plugin dir.
        pub const KUBELET_SOCKET: &str = "kubelet.sock";

        /// Package `v1beta1`: `Registration` (kubelet side) and
        /// `DevicePlugin` (plugin side).
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod v1beta1 {
            include!(concat!(env!("OUT_DIR"), "/v1beta1.rs"));
        }
    }

    /// The pod-resources API: which pod holds which devices.
    pub mod podresources {
        /// Default directory of kubelet's pod-resources socket.
        pub const POD_RESOURCES_PATH: &str = "/var/lib/kubelet/pod-resources/";

        /// Package `v1`: `PodResourcesLister`.
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/v1.rs"));
        }
    }

    /// Package `pluginregistration`: the plugin-watcher API a plugin serves
    /// on its socket in [`pluginregistration::PLUGINS_REGISTRY_PATH`].
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod pluginregistration {
        include!(concat!(env!("OUT_DIR"), "/pluginregistration.rs"));

        /// Directory kubelet's plugin watcher observes for plugin sockets.
        pub const PLUGINS_REGISTRY_PATH: &str = "/var/lib/kubelet/plugins_registry/";
        /// `PluginInfo.type` of a device plugin.
        pub const DEVICE_PLUGIN_TYPE: &str = "DevicePlugin";
        /// `PluginInfo.type` of a Dynamic Resource Allocation plugin.
        pub const DRA_PLUGIN_TYPE: &str = "DRAPlugin";
    }

    /// Dynamic Resource Allocation: the plugin API kubelet calls to prepare
    /// and unprepare claims, and the device health stream (KEP-4680).
    pub mod dra {
        /// Directory under which DRA plugins keep their own sockets
        /// (`<dir>/<driver>/dra.sock`).
        pub const PLUGINS_PATH: &str = "/var/lib/kubelet/plugins/";

        /// Package `k8s.io.kubelet.pkg.apis.dra.v1` (Kubernetes 1.34+).
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod v1 {
            include!(concat!(
                env!("OUT_DIR"),
                "/k8s.io.kubelet.pkg.apis.dra.v1.rs"
            ));
            /// Listed in `PluginInfo.supported_versions` by a plugin serving this version.
            pub const SERVICE: &str = "v1.DRAPlugin";
        }

        /// Package `k8s.io.kubelet.pkg.apis.dra.v1beta1` (kubelet 1.32 and 1.33).
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod v1beta1 {
            include!(concat!(
                env!("OUT_DIR"),
                "/k8s.io.kubelet.pkg.apis.dra.v1beta1.rs"
            ));
            /// Listed in `PluginInfo.supported_versions` by a plugin serving this version.
            pub const SERVICE: &str = "v1beta1.DRAPlugin";
        }

        /// Package `v1alpha1` of `dra-health`: `DRAResourceHealth`.
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod health_v1alpha1 {
            include!(concat!(env!("OUT_DIR"), "/v1alpha1.rs"));
        }
    }
}

/// Network Service Mesh's gRPC APIs. The modules are siblings because the
/// generated code refers across them (`connection` uses `connectioncontext`).
pub mod nsm {
    /// Package `connectioncontext`: IP, DNS, Ethernet context and MTU.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod connectioncontext {
        include!(concat!(env!("OUT_DIR"), "/connectioncontext.rs"));
    }

    /// Package `connection`: `Connection`, `Mechanism`, `Path`, and the
    /// `MonitorConnection` service.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod connection {
        include!(concat!(env!("OUT_DIR"), "/connection.rs"));
    }

    /// Package `networkservice`: the `NetworkService` with `Request` and `Close`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod networkservice {
        include!(concat!(env!("OUT_DIR"), "/networkservice.rs"));
    }

    /// Package `registry`: network services, endpoints, and their registries.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod registry {
        include!(concat!(env!("OUT_DIR"), "/registry.rs"));
    }
}
