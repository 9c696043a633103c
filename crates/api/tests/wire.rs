//! The generated code must put kubelet's and NSM's bytes on the wire: these
//! tests pin service names and field numbers to encodings worked out by hand
//! from the upstream protos, so a typo in `proto/` fails here rather than
//! against a real kubelet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_api::kubelet::pluginregistration as reg;
use sriov_api::kubelet::podresources::v1 as pr;
use sriov_api::nsm::{connection, connectioncontext, networkservice, registry};
use sriov_api::prost::Message;
use sriov_api::tonic::server::NamedService;

/// A length-delimited field: tag byte, length, payload.
fn ld(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![tag, u8::try_from(payload.len()).unwrap()];
    v.extend_from_slice(payload);
    v
}

struct Nop;

#[test]
fn service_names_are_the_upstream_grpc_service_names() {
    assert_eq!(
        <dp::registration_server::RegistrationServer<Nop> as NamedService>::NAME,
        "v1beta1.Registration"
    );
    assert_eq!(
        <dp::device_plugin_server::DevicePluginServer<Nop> as NamedService>::NAME,
        "v1beta1.DevicePlugin"
    );
    assert_eq!(
        <pr::pod_resources_lister_server::PodResourcesListerServer<Nop> as NamedService>::NAME,
        "v1.PodResourcesLister"
    );
    assert_eq!(
        <reg::registration_server::RegistrationServer<Nop> as NamedService>::NAME,
        "pluginregistration.Registration"
    );
    assert_eq!(
        <networkservice::network_service_server::NetworkServiceServer<Nop> as NamedService>::NAME,
        "networkservice.NetworkService"
    );
    assert_eq!(
        <connection::monitor_connection_server::MonitorConnectionServer<Nop> as NamedService>::NAME,
        "connection.MonitorConnection"
    );
    assert_eq!(
        <registry::network_service_endpoint_registry_server::NetworkServiceEndpointRegistryServer<
            Nop,
        > as NamedService>::NAME,
        "registry.NetworkServiceEndpointRegistry"
    );
    assert_eq!(
        <registry::network_service_registry_server::NetworkServiceRegistryServer<Nop> as NamedService>::NAME,
        "registry.NetworkServiceRegistry"
    );
}

#[test]
fn register_request_uses_kubelet_field_numbers() {
    let req = dp::RegisterRequest {
        version: "v1beta1".into(),
        endpoint: "a.sock".into(),
        resource_name: "x/y".into(),
        options: Some(dp::DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }),
    };
    let mut want = ld(0x0a, b"v1beta1");
    want.extend(ld(0x12, b"a.sock"));
    want.extend(ld(0x1a, b"x/y"));
    want.extend(ld(0x22, &[0x10, 0x01]));
    assert_eq!(req.encode_to_vec(), want);
}

#[test]
fn device_with_numa_topology_uses_kubelet_field_numbers() {
    let dev = dp::Device {
        id: "d".into(),
        health: "Healthy".into(),
        topology: Some(dp::TopologyInfo {
            nodes: vec![dp::NumaNode { id: 1 }],
        }),
    };
    let mut want = ld(0x0a, b"d");
    want.extend(ld(0x12, b"Healthy"));
    want.extend(ld(0x1a, &ld(0x0a, &[0x08, 0x01])));
    assert_eq!(dev.encode_to_vec(), want);
}

#[test]
fn container_allocate_response_carries_cdi_devices_as_field_five() {
    let resp = dp::ContainerAllocateResponse {
        cdi_devices: vec![dp::CdiDevice {
            name: "v/c=n".into(),
        }],
        ..Default::default()
    };
    assert_eq!(resp.encode_to_vec(), ld(0x2a, &ld(0x0a, b"v/c=n")));
    let pref = dp::ContainerPreferredAllocationRequest {
        available_device_i_ds: vec![],
        must_include_device_i_ds: vec!["m".into()],
        allocation_size: 2,
    };
    let mut want = ld(0x12, b"m");
    want.extend([0x18, 0x02]);
    assert_eq!(pref.encode_to_vec(), want);
}

