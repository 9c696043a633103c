//! `limits`: refuses oversized input before anything else reads it.
//!
//! The first element of the chain. Every string, map and list a client
//! sends in a Request or Close has a documented bound (the constants
//! below, listed in the README's hostile-request table); a breach is
//! INVALID_ARGUMENT naming the field and the limit, so a handful of
//! requests cannot grow the forwarder's memory without bound (each
//! connection is kept, with its path, until Close or expiry). The gRPC
//! servers also cap whole messages at [`MAX_MESSAGE_BYTES`]. Nothing to
//! undo.

use std::collections::HashMap;

use sriov_api::nsm::connection::{Connection, MonitorScopeSelector, PathSegment};
use sriov_api::nsm::connectioncontext::ConnectionContext;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tonic::Status;

use crate::{Ctx, Element, Next};

/// Largest gRPC message any of our NSM servers decodes, and any client sends.
pub const MAX_MESSAGE_BYTES: usize = sriov_api::NSM_MAX_MESSAGE_BYTES;
/// Ids, names, network services, endpoint names, payloads, mechanism
/// classes and types, label and parameter keys.
pub const MAX_NAME_BYTES: usize = 256;
/// A path segment's token (NSM's are signed JWTs of about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// A label, parameter, metric or extra-context value.
pub const MAX_VALUE_BYTES: usize = 4 * 1024;
/// Segments in a path.
pub const MAX_PATH_SEGMENTS: usize = 32;
/// Entries in one map (labels, mechanism parameters, segment metrics,
/// extra context).
pub const MAX_MAP_ENTRIES: usize = 64;
/// Mechanism preferences in a Request.
pub const MAX_MECHANISM_PREFERENCES: usize = 16;
/// Entries in one list of the IP or DNS context (addresses, routes,
/// prefixes, neighbours, policies, DNS servers and domains).
pub const MAX_LIST_ENTRIES: usize = 64;
/// Network services in a MonitorConnections selector.
pub const MAX_SELECTOR_SERVICES: usize = 16;

fn too_long(field: &str, len: usize, limit: usize) -> Status {
    Status::invalid_argument(format!(
        "{field} is {len} bytes long; the limit is {limit} bytes"
    ))
}

fn too_many(field: &str, len: usize, limit: usize) -> Status {
    Status::invalid_argument(format!("{field} has {len} entries; the limit is {limit}"))
}

fn string(field: &str, s: &str, limit: usize) -> Result<(), Status> {
    if s.len() > limit {
        return Err(too_long(field, s.len(), limit));
    }
    Ok(())
}

fn list<T>(field: &str, items: &[T], limit: usize) -> Result<(), Status> {
    if items.len() > limit {
        return Err(too_many(field, items.len(), limit));
    }
    Ok(())
}

fn strings(field: &str, items: &[String]) -> Result<(), Status> {
    list(field, items, MAX_LIST_ENTRIES)?;
    items
        .iter()
        .try_for_each(|s| string(&format!("{field}[]"), s, MAX_NAME_BYTES))
}

fn map(field: &str, m: &HashMap<String, String>) -> Result<(), Status> {
    if m.len() > MAX_MAP_ENTRIES {
        return Err(too_many(field, m.len(), MAX_MAP_ENTRIES));
    }
    for (k, v) in m {
        string(&format!("{field} key"), k, MAX_NAME_BYTES)?;
        string(&format!("{field}[{}]", shown(k)), v, MAX_VALUE_BYTES)?;
    }
    Ok(())
}

/// A key as it may appear in a message: short and printable.
fn shown(k: &str) -> String {
    k.chars().take(64).flat_map(char::escape_default).collect()
}

fn segment(field: &str, s: &PathSegment) -> Result<(), Status> {
    string(&format!("{field}.name"), &s.name, MAX_NAME_BYTES)?;
    string(&format!("{field}.id"), &s.id, MAX_NAME_BYTES)?;
    string(&format!("{field}.token"), &s.token, MAX_TOKEN_BYTES)?;
    map(&format!("{field}.metrics"), &s.metrics)
}

