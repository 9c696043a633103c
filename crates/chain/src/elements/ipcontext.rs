//! `ipcontext`: the connection context's addresses, routes, neighbours and
//! MTU for the client's interface.
//!
//! After the rest of the chain answered (the endpoint fills the IP
//! context), it checks and translates the client side of the context
//! (`src_ip_addrs`, `src_routes`, `ip_neighbors`, `MTU`, else the `MTU`
//! parameter) into the plumbing plan `inject` applies inside the client's
//! namespace in the same netlink transaction as the move, so a failure
//! leaves no half-configured interface. A malformed context is
//! INVALID_ARGUMENT and closes the rest of the chain. It changes nothing
//! itself, so there is nothing for it to undo.

use std::net::IpAddr;

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_netlink::{IpNetwork, MacAddr};
use tonic::Status;

use crate::params::KernelParams;
use crate::{Ctx, Element, Next};

use crate::records::IpPlan;

/// Builds the plan from a connection and the validated parameters.
pub fn plan(conn: &Connection, params: Option<&KernelParams>) -> Result<IpPlan, Status> {
    let bad = |what: &str, v: &str, e: &dyn std::fmt::Display| {
        Status::invalid_argument(format!("connection context {what} {v:?}: {e}"))
    };
    let mut p = IpPlan::default();
    let Some(cc) = conn.context.as_ref() else {
        p.mtu = params.and_then(|k| k.mtu);
        return Ok(p);
    };
    if let Some(ip) = cc.ip_context.as_ref() {
        for a in &ip.src_ip_addrs {
            p.addresses
                .push(a.parse().map_err(|e| bad("src_ip_addrs", a, &e))?);
        }
        for r in &ip.src_routes {
            let dst: IpNetwork = r
                .prefix
                .parse()
                .map_err(|e| bad("route prefix", &r.prefix, &e))?;
            let gw = if r.next_hop.is_empty() {
                None
            } else {
                Some(
                    r.next_hop
                        .parse()
                        .map_err(|e| bad("route nextHop", &r.next_hop, &e))?,
                )
            };
            // The kernel already made the connected route of each address
            // (EEXIST if added again); endpoints often send it anyway.
            let connected = gw.is_none()
                && p.addresses
                    .iter()
                    .any(|a| a.prefix() == dst.prefix() && network_of(*a) == network_of(dst));
            if !connected {
                p.routes.push((dst, gw));
            }
        }
        for n in &ip.ip_neighbors {
            let ip: IpAddr = n.ip.parse().map_err(|e| bad("neighbor ip", &n.ip, &e))?;
            let mac: MacAddr = n
                .hardware_address
                .parse()
                .map_err(|e| bad("neighbor hardware_address", &n.hardware_address, &e))?;
            p.neighbours.push((ip, mac));
        }
    }
    p.mtu = if cc.mtu != 0 {
        if !(68..=65535).contains(&cc.mtu) {
            return Err(bad("MTU", &cc.mtu.to_string(), &"outside 68..=65535"));
        }
        Some(cc.mtu)
    } else {
        params.and_then(|k| k.mtu)
    };
    Ok(p)
}

/// The network part of an address with its prefix.
fn network_of(n: IpNetwork) -> IpAddr {
    match n.addr() {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = u32::MAX
                .checked_shl(32 - u32::from(n.prefix()))
                .unwrap_or(0);
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = u128::MAX
                .checked_shl(128 - u32::from(n.prefix()))
                .unwrap_or(0);
            IpAddr::V6((bits & mask).into())
        }
    }
}

/// See the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct IpContext;

impl Element for IpContext {
    type Needs = ();

    fn name(&self) -> &'static str {
        "ipcontext"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        _: (),
        request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let conn = next.request(ctx, request).await?;
        match plan(&conn, ctx.get::<KernelParams>()) {
            Ok(p) => {
                ctx.insert(p);
                Ok(conn)
            }
            Err(e) => Err(next.fail_after(ctx, conn, e).await),
        }
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        ctx.remove::<IpPlan>();
        next.close(ctx, connection).await
    }
}