#[test]
fn pod_resources_messages_use_kubelet_field_numbers() {
    let devs = pr::ContainerDevices {
        resource_name: "r".into(),
        device_ids: vec!["a".into()],
        topology: None,
    };
    let mut want = ld(0x0a, b"r");
    want.extend(ld(0x12, b"a"));
    assert_eq!(devs.encode_to_vec(), want);
    // claim_name is field 2: field 1 was retired upstream.
    let dynamic = pr::DynamicResource {
        claim_name: "c".into(),
        ..Default::default()
    };
    assert_eq!(dynamic.encode_to_vec(), ld(0x12, b"c"));
    let get = pr::GetPodResourcesRequest {
        pod_name: "p".into(),
        pod_namespace: "n".into(),
    };
    let mut want = ld(0x0a, b"p");
    want.extend(ld(0x12, b"n"));
    assert_eq!(get.encode_to_vec(), want);
}

#[test]
fn plugin_info_uses_kubelet_field_numbers() {
    let info = reg::PluginInfo {
        r#type: "DevicePlugin".into(),
        name: "n".into(),
        endpoint: "/e".into(),
        supported_versions: vec!["v1beta1".into()],
    };
    let mut want = ld(0x0a, b"DevicePlugin");
    want.extend(ld(0x12, b"n"));
    want.extend(ld(0x1a, b"/e"));
    want.extend(ld(0x22, b"v1beta1"));
    assert_eq!(info.encode_to_vec(), want);
}