fn context(c: &ConnectionContext) -> Result<(), Status> {
    map("connection.context.extra_context", &c.extra_context)?;
    if let Some(ip) = &c.ip_context {
        let f = "connection.context.ip_context";
        strings(&format!("{f}.src_ip_addrs"), &ip.src_ip_addrs)?;
        strings(&format!("{f}.dst_ip_addrs"), &ip.dst_ip_addrs)?;
        strings(&format!("{f}.excluded_prefixes"), &ip.excluded_prefixes)?;
        strings(&format!("{f}.extra_prefixes"), &ip.extra_prefixes)?;
        for (name, routes) in [
            ("src_routes", &ip.src_routes),
            ("dst_routes", &ip.dst_routes),
        ] {
            list(&format!("{f}.{name}"), routes, MAX_LIST_ENTRIES)?;
            for r in routes {
                string(&format!("{f}.{name}[].prefix"), &r.prefix, MAX_NAME_BYTES)?;
                string(
                    &format!("{f}.{name}[].nextHop"),
                    &r.next_hop,
                    MAX_NAME_BYTES,
                )?;
            }
        }
        list(
            &format!("{f}.ip_neighbors"),
            &ip.ip_neighbors,
            MAX_LIST_ENTRIES,
        )?;
        for n in &ip.ip_neighbors {
            string(&format!("{f}.ip_neighbors[].ip"), &n.ip, MAX_NAME_BYTES)?;
            string(
                &format!("{f}.ip_neighbors[].hardware_address"),
                &n.hardware_address,
                MAX_NAME_BYTES,
            )?;
        }
        list(
            &format!("{f}.extra_prefix_request"),
            &ip.extra_prefix_request,
            MAX_LIST_ENTRIES,
        )?;
        list(&format!("{f}.policies"), &ip.policies, MAX_LIST_ENTRIES)?;
        for p in &ip.policies {
            for (name, v) in [
                ("from", &p.from),
                ("proto", &p.proto),
                ("dst_port", &p.dst_port),
                ("src_port", &p.src_port),
            ] {
                string(&format!("{f}.policies[].{name}"), v, MAX_NAME_BYTES)?;
            }
            list(
                &format!("{f}.policies[].routes"),
                &p.routes,
                MAX_LIST_ENTRIES,
            )?;
        }
    }
    if let Some(dns) = &c.dns_context {
        let f = "connection.context.dns_context.configs";
        list(f, &dns.configs, MAX_LIST_ENTRIES)?;
        for d in &dns.configs {
            strings(&format!("{f}[].dns_server_ips"), &d.dns_server_ips)?;
            strings(&format!("{f}[].search_domains"), &d.search_domains)?;
        }
    }
    if let Some(eth) = &c.ethernet_context {
        let f = "connection.context.ethernet_context";
        string(&format!("{f}.src_mac"), &eth.src_mac, MAX_NAME_BYTES)?;
        string(&format!("{f}.dst_mac"), &eth.dst_mac, MAX_NAME_BYTES)?;
    }
    Ok(())
}

