//! `updatepath`: puts the forwarder's own segment on the connection's path.
//!
//! On Request it finds or appends the segment named after this forwarder
//! right after the previous hop's, gives it an ID (kept across refreshes),
//! a token expiry of now + `NSM_MAX_TOKEN_LIFETIME`, and makes the
//! connection ID ours while the rest of the chain runs. On the way back it
//! restores the previous hop's path index and connection ID, so the caller
//! sees its own view. Nothing to undo.

use std::time::{Duration, SystemTime};

use sriov_api::nsm::connection::{Connection, Path, PathSegment};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_api::prost_types::Timestamp;
use tonic::Status;

use crate::{Ctx, Element, ElementFuture, Next};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct UpdatePath {
    name: String,
    lifetime: Duration,
}

impl UpdatePath {
    /// The segment name is the forwarder's `NSM_NAME`.
    pub fn new(name: impl Into<String>, lifetime: Duration) -> Self {
        Self {
            name: name.into(),
            lifetime,
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

/// Our index in the path, adding our segment if the path lacks it.
fn enter(path: &mut Path, name: &str) -> Result<usize, Status> {
    let prev = path.index as usize;
    if path.path_segments.is_empty() {
        path.path_segments.push(PathSegment::default());
        // A request with no path at all: we are the first hop.
        path.path_segments[0].name = name.to_string();
        return Ok(0);
    }
    if prev >= path.path_segments.len() {
        return Err(Status::invalid_argument(format!(
            "path index {prev} is outside a path of {} segments",
            path.path_segments.len()
        )));
    }
    if path.path_segments[prev].name == name {
        return Ok(prev);
    }
    let ours = prev + 1;
    if ours < path.path_segments.len() && path.path_segments[ours].name != name {
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
            let ours = enter(path, &self.name)?;
            let seg = &mut path.path_segments[ours];
            if seg.id.is_empty() {
                seg.id = uuid::Uuid::new_v4().to_string();
            }
            seg.expires = Some(timestamp(SystemTime::now() + self.lifetime));
            let id = seg.id.clone();
            path.index = ours as u32;
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
            let ours = enter(path, &self.name)?;
            path.index = ours as u32;
            connection.id = path.path_segments[ours].id.clone();
            next.close(ctx, connection).await
        })
    }
}
