//! `begin`: one operation at a time per connection, and the connection's
//! context between calls (it is also the Go SDK's `metadata` element: the
//! per-connection [`crate::Ctx`] is that metadata).
//!
//! Requests and Closes of the same connection ID are serialized; different
//! connections run in parallel. A Request for a known connection is a
//! refresh: the rest of the chain gets the context it left last time
//! (`ctx.is_refresh()`). A failed first Request leaves nothing behind; a
//! failed refresh keeps the established connection's context (its
//! elements undid only their own new work). Close runs the rest with the
//! stored context and then forgets it, unless the rest refused it with
//! PERMISSION_DENIED (a Close from someone other than the owner, refused
//! before anything was undone). A Close for a connection with no context
//! is handed to [`Orphans`] (a connection made before a restart: its host
//! changes are undone from the pool's record) and otherwise succeeds
//! without doing anything, so Close is idempotent.
//!
//! A client whose answer was lost (the forwarder killed, or the call
//! cancelled, after the connection was established) never learnt our
//! segment's id, so its retry, the same request again, reaches us as a new
//! connection on a token the standing one holds. Refusing it would lock
//! the pod out until the lease expired. So a new Request naming the token
//! of a standing connection, from the client the connection's record names
//! ([`ClientId`]: the same first path segment and, in secure mode, SPIFFE
//! ID), is served as a refresh of that connection: our segment takes its id
//! again, and the answer tells the client. Another client presenting the
//! token is refused as before (the pool's "token in use"); so is a first
//! hop's, whose path has no segment of its own to tell it by (it chose the
//! connection id itself and retries with it, which is a refresh anyway).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tonic::Status;

use crate::caller::Caller;
use crate::params::TOKEN_ID;
use crate::reclaim::Orphans;
use crate::records::{CallFds, ClientId, Deadline, Token};
use crate::returns::{Deferred, Returns};
use crate::{Ctx, Element, Next};

/// Puts this call's deadline, caller and the fds its connection sent (or
/// none) in the connection's context; [`leave`] takes them out after the
/// call, so a later call (a refresh, an expiry's Close) never inherits
/// stale ones.
fn enter(call: &Ctx, ctx: &mut Ctx) {
    leave(ctx);
    if let Some(d) = call.get::<Deadline>() {
        ctx.insert(*d);
    }
    if let Some(c) = call.get::<Caller>() {
        ctx.insert(c.clone());
    }
    if let Some(fds) = call.get::<CallFds>() {
        ctx.insert(fds.clone());
    }
}

/// Takes this call's records out of the connection's context.
fn leave(ctx: &mut Ctx) {
    ctx.remove::<Deadline>();
    ctx.remove::<Caller>();
    ctx.remove::<CallFds>();
    ctx.remove::<ClientId>();
}

/// The tokens a Request names: in its connection's mechanism (a refresh)
/// or in its mechanism preferences (a new connection).
fn tokens_of(request: &NetworkServiceRequest) -> Vec<String> {
    let mut tokens: Vec<String> = request
        .connection
        .as_ref()
        .and_then(|c| c.mechanism.as_ref())
        .into_iter()
        .chain(&request.mechanism_preferences)
        .filter_map(|m| m.parameters.get(TOKEN_ID).cloned())
        .collect();
    tokens.sort();
    tokens.dedup();
    tokens
}