fn mechanism(field: &str, m: &sriov_api::nsm::connection::Mechanism) -> Result<(), Status> {
    string(&format!("{field}.cls"), &m.cls, MAX_NAME_BYTES)?;
    string(&format!("{field}.type"), &m.r#type, MAX_NAME_BYTES)?;
    map(&format!("{field}.parameters"), &m.parameters)
}

/// Checks a connection (a Request's or a Close's) against every limit.
pub fn check_connection(c: &Connection) -> Result<(), Status> {
    for (name, v) in [
        ("connection.id", &c.id),
        ("connection.network_service", &c.network_service),
        (
            "connection.network_service_endpoint_name",
            &c.network_service_endpoint_name,
        ),
        ("connection.payload", &c.payload),
    ] {
        string(name, v, MAX_NAME_BYTES)?;
    }
    map("connection.labels", &c.labels)?;
    if let Some(m) = &c.mechanism {
        mechanism("connection.mechanism", m)?;
    }
    if let Some(ctx) = &c.context {
        context(ctx)?;
    }
    if let Some(p) = &c.path {
        list(
            "connection.path.path_segments",
            &p.path_segments,
            MAX_PATH_SEGMENTS,
        )?;
        for s in &p.path_segments {
            segment("connection.path.path_segments[]", s)?;
        }
    }
    Ok(())
}

/// Checks a Request against every limit.
pub fn check_request(r: &NetworkServiceRequest) -> Result<(), Status> {
    list(
        "mechanism_preferences",
        &r.mechanism_preferences,
        MAX_MECHANISM_PREFERENCES,
    )?;
    for m in &r.mechanism_preferences {
        mechanism("mechanism_preferences[]", m)?;
    }
    match &r.connection {
        Some(c) => check_connection(c),
        None => Ok(()),
    }
}

/// Checks a MonitorConnections selector against every limit.
pub fn check_selector(s: &MonitorScopeSelector) -> Result<(), Status> {
    list("path_segments", &s.path_segments, MAX_PATH_SEGMENTS)?;
    for p in &s.path_segments {
        segment("path_segments[]", p)?;
    }
    list(
        "network_services",
        &s.network_services,
        MAX_SELECTOR_SERVICES,
    )?;
    s.network_services
        .iter()
        .try_for_each(|n| string("network_services[]", n, MAX_NAME_BYTES))
}

/// See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits;

impl Element for Limits {
    type Needs = ();

    fn name(&self) -> &'static str {
        "limits"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        _: (),
        request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        check_request(&request)?;
        next.request(ctx, request).await
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        check_connection(&connection)?;
        next.close(ctx, connection).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sriov_api::nsm::connection::{Mechanism, Path};

    fn request(c: Connection) -> NetworkServiceRequest {
        NetworkServiceRequest {
            connection: Some(c),
            mechanism_preferences: vec![],
        }
    }

    #[test]
    fn a_request_within_every_limit_passes() {
        let c = Connection {
            id: "a".repeat(MAX_NAME_BYTES),
            labels: (0..MAX_MAP_ENTRIES)
                .map(|i| (i.to_string(), "v".repeat(MAX_VALUE_BYTES)))
                .collect(),
            ..Default::default()
        };
        check_request(&request(c)).unwrap();
    }

    #[test]
    fn each_breach_names_its_field_and_limit() {
        let cases: Vec<(Connection, &str)> = vec![
            (
                Connection {
                    id: "a".repeat(MAX_NAME_BYTES + 1),
                    ..Default::default()
                },
                "connection.id is 257 bytes long; the limit is 256",
            ),
            (
                Connection {
                    labels: (0..=MAX_MAP_ENTRIES)
                        .map(|i| (i.to_string(), String::new()))
                        .collect(),
                    ..Default::default()
                },
                "connection.labels has 65 entries; the limit is 64",
            ),
            (
                Connection {
                    mechanism: Some(Mechanism {
                        parameters: [("tokenID".to_string(), "x".repeat(MAX_VALUE_BYTES + 1))]
                            .into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "connection.mechanism.parameters[tokenID]",
            ),
            (
                Connection {
                    path: Some(Path {
                        index: 0,
                        path_segments: vec![PathSegment::default(); MAX_PATH_SEGMENTS + 1],
                    }),
                    ..Default::default()
                },
                "connection.path.path_segments has 33 entries",
            ),
            (
                Connection {
                    path: Some(Path {
                        index: 0,
                        path_segments: vec![PathSegment {
                            token: "t".repeat(MAX_TOKEN_BYTES + 1),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                },
                "connection.path.path_segments[].token",
            ),
        ];
        for (c, want) in cases {
            let e = check_request(&request(c)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(want), "{}", e.message());
        }
        let many = NetworkServiceRequest {
            connection: None,
            mechanism_preferences: vec![Mechanism::default(); MAX_MECHANISM_PREFERENCES + 1],
        };
        assert!(
            check_request(&many)
                .unwrap_err()
                .message()
                .contains("mechanism_preferences has 17 entries")
        );
    }

    #[test]
    fn ip_context_lists_are_bounded() {
        let mut c = Connection::default();
        let ctx = c.context.get_or_insert_with(Default::default);
        ctx.ip_context
            .get_or_insert_with(Default::default)
            .src_ip_addrs = vec!["10.0.0.1/32".into(); MAX_LIST_ENTRIES + 1];
        let e = check_request(&request(c)).unwrap_err();
        assert!(
            e.message()
                .contains("connection.context.ip_context.src_ip_addrs has 65 entries"),
            "{}",
            e.message()
        );
    }
}
