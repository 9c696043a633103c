//! `vfconfig`: the VF's MAC and VLAN, set through its PF.
//!
//! After the rest of the chain answered (the endpoint may fill the
//! ethernet context), the VF gets `ethernet_context.src_mac` and the VLAN
//! tag (`ethernet_context.vlan_tag`, else the `vlan` parameter) through the
//! PF's netlink VF settings; the previous values are read and recorded
//! with the pool lease before they are changed. Undone on Close, and when
//! setting them fails the rest of the chain is closed.

use std::sync::Arc;

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_netlink::{LinkRef, MacAddr, NetlinkOps, VfConfig, VfRecord, VfVlan};
use tonic::Status;
use tracing::Instrument;

use crate::params::KernelParams;
use crate::records::{UndoLog, VfBinding};
use crate::status;
use crate::undo::UndoRecord;
use crate::{Ctx, Element, Next};

/// See the module docs.
pub struct VfConfigElement {
    netlink: Arc<dyn NetlinkOps>,
}

impl std::fmt::Debug for VfConfigElement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VfConfig")
    }
}

impl VfConfigElement {
    /// Makes VF settings through `netlink`.
    pub fn new(netlink: Arc<dyn NetlinkOps>) -> Self {
        Self { netlink }
    }
}

/// What the connection asks of the VF.
fn wanted(conn: &Connection, ctx: &Ctx) -> Result<VfConfig, Status> {
    let eth = conn
        .context
        .as_ref()
        .and_then(|c| c.ethernet_context.as_ref());
    let mut cfg = VfConfig::default();
    if let Some(mac) = eth.map(|e| e.src_mac.as_str()).filter(|m| !m.is_empty()) {
        cfg.mac = Some(mac.parse::<MacAddr>().map_err(|e| {
            Status::invalid_argument(format!("ethernet_context.src_mac {mac:?}: {e}"))
        })?);
    }
    let tag = eth.map(|e| e.vlan_tag).filter(|t| *t != 0);
    let vlan = match tag {
        Some(t) if !(1..=4094).contains(&t) => {
            return Err(Status::invalid_argument(format!(
                "ethernet_context.vlan_tag {t} is outside 1..=4094"
            )));
        }
        Some(t) => Some(t as u16),
        None => ctx
            .get::<KernelParams>()
            .and_then(|p| p.vlan)
            .filter(|v| *v != 0),
    };
    cfg.vlan = vlan.map(|id| VfVlan { id, qos: 0 });
    Ok(cfg)
}

impl Element for VfConfigElement {
    type Needs = (VfBinding,);

    fn name(&self) -> &'static str {
        "vfconfig"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        (b,): (VfBinding,),
        request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let conn = next.request(ctx, request).await?;
        if ctx.get::<VfRecord>().is_some() {
            return Ok(conn); // a refresh: already configured
        }
        // The first refresh after a restart: what we set is recorded.
        if let Some(r) = UndoRecord::of(&b.lease).and_then(|r| r.vf) {
            ctx.insert(r);
            return Ok(conn);
        }
        let result = async {
            let cfg = wanted(&conn, ctx)?;
            if cfg.is_empty() {
                return Ok(None);
            }
            let pf = b.pf_netdev.clone().ok_or_else(|| {
                Status::failed_precondition(format!(
                    "PF {} has no netdev, so the VF's MAC/VLAN cannot be set",
                    b.lease.pf
                ))
            })?;
            let (vf, pf) = (b.vf_index, LinkRef::Name(pf));
            // The values before ours are persisted before ours are set,
            // so a restart can restore them whenever it is killed.
            let record = self
                .netlink
                .vf_record(pf.clone(), vf, cfg.clone())
                .await
                .map_err(status::netlink)?;
            if let Some(log) = ctx.get::<UndoLog>().cloned() {
                let r = record.clone();
                log.update(|u| u.vf = Some(r)).await?;
            }
            self.netlink
                .set_vf(pf, vf, cfg)
                .instrument(tracing::info_span!("host.vf_set", vf.index = vf))
                .await
                .map(|_| Some(record))
                .map_err(status::netlink)
        }
        .await;
        sriov_failpoint::hit("vfconfig.after-set");
        match result {
            Ok(Some(record)) => {
                ctx.insert(record);
                Ok(conn)
            }
            Ok(None) => Ok(conn),
            Err(e) => Err(next.fail_after(ctx, conn, e).await),
        }
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        let restored = match ctx.remove::<VfRecord>() {
            Some(r) => self
                .netlink
                .restore_vf(r)
                .instrument(tracing::info_span!("host.vf_restore"))
                .await
                .map_err(status::netlink),
            None => Ok(()),
        };
        let rest = next.close(ctx, connection).await;
        restored.and(rest)
    }
}
