//! `updatepath`: puts the forwarder's own segment on the connection's path.
//!
//! On Request it finds, overwrites or appends the segment named after this
//! forwarder right after the previous hop's, as the Go SDK's updatepath
//! does, gives it an ID (a fresh UUID unless the client sent back the id of
//! a live connection: a refresh; or the first hop's own connection id),
//! a token expiry of now + `NSM_MAX_TOKEN_LIFETIME`, and makes the
//! connection ID ours while the rest of the chain runs. On the way back it
//! restores the previous hop's path index and connection ID, so the caller
//! sees its own view. Nothing to undo.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sriov_api::nsm::connection::{Connection, Path, PathSegment};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_api::prost_types::Timestamp;
use tonic::Status;

use crate::{Ctx, Element, Next};

/// The connection ids this forwarder has handed out and still serves.
pub trait KnownConnections: Send + Sync + 'static {
    /// Whether `id` names an established connection.
    fn is_known(&self, id: &str) -> bool;
}

/// See the module docs.
#[derive(Clone)]
pub struct UpdatePath {
    name: String,
    lifetime: Duration,
    known: Arc<dyn KnownConnections>,
}

impl std::fmt::Debug for UpdatePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdatePath")
            .field("name", &self.name)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl UpdatePath {
    /// The segment name is the forwarder's `NSM_NAME`; `known` tells which
    /// segment ids a client may send back (those of live connections).
    pub fn new(
        name: impl Into<String>,
        lifetime: Duration,
        known: Arc<dyn KnownConnections>,
    ) -> Self {
        Self {
            name: name.into(),
            lifetime,
            known,
        }
    }
}

pub(crate) fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Where [`enter`] put us: our segment's index, and the index the caller
/// sees again on the way back (the previous hop's, or ours when we are the
/// first hop or the client already pointed at us).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entered {
    ours: usize,
    caller: u32,
    /// The path was empty: our segment took the connection's id.
    first_hop: bool,
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Finds or makes our segment by the rules of the Go SDK's
/// `updatepath/common.go`, so a stock NSM client or manager sees the path
/// it expects:
/// - an empty path gets our segment, with the connection's id (a fresh one
///   when it has none);
/// - a path whose current segment is already ours is a refresh;
/// - otherwise the current segment must carry the connection's id, the next
///   one becomes ours: overwritten when it names another hop (a reselected
///   or healed forwarder), never truncating the hops after it, and appended
///   when there is none.
///
/// Which id our segment keeps is decided by the caller.
fn enter(conn: &mut Connection, name: &str) -> Result<Entered, Status> {
    let conn_id = conn.id.clone();
    let path = conn.path.get_or_insert_with(Default::default);
    if path.path_segments.is_empty() {
        path.index = 0;
        path.path_segments.push(PathSegment {
            name: name.to_string(),
            id: if conn_id.is_empty() {
                fresh_id()
            } else {
                conn_id
            },
            ..Default::default()
        });
        return Ok(Entered {
            ours: 0,
            caller: 0,
            first_hop: true,
        });
    }
    let current = usize::try_from(path.index).unwrap_or(usize::MAX);
    let segments = path.path_segments.len();
    let Some(previous) = path.path_segments.get(current) else {
        return Err(Status::invalid_argument(format!(
            "connection.path.index {} is outside a path of {segments} segments",
            path.index
        )));
    };
    if previous.name == name {
        return Ok(Entered {
            ours: current,
            caller: path.index,
            first_hop: false,
        });
    }
    if previous.id != conn_id {
        return Err(Status::invalid_argument(format!(
            "connection.path.path_segments[{current}].id must equal connection.id (the previous \
             hop's segment is the caller's view of the connection)"
        )));
    }
    let ours = current.saturating_add(1);
    match path.path_segments.get_mut(ours) {
        Some(next) if next.name != name => {
            next.name = name.to_string();
            next.id = fresh_id();
        }
        Some(_) => {}
        None => path.path_segments.push(PathSegment {
            name: name.to_string(),
            id: fresh_id(),
            ..Default::default()
        }),
    }
    Ok(Entered {
        ours,
        caller: path.index,
        first_hop: false,
    })
}

/// Our segment, once [`enter`] found or made it.
fn ours(path: &mut Path, index: usize) -> Result<&mut PathSegment, Status> {
    path.path_segments
        .get_mut(index)
        .ok_or_else(|| Status::internal("updatepath: our segment vanished"))
}

impl Element for UpdatePath {
    type Needs = ();

