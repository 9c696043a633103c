//! The input documents the policies read, in NSM's shapes and field names.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};

use serde_json::{Map, Value, json};
use sriov_api::nsm::connection::{Path, PathSegment};

use crate::jwt;

/// Who is calling, from the mTLS handshake.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer<'a> {
    /// The SPIFFE ID in the peer certificate's URI SAN.
    pub spiffe_id: Option<&'a str>,
    /// The peer's leaf certificate, DER.
    pub certificate_der: Option<&'a [u8]>,
}

/// One input document, built once per call and given to every policy.
#[derive(Debug, Clone)]
pub struct Input {
    document: regorus::Value,
    json: Value,
}

impl Input {
    /// The input of a NetworkService Request or Close: NSM's `Path` as Go's
    /// `encoding/json` writes it, cut to the left side of our segment
    /// (`path_segments[..=index]`, as NSM's authorize server does), plus
    /// `auth_info.certificate` (the peer's certificate PEM, `""` without one).
    ///
    /// Unlike Go's `omitempty`, zero values are written (`"index": 0`,
    /// `"token": ""`): NSM's own policies give every such field a default.
    pub fn network_service(path: &Path, peer: &Peer<'_>) -> Self {
        let end = usize::try_from(path.index)
            .ok()
            .and_then(|i| i.checked_add(1))
            .map_or(path.path_segments.len(), |end| {
                end.min(path.path_segments.len())
            });
        let segments: Vec<Value> = path
            .path_segments
            .get(..end)
            .unwrap_or_default()
            .iter()
            .map(segment)
            .collect();
        Self::from_json(json!({
            "index": path.index,
            "path_segments": segments,
            "auth_info": auth_info(peer),
        }))
    }

    /// The input of `MonitorConnections`: NSM's `MonitorOpaInput`. The ids
    /// asked about are those of the selector's path segments; the map is
    /// the owners recorded by Requests.
    pub fn monitor(selector: &[PathSegment], peer: &Peer<'_>, owners: &ConnectionOwners) -> Self {
        let asked: Vec<&str> = selector.iter().map(|s| s.id.as_str()).collect();
        Self::from_json(json!({
            "spiffe_id_connection_map": owners.snapshot(),
            "selector_connection_ids": asked,
            "service_spiffe_id": peer.spiffe_id.unwrap_or_default(),
            "auth_info": auth_info(peer),
        }))
    }

    /// The input of a registry client check (after Register or Unregister
    /// returned): NSM's `RegistryOpaInput`. `tokens` is the registry path
    /// carried in gRPC metadata, `index` our segment in it,
    /// `resource_path_ids` the path ids of the resources we registered
    /// (name → ids). `resource_id` is the `sub` of the first token, read
    /// unverified as NSM does (`""` when it cannot be read); `peer` is the
    /// registry we called.
    pub fn registry(
        resource_name: &str,
        index: u32,
        tokens: &[String],
        resource_path_ids: &BTreeMap<String, Vec<String>>,
        peer: &Peer<'_>,
    ) -> Self {
        let resource_id = tokens
            .first()
            .and_then(|t| jwt::subject(t))
            .unwrap_or_default();
        let segments: Vec<Value> = tokens.iter().map(|t| json!({ "token": t })).collect();
        Self::from_json(json!({
            "resource_id": resource_id,
            "resource_name": resource_name,
            "resource_path_ids_map": resource_path_ids,
            "path_segments": segments,
            "index": index,
            "auth_info": auth_info(peer),
        }))
    }

    /// Any document, for an operator's own policies with inputs of their own.
    pub fn from_json(json: Value) -> Self {
        Self {
            document: regorus::Value::from(json.clone()),
            json,
        }
    }

    /// The document as JSON, for logging a denial.
    pub fn as_json(&self) -> &Value {
        &self.json
    }

    pub(crate) fn document(&self) -> regorus::Value {
        self.document.clone()
    }
}

fn segment(segment: &PathSegment) -> Value {
    let mut object = Map::new();
    object.insert("name".into(), segment.name.clone().into());
    object.insert("id".into(), segment.id.clone().into());
    object.insert("token".into(), segment.token.clone().into());
    if let Some(expires) = &segment.expires {
        object.insert(
            "expires".into(),
            json!({ "seconds": expires.seconds, "nanos": expires.nanos }),
        );
    }
    object.insert("metrics".into(), json!(segment.metrics));
    Value::Object(object)
}

fn auth_info(peer: &Peer<'_>) -> Value {
    let certificate = peer
        .certificate_der
        .map(jwt::pem_encode)
        .unwrap_or_default();
    json!({ "certificate": certificate })
}