/// Makes `request` name connection `id`: the connection's id and our
/// segment's (`updatepath` left the path's index at ours).
fn retarget(request: &mut NetworkServiceRequest, id: &str) {
    if let Some(conn) = request.connection.as_mut() {
        conn.id = id.to_string();
        if let Some(path) = conn.path.as_mut()
            && let Some(ours) = path.path_segments.get_mut(path.index as usize)
        {
            ours.id = id.to_string();
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Ctx>>>;

/// See the module docs.
#[derive(Default)]
pub struct Begin {
    slots: Mutex<HashMap<String, Slot>>,
    orphans: Option<Arc<dyn Orphans>>,
    returns: Returns,
}

impl std::fmt::Debug for Begin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Begin").finish_non_exhaustive()
    }
}

impl Begin {
    /// An empty table of connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes of connections without context go to `orphans`.
    pub fn with_orphans(mut self, orphans: Arc<dyn Orphans>) -> Self {
        self.orphans = Some(orphans);
        self
    }

    /// Runs what Closes leave for after their answer through `returns`
    /// (see [`crate::returns`]); without it, through one of its own.
    pub fn with_returns(mut self, returns: Returns) -> Self {
        self.returns = returns;
        self
    }

    fn slot(&self, id: &str) -> Result<Slot, Status> {
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| Status::internal("begin: lock poisoned"))?;
        Ok(slots.entry(id.to_string()).or_default().clone())
    }

    fn forget(&self, id: &str, slot: &Slot) {
        if let Ok(mut slots) = self.slots.lock()
            && slots.get(id).is_some_and(|s| Arc::ptr_eq(s, slot))
        {
            slots.remove(id);
        }
    }

    /// The standing connection a new Request (`id` unknown here) retries:
    /// the one using its token, when its record names the same client.
    async fn retried(
        &self,
        call: &Ctx,
        request: &NetworkServiceRequest,
        id: &str,
    ) -> Result<Option<String>, Status> {
        use super::updatepath::KnownConnections;
        let Some(orphans) = &self.orphans else {
            return Ok(None);
        };
        if self.is_known(id) {
            return Ok(None);
        }
        let Some(client) = request
            .connection
            .as_ref()
            .and_then(|c| ClientId::of_call(c, call.get::<Caller>()))
        else {
            return Ok(None);
        };
        let tokens = tokens_of(request);
        if tokens.is_empty() {
            return Ok(None);
        }
        let Some(holder) = orphans.holder(tokens).await? else {
            return Ok(None);
        };
        Ok(
            (holder.connection != id && holder.client.as_ref() == Some(&client))
                .then_some(holder.connection),
        )
    }

    /// IDs of the established connections.
    pub fn connections(&self) -> Vec<String> {
        self.slots
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl super::updatepath::KnownConnections for Begin {
    fn is_known(&self, id: &str) -> bool {
        !id.is_empty() && self.slots.lock().is_ok_and(|s| s.contains_key(id))
    }
}

impl Element for Begin {
    type Needs = ();

    fn name(&self) -> &'static str {
        "begin"
    }

    async fn request(
        &self,
        call: &mut Ctx,
        _: (),
        mut request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let mut id = request
            .connection
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default();
        if id.is_empty() {
            return Err(Status::invalid_argument("connection has no id"));
        }
        // A pod that closed and asks again: its VF is still on its way back.
        self.returns.wait_tokens(&tokens_of(&request)).await;
        if let Some(standing) = self.retried(call, &request, &id).await? {
            tracing::info!(
                connection = %standing,
                "a new Request from the client of this connection, on its token: \
                 its answer was lost; served as a refresh"
            );
            retarget(&mut request, &standing);
            id = standing;
        }
        let client = request
            .connection
            .as_ref()
            .and_then(|c| ClientId::of_call(c, call.get::<Caller>()));
        let slot = self.slot(&id)?;
        let mut guard = slot.lock().await;
        let existing = guard.take();
        let refresh = existing.is_some();
        let mut ctx = existing.unwrap_or_default();
        ctx.set_refresh(refresh);
        enter(call, &mut ctx);
        if let Some(client) = client {
            ctx.insert(client);
        }
        let result = next.request(&mut ctx, request).await;
        leave(&mut ctx);
        match (&result, refresh) {
            (Ok(_), _) | (Err(_), true) => *guard = Some(ctx),
            (Err(_), false) => {
                drop(guard);
                self.forget(&id, &slot);
            }
        }
        result
    }

    async fn close(
        &self,
        call: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        let id = connection.id.clone();
        let slot = self.slot(&id)?;
        let mut guard = slot.lock().await;
        let Some(mut ctx) = guard.take() else {
            // Made before a restart, if the pool says so: the id is an
            // unguessable UUID of ours, which only the connection's
            // path knows, so naming it is the caller's proof.
            let reclaimed = match &self.orphans {
                Some(o) => {
                    o.reclaim(&id, call.get::<CallFds>().map(|f| f.0.clone()))
                        .await
                }
                None => Ok(None),
            };
            drop(guard);
            self.forget(&id, &slot);
            if let Ok(Some(what)) = &reclaimed {
                tracing::info!(connection = %id, "{what} (closed after a restart)");
            }
            return reclaimed.map(|_| ());
        };
        enter(call, &mut ctx);
        // A real Close may leave the slow part of its undo for after the answer.
        ctx.insert(Deferred::default());
        let result = next.close(&mut ctx, connection).await;
        let deferred = ctx.remove::<Deferred>().unwrap_or_default();
        leave(&mut ctx);
        let token = ctx.get::<Token>().map(|t| t.0.clone());
        self.returns.start(&id, token, deferred);
        if matches!(&result, Err(s) if s.code() == tonic::Code::PermissionDenied) {
            // Refused before anything was undone (`authorize`): the
            // connection stays its owner's.
            *guard = Some(ctx);
            return result;
        }
        drop(guard);
        self.forget(&id, &slot);
        result
    }
}
