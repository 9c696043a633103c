//! `mechanisms`: picks the mechanism and runs its sub-chain.
//!
//! A refresh keeps the connection's mechanism; a new connection takes the
//! first of the client's `mechanism_preferences` this forwarder serves
//! (KERNEL, VFIO, NOOP). The chosen one becomes `connection.mechanism`
//! and its sub-chain (resource pool, driver, namespace plumbing...) runs
//! before the rest of the chain. None supported is INVALID_ARGUMENT.

use std::collections::BTreeMap;

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tonic::Status;

use crate::contract::{ContractError, Key, Provided};
use crate::{Chain, Ctx, Element, Next};

/// The mechanism type a connection uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected(pub String);

/// See the module docs.
#[derive(Debug, Default)]
pub struct Mechanisms {
    by_type: BTreeMap<String, Chain>,
}

impl Mechanisms {
    /// No mechanisms yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves mechanism `kind` (e.g. `KERNEL`) with `chain`.
    pub fn with(mut self, kind: &str, chain: Chain) -> Self {
        self.by_type.insert(kind.to_string(), chain);
        self
    }

    fn pick(
        &self,
        ctx: &Ctx,
        request: &NetworkServiceRequest,
    ) -> Result<sriov_api::nsm::connection::Mechanism, Status> {
        if let Some(Selected(kind)) = ctx.get::<Selected>()
            && let Some(m) = request
                .connection
                .as_ref()
                .and_then(|c| c.mechanism.as_ref())
            && &m.r#type == kind
        {
            return Ok(m.clone());
        }
        if let Some(m) = request
            .connection
            .as_ref()
            .and_then(|c| c.mechanism.as_ref())
            && self.by_type.contains_key(&m.r#type)
            && request.mechanism_preferences.is_empty()
        {
            return Ok(m.clone());
        }
        request
            .mechanism_preferences
            .iter()
            .find(|m| self.by_type.contains_key(&m.r#type))
            .cloned()
            .ok_or_else(|| {
                let offered: Vec<&str> = request
                    .mechanism_preferences
                    .iter()
                    .map(|m| m.r#type.as_str())
                    .collect();
                Status::invalid_argument(format!(
                    "no supported mechanism among {offered:?}; this forwarder serves {:?}",
                    self.by_type.keys().collect::<Vec<_>>()
                ))
            })
    }
}

impl Element for Mechanisms {
    type Needs = ();

    fn name(&self) -> &'static str {
        "mechanisms"
    }

    /// Each sub-chain is checked where it runs, after what came before;
    /// the elements after this one can count only on what every
    /// sub-chain provides.
    fn check_order(&self, before: &mut Provided) -> Result<(), ContractError> {
        before.add([Key::of::<Selected>()]);
        let mut common: Option<Provided> = None;
        for sub in self.by_type.values() {
            let mut after = before.clone();
            Element::check_order(sub, &mut after)?;
            match &mut common {
                Some(c) => c.keep_common(&after),
                None => common = Some(after),
            }
        }
        if let Some(c) = common {
            *before = c;
        }
        Ok(())
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        _: (),
        mut request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let mechanism = self.pick(ctx, &request)?;
        let kind = mechanism.r#type.clone();
        let Some(sub) = self.by_type.get(&kind) else {
            return Err(Status::internal(format!("no sub-chain for {kind}")));
        };
        request
            .connection
            .get_or_insert_with(Default::default)
            .mechanism = Some(mechanism);
        let had = ctx.insert(Selected(kind.clone()));
        let result = Element::request(sub, ctx, (), request, next).await;
        if result.is_err() && had.is_none() {
            ctx.remove::<Selected>();
        }
        result
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        let kind = ctx
            .remove::<Selected>()
            .map(|s| s.0)
            .or_else(|| connection.mechanism.as_ref().map(|m| m.r#type.clone()));
        match kind.as_deref().and_then(|k| self.by_type.get(k)) {
            Some(sub) => Element::close(sub, ctx, connection, next).await,
            None => next.close(ctx, connection).await,
        }
    }
}
