//! `resetmechanism`: a refresh that changes the mechanism closes the old
//! one first.
//!
//! When an established connection is requested again without its
//! mechanism (or with one the client no longer lists) and the first
//! preference is of another type, the rest of the chain closes the old
//! connection (VF returned, drivers and namespaces restored) and then
//! handles the request as a new one.

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tonic::Status;

use crate::{Ctx, Element, Next};

/// The connection as last returned, for closing it on a mechanism change.
#[derive(Debug, Clone)]
struct Established(Connection);

/// See the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResetMechanism;

fn wants_other(established: &Connection, request: &NetworkServiceRequest) -> bool {
    let Some(current) = established.mechanism.as_ref() else {
        return false;
    };
    let asked = request
        .connection
        .as_ref()
        .and_then(|c| c.mechanism.as_ref());
    let still_listed = request.mechanism_preferences.is_empty()
        || request
            .mechanism_preferences
            .iter()
            .any(|m| m.r#type == current.r#type);
    let first = request
        .mechanism_preferences
        .first()
        .map(|m| m.r#type.as_str());
    (asked.is_none() || !still_listed) && first.is_some_and(|t| t != current.r#type)
}

impl Element for ResetMechanism {
    type Needs = ();

    fn name(&self) -> &'static str {
        "resetmechanism"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        _: (),
        mut request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        if let Some(Established(old)) = ctx.get::<Established>().cloned()
            && wants_other(&old, &request)
        {
            tracing::info!(connection = %old.id, "mechanism changed on refresh; closing the old one");
            next.close(ctx, old).await?;
            ctx.remove::<Established>();
            ctx.set_refresh(false);
            if let Some(c) = request.connection.as_mut() {
                c.mechanism = None;
            }
        }
        let conn = next.request(ctx, request).await?;
        ctx.insert(Established(conn.clone()));
        Ok(conn)
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        ctx.remove::<Established>();
        next.close(ctx, connection).await
    }
}
