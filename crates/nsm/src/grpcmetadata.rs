//! The registry's private path, carried beside Register and Unregister as
//! the `path` gRPC header, as the Go SDK's `registry/common/grpcmetadata`
//! does: the client sends its path as JSON in the request metadata, the
//! NSM manager's registry updatepath adds or refreshes its segments and
//! answers with the new path in the response header, and the client keeps
//! that for its next call. nsmgr's registry authorization reads the tokens
//! in it, so a forwarder that sends no path is not the one the Go
//! forwarder is to it.

use serde::{Deserialize, Serialize};
use tonic::metadata::{MetadataMap, MetadataValue};

/// The metadata key, as the SDK spells it.
pub const PATH_KEY: &str = "path";

/// Upper bound on a path header we accept back: a path of a few hops with
/// JWTs is a few KiB.
const MAX_PATH_HEADER: usize = 64 * 1024;

/// The registry path: Go's `grpcmetadata.Path`, whose fields have no JSON
/// tags and so keep their Go names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryPath {
    /// Index of the current segment.
    #[serde(rename = "Index", default)]
    pub index: u32,
    /// One token per hop; `null` in JSON when there is none.
    #[serde(rename = "PathSegments", default, deserialize_with = "null_as_empty")]
    pub segments: Vec<RegistryPathSegment>,
}

/// One hop of a [`RegistryPath`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryPathSegment {
    /// The hop's token.
    #[serde(default)]
    pub token: String,
}

fn null_as_empty<'de, D>(d: D) -> Result<Vec<RegistryPathSegment>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<Vec<RegistryPathSegment>>::deserialize(d)?.unwrap_or_default())
}

impl RegistryPath {
    /// Puts this path in `md` as the `path` header.
    pub fn insert_into(&self, md: &mut MetadataMap) {
        // Serialising plain strings and numbers cannot fail, and JSON of
        // them is printable ASCII unless a token is not: such a path is
        // left out rather than sent mangled.
        let Ok(json) = serde_json::to_string(self) else {
            return;
        };
        if let Ok(v) = MetadataValue::try_from(json.as_str()) {
            md.insert(PATH_KEY, v);
        }
    }

    /// The path in `md`'s `path` header (the last one, as the SDK reads
    /// it), or `None` when it is absent, oversized or not a path.
    pub fn from_metadata(md: &MetadataMap) -> Option<Self> {
        let value = md.get_all(PATH_KEY).iter().next_back()?;
        let bytes = value.as_bytes();
        if bytes.len() > MAX_PATH_HEADER {
            return None;
        }
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_is_gos() {
        let empty = RegistryPath::default();
        assert_eq!(
            serde_json::to_string(&empty).unwrap(),
            r#"{"Index":0,"PathSegments":[]}"#
        );
        // What Go's json.Marshal writes for a fresh path.
        let go: RegistryPath = serde_json::from_str(r#"{"Index":0,"PathSegments":null}"#).unwrap();
        assert_eq!(go, empty);
        let two: RegistryPath =
            serde_json::from_str(r#"{"Index":1,"PathSegments":[{"token":"a"},{"token":"b"}]}"#)
                .unwrap();
        assert_eq!(two.index, 1);
        assert_eq!(two.segments[1].token, "b");
    }

    #[test]
    fn a_header_round_trips_and_garbage_is_none() {
        let mut md = MetadataMap::new();
        let p = RegistryPath {
            index: 1,
            segments: vec![
                RegistryPathSegment { token: "x".into() },
                RegistryPathSegment { token: "y".into() },
            ],
        };
        p.insert_into(&mut md);
        assert_eq!(RegistryPath::from_metadata(&md), Some(p));
        let mut bad = MetadataMap::new();
        bad.insert(PATH_KEY, MetadataValue::from_static("{not json"));
        assert_eq!(RegistryPath::from_metadata(&bad), None);
        assert_eq!(RegistryPath::from_metadata(&MetadataMap::new()), None);
    }
}