/// Which peer (SPIFFE ID) asked for which connection: what the monitor's
/// `service_connection` policy checks. Shared by the NetworkService server
/// (which records) and the monitor server (which reads), as NSM shares its
/// `spiffeIDConnectionMap` between `authorize.NewServer` and
/// `monitorauthorize.NewMonitorConnectionServer`.
#[derive(Debug, Default)]
pub struct ConnectionOwners {
    owners: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl ConnectionOwners {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// After an authorized Request from `spiffe_id`: it owns
    /// `connection_id`, the id of the segment before ours
    /// ([`previous_connection_id`]), which is the id the peer monitors.
    pub fn insert(&self, spiffe_id: &str, connection_id: &str) {
        self.lock()
            .entry(spiffe_id.to_owned())
            .or_default()
            .insert(connection_id.to_owned());
    }

    /// After a Close from `spiffe_id`, or a Request that failed further down
    /// the chain. A peer left owning nothing is dropped.
    pub fn remove(&self, spiffe_id: &str, connection_id: &str) {
        let mut owners = self.lock();
        if let Some(ids) = owners.get_mut(spiffe_id) {
            ids.remove(connection_id);
            if ids.is_empty() {
                owners.remove(spiffe_id);
            }
        }
    }

    /// Whether `spiffe_id` owns `connection_id`.
    pub fn owns(&self, spiffe_id: &str, connection_id: &str) -> bool {
        self.lock()
            .get(spiffe_id)
            .is_some_and(|ids| ids.contains(connection_id))
    }

    /// The map as the policy sees it: SPIFFE ID → connection ids.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<String>> {
        self.lock()
            .iter()
            .map(|(id, conns)| (id.clone(), conns.iter().cloned().collect()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeSet<String>>> {
        // The map is valid after any panic mid-update (each update is one
        // BTreeMap call), so a poisoned lock is still usable.
        self.owners.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The id of the segment before `path.index`: the connection id the
/// requesting peer knows and monitors. `None` at index 0 or past the end.
pub fn previous_connection_id(path: &Path) -> Option<&str> {
    let previous = usize::try_from(path.index).ok()?.checked_sub(1)?;
    path.path_segments.get(previous).map(|s| s.id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(index: u32, n: usize) -> Path {
        Path {
            index,
            path_segments: (0..n)
                .map(|i| PathSegment {
                    name: format!("n{i}"),
                    id: format!("id{i}"),
                    token: format!("t{i}"),
                    expires: Some(prost_types::Timestamp {
                        seconds: 7,
                        nanos: 1,
                    }),
                    metrics: [("k".to_owned(), "v".to_owned())].into(),
                })
                .collect(),
        }
    }

    #[test]
    fn network_service_input_is_the_left_side_in_nsm_field_names() {
        let der = [1u8, 2, 3];
        let peer = Peer {
            spiffe_id: Some("spiffe://x/nsmgr"),
            certificate_der: Some(&der),
        };
        let input = Input::network_service(&path(1, 3), &peer);
        let doc = input.as_json();
        assert_eq!(doc["index"], 1);
        let segments = doc["path_segments"].as_array().unwrap();
        assert_eq!(segments.len(), 2);
        assert_eq!(
            segments[1],
            json!({"name": "n1", "id": "id1", "token": "t1",
                   "expires": {"seconds": 7, "nanos": 1}, "metrics": {"k": "v"}})
        );
        assert_eq!(doc["auth_info"]["certificate"], jwt::pem_encode(&der));
    }

    #[test]
    fn an_index_past_the_end_keeps_every_segment() {
        let input = Input::network_service(&path(u32::MAX, 2), &Peer::default());
        assert_eq!(
            input.as_json()["path_segments"].as_array().unwrap().len(),
            2
        );
        assert_eq!(input.as_json()["auth_info"]["certificate"], "");
    }

    #[test]
    fn owners_track_requests_and_closes() {
        let owners = ConnectionOwners::new();
        owners.insert("a", "c1");
        owners.insert("a", "c2");
        owners.insert("b", "c3");
        owners.remove("a", "c1");
        assert!(owners.owns("a", "c2") && !owners.owns("a", "c1"));
        owners.remove("b", "c3");
        owners.remove("nobody", "c3");
        assert_eq!(
            owners.snapshot(),
            BTreeMap::from([("a".to_owned(), vec!["c2".to_owned()])])
        );
    }

    #[test]
    fn previous_connection_id_is_none_at_the_edges() {
        assert_eq!(previous_connection_id(&path(2, 3)), Some("id1"));
        assert_eq!(previous_connection_id(&path(0, 3)), None);
        assert_eq!(previous_connection_id(&path(5, 3)), None);
    }

    #[test]
    fn registry_input_reads_the_resource_id_from_the_first_token() {
        let input = Input::registry(
            "nse",
            0,
            &["garbage".to_owned()],
            &BTreeMap::new(),
            &Peer::default(),
        );
        assert_eq!(input.as_json()["resource_id"], "");
        assert_eq!(
            input.as_json()["path_segments"],
            json!([{"token": "garbage"}])
        );
    }
}
