//! `updatepath`: puts the forwarder's own segment on the connection's path.
//!
//! On Request it finds or appends the segment named after this forwarder
//! right after the previous hop's, gives it an ID (a fresh UUID unless the
//! client sent back the id of a live connection: a refresh),
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

use crate::{Ctx, Element, ElementFuture, Next};

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

/// The instant a protobuf timestamp names, or `None` when it lies before
/// the epoch's range or beyond what `SystemTime` can hold (client input:
/// never an overflow).
pub(crate) fn system_time(t: &Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u32::try_from(t.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Our index in the path, adding our segment if the path lacks it.
fn enter(path: &mut Path, name: &str) -> Result<usize, Status> {
    let prev = usize::try_from(path.index).unwrap_or(usize::MAX);
    if path.path_segments.is_empty() {
        // A request with no path at all: we are the first hop.
        path.path_segments.push(PathSegment {
            name: name.to_string(),
            ..Default::default()
        });
        return Ok(0);
    }
    let Some(previous) = path.path_segments.get(prev) else {
        return Err(Status::invalid_argument(format!(
            "path index {} is outside a path of {} segments",
            path.index,
            path.path_segments.len()
        )));
    };
    if previous.name == name {
        return Ok(prev);
    }
    let ours = prev + 1;
    if path.path_segments.get(ours).is_some_and(|s| s.name != name) {
        // The rest of the path belongs to an old route through another hop.
        path.path_segments.truncate(ours);
    }
    if ours == path.path_segments.len() {
        path.path_segments.push(PathSegment {
            name: name.to_string(),
            ..Default::default()
        });
    }
    Ok(ours)
}

/// Our segment, once [`enter`] found or made it.
fn ours(path: &mut Path, index: usize) -> Result<&mut PathSegment, Status> {
    path.path_segments
        .get_mut(index)
        .ok_or_else(|| Status::internal("updatepath: our segment vanished"))
}

impl Element for UpdatePath {
    fn name(&self) -> &'static str {
        "updatepath"
    }

    fn request<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        mut request: NetworkServiceRequest,
        next: Next<'a>,
    ) -> ElementFuture<'a, Connection> {
        Box::pin(async move {
            let conn = request.connection.get_or_insert_with(Default::default);
            let path = conn.path.get_or_insert_with(Default::default);
            let prev_index = path.index;
            let prev_id = conn.id.clone();
            let index = enter(path, &self.name)?;
            let seg = ours(path, index)?;
            // Our segment's id is the connection's id in this forwarder: a
            // client may only repeat one we handed out (a refresh), never
            // choose a new one, so it cannot pick another tenant's.
            if !self.known.is_known(&seg.id) {
                seg.id = uuid::Uuid::new_v4().to_string();
            }
            seg.expires = Some(timestamp(SystemTime::now() + self.lifetime));
            let id = seg.id.clone();
            path.index = u32::try_from(index).unwrap_or(u32::MAX);
            conn.id = id;
            let mut out = next.request(ctx, request).await?;
            if let Some(p) = out.path.as_mut() {
                p.index = prev_index;
                if let Some(seg) = p.path_segments.get(prev_index as usize)
                    && !seg.id.is_empty()
                {
                    out.id = seg.id.clone();
                } else {
                    out.id = prev_id;
                }
            }
            Ok(out)
        })
    }

    fn close<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        mut connection: Connection,
        next: Next<'a>,
    ) -> ElementFuture<'a, ()> {
        Box::pin(async move {
            let path = connection.path.get_or_insert_with(Default::default);
            let index = enter(path, &self.name)?;
            connection.id = ours(path, index)?.id.clone();
            path.index = u32::try_from(index).unwrap_or(u32::MAX);
            next.close(ctx, connection).await
        })
    }
}