#[test]
fn nsm_connection_uses_nsm_field_numbers() {
    let conn = connection::Connection {
        network_service_endpoint_name: "e".into(),
        state: connection::State::Down.into(),
        context: Some(connectioncontext::ConnectionContext {
            mtu: 1500,
            ethernet_context: Some(connectioncontext::EthernetContext {
                vlan_tag: 7,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    // context (4) { ethernet_context (3) { vlan_tag (3) = 7 }, MTU (5) = 1500 }
    let mut ctx = ld(0x1a, &[0x18, 0x07]);
    ctx.extend([0x28, 0xdc, 0x0b]);
    let mut want = ld(0x22, &ctx);
    want.extend(ld(0x3a, b"e"));
    want.extend([0x48, 0x01]);
    assert_eq!(conn.encode_to_vec(), want);

    let seg = connection::PathSegment {
        token: "t".into(),
        expires: Some(sriov_api::prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    };
    let mut want = ld(0x1a, b"t");
    want.extend(ld(0x22, &[0x08, 0x01]));
    assert_eq!(seg.encode_to_vec(), want);
}

#[test]
fn nsm_registry_endpoint_uses_nsm_field_numbers() {
    let nse = registry::NetworkServiceEndpoint {
        name: "f".into(),
        network_service_names: vec!["s".into()],
        url: "unix:///x".into(),
        expiration_time: Some(sriov_api::prost_types::Timestamp {
            seconds: 2,
            nanos: 0,
        }),
        ..Default::default()
    };
    let mut want = ld(0x0a, b"f");
    want.extend(ld(0x12, b"s"));
    want.extend(ld(0x22, b"unix:///x"));
    want.extend(ld(0x2a, &[0x08, 0x02]));
    assert_eq!(nse.encode_to_vec(), want);

    let q = registry::NetworkServiceEndpointQuery {
        network_service_endpoint: None,
        watch: true,
    };
    assert_eq!(q.encode_to_vec(), vec![0x10, 0x01]);
}

#[test]
fn network_service_request_carries_preferences_as_field_two() {
    let req = networkservice::NetworkServiceRequest {
        connection: None,
        mechanism_preferences: vec![connection::Mechanism {
            cls: "LOCAL".into(),
            r#type: "KERNEL".into(),
            parameters: Default::default(),
        }],
    };
    let mut mech = ld(0x0a, b"LOCAL");
    mech.extend(ld(0x12, b"KERNEL"));
    assert_eq!(req.encode_to_vec(), ld(0x12, &mech));
}

#[test]
fn dra_services_use_kubelets_package_paths() {
    use sriov_api::kubelet::dra::{health_v1alpha1 as health, v1, v1beta1};
    assert_eq!(
        <v1::dra_plugin_server::DraPluginServer<Nop> as NamedService>::NAME,
        "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin"
    );
    assert_eq!(
        <v1beta1::dra_plugin_server::DraPluginServer<Nop> as NamedService>::NAME,
        "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin"
    );
    assert_eq!(
        <health::dra_resource_health_server::DraResourceHealthServer<Nop> as NamedService>::NAME,
        "v1alpha1.DRAResourceHealth"
    );
    // What kubelet's plugin manager matches in PluginInfo.supported_versions.
    assert_eq!(v1::SERVICE, "v1.DRAPlugin");
    assert_eq!(v1beta1::SERVICE, "v1beta1.DRAPlugin");
    assert_eq!(reg::DRA_PLUGIN_TYPE, "DRAPlugin");
}

#[test]
fn dra_messages_use_kubelet_field_numbers() {
    use sriov_api::kubelet::dra::{v1, v1beta1};
    let claim = v1::Claim {
        namespace: "n".into(),
        uid: "u".into(),
        name: "m".into(),
    };
    assert_eq!(
        claim.encode_to_vec(),
        [ld(0x0a, b"n"), ld(0x12, b"u"), ld(0x1a, b"m")].concat()
    );
    let device = v1::Device {
        request_names: vec!["a".into()],
        pool_name: "p".into(),
        device_name: "d".into(),
        cdi_device_ids: vec!["c".into()],
        share_id: Some("s".into()),
    };
    let want = [
        ld(0x0a, b"a"),
        ld(0x12, b"p"),
        ld(0x1a, b"d"),
        ld(0x22, b"c"),
        ld(0x2a, b"s"),
    ]
    .concat();
    assert_eq!(device.encode_to_vec(), want);
    // v1beta1 is v1 without share_id (field 5).
    let beta = v1beta1::Device {
        request_names: vec!["a".into()],
        pool_name: "p".into(),
        device_name: "d".into(),
        cdi_device_ids: vec!["c".into()],
    };
    assert_eq!(beta.encode_to_vec(), want[..want.len() - 3]);
    // map<string, NodePrepareResourceResponse> claims = 1: entries of key 1, value 2; the
    // per-claim error is field 2 (devices 1).
    let answer = v1::NodePrepareResourcesResponse {
        claims: [(
            "u".to_string(),
            v1::NodePrepareResourceResponse {
                devices: vec![],
                error: "e".into(),
            },
        )]
        .into(),
    };
    let entry = [ld(0x0a, b"u"), ld(0x12, &ld(0x12, b"e"))].concat();
    assert_eq!(answer.encode_to_vec(), ld(0x0a, &entry));
    // NodeUnprepareResourceResponse.error is field 1.
    let un = v1::NodeUnprepareResourcesResponse {
        claims: [(
            "u".to_string(),
            v1::NodeUnprepareResourceResponse { error: "e".into() },
        )]
        .into(),
    };
    let entry = [ld(0x0a, b"u"), ld(0x12, &ld(0x0a, b"e"))].concat();
    assert_eq!(un.encode_to_vec(), ld(0x0a, &entry));
}

#[test]
fn dra_health_uses_kubelet_field_numbers() {
    use sriov_api::kubelet::dra::health_v1alpha1 as health;
    let h = health::DeviceHealth {
        device: Some(health::DeviceIdentifier {
            pool_name: "p".into(),
            device_name: "d".into(),
        }),
        health: health::HealthStatus::Unhealthy.into(),
        last_updated_time: 5,
        health_check_timeout_seconds: 7,
        message: "m".into(),
    };
    let want = [
        ld(0x0a, &[ld(0x0a, b"p"), ld(0x12, b"d")].concat()),
        vec![0x10, 0x02, 0x18, 0x05, 0x20, 0x07],
        ld(0x2a, b"m"),
    ]
    .concat();
    assert_eq!(h.encode_to_vec(), want);
    assert_eq!(health::HealthStatus::Unknown as i32, 0);
    assert_eq!(health::HealthStatus::Healthy as i32, 1);
}
