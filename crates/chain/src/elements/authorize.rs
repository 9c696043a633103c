//! `authorize`: a connection is acted on only by the client that made it,
//! and, in secure mode, only when NSM's policies allow the call.
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
//!
//! In secure mode the mTLS peer's SPIFFE ID joins the identity, and every
//! Request and Close from a peer is checked against the server policies
//! (`tokens_valid`, `tokens_expired`, `tokens_chained`,
//! `prev_token_signed` by default: sdk
//! `pkg/networkservice/common/authorize`) over the path up to our segment,
//! after `updatetoken` put the caller's token in its segment. A denial is
//! PERMISSION_DENIED naming the policy. The previous hop's connection id
//! is recorded as owned by the peer's SPIFFE ID ([`ConnectionOwners`]),
//! which the monitor's `service_connection` policy reads; calls the
//! forwarder makes itself (an expiry's Close) have no peer and are not
//! checked, as in the SDK. Nothing to undo.

use std::sync::Arc;

use sriov_api::nsm::connection::{Connection, PathSegment};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_policy::{ConnectionOwners, Input, Peer, Policies, previous_connection_id};
use tonic::Status;

use crate::caller::Caller;
use crate::{Ctx, Element, Next};

/// Who made a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The first segment's name and id; `None` when the caller sent no
    /// segment of its own (we were the path's first hop).
    client: Option<(String, String)>,
    /// The mTLS peer's SPIFFE ID, in secure mode.
    spiffe_id: Option<String>,
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
        Self {
            client,
            spiffe_id: None,
        }
    }

    /// The owner `connection` names, called by `caller`.
    fn of_call(connection: &Connection, caller: Option<&Caller>) -> Self {
        Self {
            spiffe_id: caller
                .and_then(|c| c.peer.as_ref())
                .map(|p| p.spiffe_id.clone()),
            ..Self::of(connection)
        }
    }
}

/// NSM's server policies and who owns which connection (secure mode).
#[derive(Clone)]
pub struct Authorization {
    /// The server policies (`etc/nsm/opa/common` and `server` by default).
    pub policies: Arc<Policies>,
    /// Connections by their callers' SPIFFE IDs, shared with the monitor.
    pub owners: Arc<ConnectionOwners>,
}

/// See the module docs.
#[derive(Clone, Default)]
pub struct Authorize {
    authorization: Option<Authorization>,
}

impl std::fmt::Debug for Authorize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorize")
            .field("policies", &self.authorization.is_some())
            .finish()
    }
}

impl Authorize {
    /// The owner rule only (plaintext mode).
    pub fn owner_only() -> Self {
        Self::default()
    }

    /// The owner rule and `authorization`'s policies.
    pub fn with_policies(authorization: Authorization) -> Self {
        Self {
            authorization: Some(authorization),
        }
    }

