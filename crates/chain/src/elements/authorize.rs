//! `authorize`: a connection is acted on only by the client that made it.
//!
//! The first Request of a connection records its owner in the context;
//! a refresh or Close whose caller is someone else is refused with
//! PERMISSION_DENIED before any element below runs, and `begin` keeps the
//! connection as it was.
//!
//! The identity is the path's first segment (the client's own: its name
//! and the id it chose for its connection), as in NSM's insecure mode;
//! Requests that reach us with no client segment share one anonymous
//! identity. Our own segment's id, which names the connection here, is
//! never chosen by the client (`updatepath`), and `MonitorConnections`
//! shows a connection only to a caller naming one of its segments, so a
//! tenant cannot learn, and so cannot present, another tenant's ids.
//! Once mTLS is on, the peer's SPIFFE ID joins the identity.
//! Nothing to undo.

use sriov_api::nsm::connection::{Connection, PathSegment};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tonic::Status;

use crate::{Ctx, Element, Next};

/// Who made a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The first segment's name and id; `None` when the caller sent no
    /// segment of its own (we were the path's first hop).
    client: Option<(String, String)>,
}

impl Owner {
    /// The owner a connection names: its path's first segment, unless that
    /// segment is ours (`our_index` 0).
    pub fn of(connection: &Connection) -> Self {
        let client = connection.path.as_ref().and_then(|p| {
            if p.index == 0 {
                return None;
            }
            p.path_segments
                .first()
                .map(|s: &PathSegment| (s.name.clone(), s.id.clone()))
        });
        Self { client }
    }
}

/// See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Authorize;

fn refused(what: &str, id: &str) -> Status {
    Status::permission_denied(format!(
        "{what} refused: connection {id} belongs to another client \
         (the path's first segment must be the one that created it)"
    ))
}

impl Element for Authorize {
    type Needs = ();

    fn name(&self) -> &'static str {
        "authorize"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        _: (),
        request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let conn = request.connection.clone().unwrap_or_default();
        let caller = Owner::of(&conn);
        match ctx.get::<Owner>() {
            Some(owner) if *owner != caller => return Err(refused("refresh", &conn.id)),
            Some(_) => {}
            None => {
                ctx.insert(caller);
            }
        }
        next.request(ctx, request).await
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        if ctx
            .get::<Owner>()
            .is_some_and(|owner| *owner != Owner::of(&connection))
        {
            return Err(refused("Close", &connection.id));
        }
        next.close(ctx, connection).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sriov_api::nsm::connection::Path;

    fn conn(first: &str) -> Connection {
        Connection {
            id: "ours".into(),
            path: Some(Path {
                index: 1,
                path_segments: vec![
                    PathSegment {
                        name: "nsc".into(),
                        id: first.into(),
                        ..Default::default()
                    },
                    PathSegment {
                        name: "forwarder".into(),
                        id: "ours".into(),
                        ..Default::default()
                    },
                ],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_owner_is_the_first_segment_unless_it_is_ours() {
        assert_eq!(Owner::of(&conn("a")), Owner::of(&conn("a")));
        assert_ne!(Owner::of(&conn("a")), Owner::of(&conn("b")));
        let mut first_hop = conn("a");
        if let Some(p) = first_hop.path.as_mut() {
            p.index = 0;
        }
        assert_eq!(Owner::of(&first_hop), Owner { client: None });
    }

    #[tokio::test]
    async fn another_clients_refresh_and_close_are_refused() {
        let chain = crate::Chain::new().with(Authorize);
        let mut ctx = Ctx::new();
        let req = |c| NetworkServiceRequest {
            connection: Some(c),
            mechanism_preferences: vec![],
        };
        chain.request(&mut ctx, req(conn("a"))).await.unwrap();
        let e = chain.request(&mut ctx, req(conn("b"))).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("belongs to another client"));
        let e = chain.close(&mut ctx, conn("b")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        chain.request(&mut ctx, req(conn("a"))).await.unwrap();
        chain.close(&mut ctx, conn("a")).await.unwrap();
    }
}
