//! The requests an NSM client sends the forwarder (built here; sent over
//! the connections of `nsc.rs`).

use std::collections::HashMap;

use sriov_api::nsm::connection::{Connection, Mechanism, Path as NsmPath, PathSegment};
use sriov_api::nsm::connectioncontext::{ConnectionContext, EthernetContext, IpContext, Route};
use sriov_api::nsm::networkservice::NetworkServiceRequest;

/// A client's request: a path with the client's own segment, the
/// mechanism it wants with its parameters, and an IP context.
pub(crate) fn request(
    id: &str,
    mechanism: &str,
    params: &[(&str, String)],
    ip: bool,
) -> NetworkServiceRequest {
    request_with(id, mechanism, params, ip, None)
}

/// Like [`request`], with an ethernet context (MAC and VLAN for the VF).
pub(crate) fn request_with(
    id: &str,
    mechanism: &str,
    params: &[(&str, String)],
    ip: bool,
    ethernet: Option<(&str, i32)>,
) -> NetworkServiceRequest {
    let mut context = ip.then(|| ConnectionContext {
        ip_context: Some(IpContext {
            src_ip_addrs: vec!["172.16.1.2/30".into()],
            dst_ip_addrs: vec!["172.16.1.1/30".into()],
            src_routes: vec![Route {
                prefix: "10.60.0.0/16".into(),
                next_hop: "172.16.1.1".into(),
            }],
            ..Default::default()
        }),
        mtu: 1400,
        ..Default::default()
    });
    if let Some((mac, vlan)) = ethernet {
        context
            .get_or_insert_with(Default::default)
            .ethernet_context = Some(EthernetContext {
            src_mac: mac.into(),
            vlan_tag: vlan,
            ..Default::default()
        });
    }
    NetworkServiceRequest {
        connection: Some(Connection {
            id: id.into(),
            network_service: "sriov-ns".into(),
            context,
            path: Some(NsmPath {
                index: 0,
                path_segments: vec![PathSegment {
                    name: "sriov-e2e-client".into(),
                    id: id.into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        mechanism_preferences: vec![Mechanism {
            cls: "LOCAL".into(),
            r#type: mechanism.into(),
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<HashMap<_, _>>(),
        }],
    }
}