    /// Checks `connection`'s path against the policies when a peer calls;
    /// returns the peer's SPIFFE ID and the previous hop's connection id,
    /// to record as owned.
    fn check(
        &self,
        ctx: &Ctx,
        connection: &Connection,
    ) -> Result<Option<(String, String)>, Status> {
        let (Some(auth), Some(peer)) = (
            &self.authorization,
            ctx.get::<Caller>().and_then(|c| c.peer.as_ref()),
        ) else {
            return Ok(None);
        };
        let path = connection.path.clone().unwrap_or_default();
        let input = Input::network_service(
            &path,
            &Peer {
                spiffe_id: Some(&peer.spiffe_id),
                certificate_der: Some(&peer.cert_der),
            },
        );
        auth.policies.check(&input).map_err(|d| {
            Status::permission_denied(format!("denied by policy {}: {}", d.policy, d.reason))
        })?;
        Ok(previous_connection_id(&path).map(|id| (peer.spiffe_id.clone(), id.to_string())))
    }
}

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
        let caller = Owner::of_call(&conn, ctx.get::<Caller>());
        match ctx.get::<Owner>() {
            Some(owner) if *owner != caller => return Err(refused("refresh", &conn.id)),
            Some(_) => {}
            None => {
                ctx.insert(caller);
            }
        }
        let owned = self.check(ctx, &conn)?;
        if let (Some(auth), Some((spiffe_id, id))) = (&self.authorization, &owned) {
            auth.owners.insert(spiffe_id, id);
        }
        let result = next.request(ctx, request).await;
        if let (Some(auth), Some((spiffe_id, id)), Err(_)) = (&self.authorization, &owned, &result)
            && !ctx.is_refresh()
        {
            auth.owners.remove(spiffe_id, id);
        }
        result
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        // A Close with no caller is the forwarder's own (an expiry, the
        // sweep): it acts for the owner.
        let Some(caller) = ctx.get::<Caller>() else {
            return next.close(ctx, connection).await;
        };
        if ctx
            .get::<Owner>()
            .is_some_and(|owner| *owner != Owner::of_call(&connection, Some(caller)))
        {
            return Err(refused("Close", &connection.id));
        }
        if let Some((spiffe_id, id)) = self.check(ctx, &connection)?
            && let Some(auth) = &self.authorization
        {
            auth.owners.remove(&spiffe_id, &id);
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
        assert_eq!(
            Owner::of(&first_hop),
            Owner {
                client: None,
                spiffe_id: None
            }
        );
    }

    #[tokio::test]
    async fn another_clients_refresh_and_close_are_refused() {
        let chain = crate::Chain::new().with(Authorize::owner_only());
        let mut ctx = Ctx::new();
        // A plaintext gRPC caller (the server always says who calls).
        ctx.insert(Caller::default());
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

    struct NoSignatures;
    impl sriov_policy::TokenCheck for NoSignatures {
        fn signed_by(&self, _: &str, _: &[u8]) -> bool {
            false
        }
    }

    fn caller(spiffe_id: &str) -> Caller {
        Caller {
            peer: Some(crate::caller::PeerIdentity {
                spiffe_id: spiffe_id.into(),
                cert_der: Arc::from(&b"cert"[..]),
            }),
            token: None,
        }
    }

    #[tokio::test]
    async fn a_peers_call_is_checked_against_the_policies_and_its_connection_owned() {
        // Allows only paths whose previous segment is named "nsc".
        let policy = "package nsm\n\ndefault valid = false\n\nvalid {\n\tinput.path_segments[0].name == \"nsc\"\n}\n";
        let policies =
            Policies::from_sources([("only_nsc.rego", policy)], Arc::new(NoSignatures)).unwrap();
        let owners = Arc::new(ConnectionOwners::new());
        let chain = crate::Chain::new().with(Authorize::with_policies(Authorization {
            policies: Arc::new(policies),
            owners: owners.clone(),
        }));
        let req = |c| NetworkServiceRequest {
            connection: Some(c),
            mechanism_preferences: vec![],
        };
        let mut ctx = Ctx::new();
        ctx.insert(caller("spiffe://example.org/nsmgr"));
        chain.request(&mut ctx, req(conn("a"))).await.unwrap();
        assert!(owners.owns("spiffe://example.org/nsmgr", "a"));

        let mut bad = conn("b");
        if let Some(p) = bad.path.as_mut() {
            p.path_segments[0].name = "intruder".into();
        }
        let mut other = Ctx::new();
        other.insert(caller("spiffe://example.org/nsmgr"));
        let e = chain.request(&mut other, req(bad)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("only_nsc.rego"), "{}", e.message());
        assert!(!owners.owns("spiffe://example.org/nsmgr", "b"));

        // The same client segment from another SPIFFE ID is not the owner.
        ctx.insert(caller("spiffe://example.org/other"));
        let e = chain.close(&mut ctx, conn("a")).await.unwrap_err();
        assert!(
            e.message().contains("belongs to another client"),
            "{}",
            e.message()
        );
        assert!(owners.owns("spiffe://example.org/nsmgr", "a"));

        ctx.insert(caller("spiffe://example.org/nsmgr"));
        chain.close(&mut ctx, conn("a")).await.unwrap();
        assert!(!owners.owns("spiffe://example.org/nsmgr", "a"));
    }

    #[tokio::test]
    async fn the_forwarders_own_close_acts_for_a_secure_owner() {
        let chain = crate::Chain::new().with(Authorize::owner_only());
        let mut ctx = Ctx::new();
        ctx.insert(caller("spiffe://example.org/nsmgr"));
        let req = NetworkServiceRequest {
            connection: Some(conn("a")),
            mechanism_preferences: vec![],
        };
        chain.request(&mut ctx, req).await.unwrap();
        // What `begin` does after the call: the caller goes.
        ctx.remove::<Caller>();
        chain.close(&mut ctx, conn("a")).await.unwrap();
    }

    #[tokio::test]
    async fn calls_without_a_peer_are_not_checked() {
        let deny_all = "package nsm\n\ndefault valid = false\n";
        let policies =
            Policies::from_sources([("deny.rego", deny_all)], Arc::new(NoSignatures)).unwrap();
        let chain = crate::Chain::new().with(Authorize::with_policies(Authorization {
            policies: Arc::new(policies),
            owners: Arc::new(ConnectionOwners::new()),
        }));
        let mut ctx = Ctx::new();
        // The forwarder's own Close (an expiry) has no caller.
        chain.close(&mut ctx, conn("a")).await.unwrap();
        ctx.insert(caller("spiffe://example.org/nsmgr"));
        let e = chain.close(&mut ctx, conn("a")).await.unwrap_err();
        assert!(e.message().contains("deny.rego"), "{}", e.message());
    }
}