    fn name(&self) -> &'static str {
        "updatepath"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        _: (),
        mut request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let conn = request.connection.get_or_insert_with(Default::default);
        let prev_id = conn.id.clone();
        let entered = enter(conn, &self.name)?;
        let path = conn.path.get_or_insert_with(Default::default);
        let seg = ours(path, entered.ours)?;
        // Our segment's id is the connection's id in this forwarder. A
        // client may repeat one we handed out (a refresh, whose owner
        // `authorize` checks) but never choose one for a new
        // connection, so it cannot pick another tenant's; unlike the
        // SDK, an unknown id in our segment is replaced. A first hop's
        // connection id (an empty path) is the client's to choose, as
        // in the SDK.
        if !entered.first_hop && !self.known.is_known(&seg.id) {
            seg.id = fresh_id();
        }
        seg.expires = Some(timestamp(SystemTime::now() + self.lifetime));
        let id = seg.id.clone();
        path.index = u32::try_from(entered.ours).unwrap_or(u32::MAX);
        conn.id = id;
        let mut out = next.request(ctx, request).await?;
        if let Some(p) = out.path.as_mut() {
            p.index = entered.caller;
            if let Some(seg) = p.path_segments.get(entered.caller as usize)
                && !seg.id.is_empty()
            {
                out.id = seg.id.clone();
            } else {
                out.id = prev_id;
            }
        }
        Ok(out)
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        mut connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        let entered = enter(&mut connection, &self.name)?;
        let path = connection.path.get_or_insert_with(Default::default);
        connection.id = ours(path, entered.ours)?.id.clone();
        path.index = u32::try_from(entered.ours).unwrap_or(u32::MAX);
        next.close(ctx, connection).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(name: &str, id: &str) -> PathSegment {
        PathSegment {
            name: name.into(),
            id: id.into(),
            ..Default::default()
        }
    }

    fn conn(id: &str, index: u32, segments: Vec<PathSegment>) -> Connection {
        Connection {
            id: id.into(),
            path: Some(Path {
                index,
                path_segments: segments,
            }),
            ..Default::default()
        }
    }

    fn names(c: &Connection) -> Vec<String> {
        c.path
            .as_ref()
            .map(|p| p.path_segments.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn an_empty_path_keeps_the_connection_id_as_our_segment_id() {
        let mut c = conn("nsc-chosen", 0, vec![]);
        let e = enter(&mut c, "fwd").unwrap();
        assert_eq!((e.ours, e.caller, e.first_hop), (0, 0, true));
        assert_eq!(
            c.path.unwrap().path_segments,
            vec![seg("fwd", "nsc-chosen")]
        );

        let mut c = conn("", 0, vec![]);
        enter(&mut c, "fwd").unwrap();
        let id = &c.path.unwrap().path_segments[0].id;
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }

    #[test]
    fn the_next_segment_is_appended_when_missing() {
        let mut c = conn("c1", 0, vec![seg("nsc", "c1")]);
        let e = enter(&mut c, "fwd").unwrap();
        assert_eq!((e.ours, e.caller, e.first_hop), (1, 0, false));
        assert_eq!(names(&c), ["nsc", "fwd"]);
    }

    #[test]
    fn another_hop_in_our_place_is_overwritten_and_the_hops_after_it_kept() {
        let mut c = conn(
            "c1",
            0,
            vec![seg("nsc", "c1"), seg("old-fwd", "f0"), seg("nse", "e1")],
        );
        let e = enter(&mut c, "fwd").unwrap();
        assert_eq!(e.ours, 1);
        let path = c.path.unwrap();
        assert_eq!(path.path_segments.len(), 3, "nothing truncated");
        assert_eq!(path.path_segments[1].name, "fwd");
        assert_ne!(path.path_segments[1].id, "f0", "a new hop gets a new id");
        assert_eq!(path.path_segments[2], seg("nse", "e1"));
    }

    #[test]
    fn a_current_segment_that_is_ours_is_a_refresh_at_that_index() {
        let mut c = conn("f1", 1, vec![seg("nsc", "c1"), seg("fwd", "f1")]);
        let e = enter(&mut c, "fwd").unwrap();
        assert_eq!((e.ours, e.caller), (1, 1));
        assert_eq!(c.path.unwrap().path_segments.len(), 2);
    }

    #[test]
    fn a_current_segment_not_carrying_the_connection_id_is_refused() {
        let mut c = conn("someone-else", 0, vec![seg("nsc", "c1")]);
        let err = enter(&mut c, "fwd").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message()
                .contains("path_segments[0].id must equal connection.id")
        );
    }

    #[test]
    fn an_index_outside_the_path_is_refused() {
        let mut c = conn("c1", 5, vec![seg("nsc", "c1")]);
        let err = enter(&mut c, "fwd").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("connection.path.index 5"));
    }
}
