//! `inject`: the VF's netdev into the client's network namespace.
//!
//! After the rest of the chain answered, the VF netdev (found by
//! `bindvf`) is moved into the namespace of the `inodeURL`
//! parameter, renamed to the `name` parameter, given the MTU, addresses,
//! routes and neighbours `ipcontext` planned, and brought up, in one
//! netlink operation that rolls itself back if any step fails (then the
//! rest of the chain is closed). If a link cannot be brought home, from a
//! failed move or at Close, the VF stays in use with the record of where
//! the link is, and the sweep brings it home before the VF is handed out
//! again. On Close the client's interface is taken
//! down and its addresses deleted, and the Close answers; the netdev comes
//! back to our namespace under its original name, down, in the background
//! ([`crate::returns`]; started before the answer when netlink has a thread
//! of its own), before `bindvf` frees the VF. If the
//! client's namespace is already gone, the kernel has returned it and it is
//! found and restored.
//! A refresh whose context changes the interface (addresses, routes, MTU,
//! name) takes it back and moves it again with the new configuration.
//!
//! An `inode://` namespace is the one the calling connection sent by fd
//! (grpcfd, as the NSM manager's `sendfd` does): it is taken from the
//! connection's table ([`CallFds`]) before anything below acts, and held
//! with the connection's record, so Close reaches it after that connection
//! is gone. One the connection did not send is refused
//! ([`params::RULE_NETNS_BY_FD`](crate::params::RULE_NETNS_BY_FD)), unless
//! the chain was built with the `/proc` scan fallback
//! ([`Inject::with_proc_scan`]), which finds it by scanning `/proc/*/ns/net`
//! (hostPID) as before fd passing. `file://` paths are opened as they are.

use std::sync::Arc;

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_netlink::{ClientLink, LinkRef, MovedLink, NetlinkOps, Netns, NetnsUrl};
use tonic::Status;
use tracing::Instrument;

use crate::params::{INODE_URL, KernelParams, RULE_NETNS_BY_FD};
use crate::records::{CallFds, IpPlan, UndoLog, VfBinding};
use crate::returns::Deferred;
use crate::status;
use crate::undo::UndoRecord;
use crate::{Ctx, Element, Next};

/// See the module docs.
pub struct Inject {
    netlink: Arc<dyn NetlinkOps>,
    proc_scan: bool,
}

impl std::fmt::Debug for Inject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inject")
    }
}

impl Inject {
    /// Moves links through `netlink`; an `inode://` namespace must come by fd.
    pub fn new(netlink: Arc<dyn NetlinkOps>) -> Self {
        Self {
            netlink,
            proc_scan: false,
        }
    }

    /// With `allowed`, an `inode://` namespace the connection did not send
    /// by fd is looked for in `/proc` (needs hostPID): development only
    /// (`NSM_INSECURE`), since any process's namespace can be named that way.
    pub fn with_proc_scan(mut self, allowed: bool) -> Self {
        self.proc_scan = allowed;
        self
    }

    /// The client's namespace from the fd the calling connection sent for
    /// `named`; `None` for a `file://` path, or an `inode://` one left to the
    /// `/proc` scan. Refuses an `inode://` namespace not sent by fd unless
    /// the scan is allowed.
    async fn received_netns(
        &self,
        ctx: &Ctx,
        named: &NetnsUrl,
    ) -> Result<Option<Arc<Netns>>, Status> {
        let NetnsUrl::Inode { dev, ino } = *named else {
            return Ok(None);
        };
        let fd = match ctx.get::<CallFds>() {
            Some(CallFds(table)) => table.get(dev, ino).map_err(|e| {
                Status::resource_exhausted(format!(
                    "mechanism parameter {INODE_URL}={named}: duplicating the fd received for \
                     it: {e}"
                ))
            })?,
            None => None,
        };
        let Some(fd) = fd else {
            if self.proc_scan {
                return Ok(None);
            }
            return Err(Status::permission_denied(format!(
                "mechanism parameter {INODE_URL}={named}: {RULE_NETNS_BY_FD}, and this \
                 connection sent no such file (the /proc scan fallback is off)"
            )));
        };
        let url = named.clone();
        let ns = tokio::task::spawn_blocking(move || Netns::from_received(fd, &url))
            .await
            .map_err(|e| Status::internal(format!("opening the namespace sent for {named}: {e}")))?
            .map_err(status::netlink)?;
        Ok(Some(Arc::new(ns)))
    }

    /// The VF netdev's name in our namespace, from `bindvf`.
    fn home_link(binding: &VfBinding) -> Result<LinkRef, Status> {
        binding
            .vf_netdev
            .clone()
            .map(LinkRef::Name)
            .ok_or_else(|| Status::internal(format!("VF {} has no netdev", binding.lease.vf)))
    }

    /// What the client's interface should be: `link` moved into the
    /// client's namespace with the name, MTU, addresses, routes and
    /// neighbours the parameters and `ipcontext` ask for.
    fn plan(
        ctx: &Ctx,
        params: &KernelParams,
        home: LinkRef,
        opened: Option<Arc<Netns>>,
    ) -> ClientLink {
        let mut link = ClientLink::new(home, params.netns.clone());
        if let Some(ns) = opened {
            link = link.in_opened(ns);
        }
        if let Some(n) = &params.name {
            link = link.name(n.clone());
        }
        if let Some(p) = ctx.get::<IpPlan>() {
            if let Some(mtu) = p.mtu {
                link = link.mtu(mtu);
            }
            for a in &p.addresses {
                link = link.address(*a);
            }
            for (dst, gw) in &p.routes {
                link = link.route(*dst, *gw);
            }
            for (ip, mac) in &p.neighbours {
                link = link.neighbour(*ip, *mac);
            }
        } else if let Some(mtu) = params.mtu {
            link = link.mtu(mtu);
        }
        link
    }
}

/// The client-side configuration last applied, to notice a refresh that changes it.
#[derive(Debug, Clone, PartialEq)]
struct Applied(ClientLink);

impl Applied {
    /// What was asked for, without how the namespace was reached (a fresh fd
    /// on each refresh, or none after a restart, is no change).
    fn of(link: &ClientLink) -> Self {
        let mut link = link.clone();
        link.opened = None;
        Self(link)
    }
}

/// A connection keeps the namespace it was established in: a refresh (or the first
/// request after a restart) naming another one is refused, so a live interface can never be
/// re-plumbed into a namespace the original request did not name.
fn same_netns(moved: &MovedLink, named: &sriov_netlink::NetnsUrl) -> Result<(), Status> {
    if moved.netns == *named {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "mechanism parameter {}={named}: the connection was established in {}, and a \
         connection keeps its network namespace",
        crate::params::INODE_URL,
        moved.netns
    )))
}

impl Inject {
    /// Moves and configures `link`, recording the move with the pool lease: as intended before
    /// it is made, as done after, so a kill at any instant leaves a record to back out from.
    async fn move_and_record(&self, ctx: &Ctx, link: ClientLink) -> Result<MovedLink, Status> {
        let log = ctx.get::<UndoLog>().cloned();
        let mut intent = None;
        if let Some(log) = &log {
            let plan = self
                .netlink
                .plan_move(link.clone())
                .instrument(tracing::info_span!("host.netns_plan"))
                .await
                .map_err(status::netlink)?;
            let persisted = plan.clone();
            log.update(|r| r.moving = Some(persisted)).await?;
            intent = Some(plan);
        }
        sriov_failpoint::hit("inject.before-move");
        // The plan already opened the namespace and read the link: the move reuses both.
        let moving = match intent {
            Some(plan) => self.netlink.move_planned(link, plan),
            None => self.netlink.move_into(link),
        };
        let moved = moving
            .instrument(tracing::info_span!("host.netns_move"))
            .await;
        sriov_failpoint::hit("inject.after-move");
        let (m, log) = match (moved, log) {
            (Ok(m), Some(log)) => (m, log),
            (Ok(m), None) => return Ok(m),
            (Err(e), log) => return Err(self.after_failed_move(e, log).await),
        };
        let done = m.clone();
        if let Err(e) = log
            .update(|r| {
                r.moving = None;
                r.moved = Some(done);
            })
            .await
        {
            // The intent stays recorded, so a restart could still undo it; but
            // this process can undo it now.
            if let Err(be) = self.netlink.back_out(m).await {
                tracing::warn!(error = %be, "moving back after a failed record");
            }
            return Err(e);
        }
        Ok(m)
    }

    /// What a failed move leaves: usually nothing (`move_into` rolled itself back), and the
    /// intent is cleared. When its rollback failed too, the link is still where the error's
    /// record says: one more try to bring it home now, and if that fails as well the record
    /// replaces the intent and the VF stays in use ([`UndoLog::keep`]), so the sweep backs it
    /// out from the record instead of `bindvf` handing out a VF whose netdev sits in a client.
    async fn after_failed_move(&self, e: sriov_netlink::Error, log: Option<UndoLog>) -> Status {
        let left = match e {
            sriov_netlink::Error::RollbackFailed { ref record, .. } => {
                match self.netlink.back_out((**record).clone()).await {
                    Ok(_) => None,
                    Err(again) => {
                        tracing::warn!(link = %record.client_name, error = %again, "moving back a link whose rollback failed; left to the sweep");
                        Some((**record).clone())
                    }
                }
            }
            _ => None,
        };
        let status = status::netlink(e);
        let Some(log) = log else {
            return status;
        };
        let kept = left.is_some();
        if let Err(le) = log
            .update(|r| {
                r.moving = None;
                r.moved = left;
            })
            .await
        {
            tracing::warn!(error = %le, "recording what a failed move left");
        }
        if kept {
            log.keep();
        }
        status
    }

    /// A refresh whose context changed (addresses, routes, MTU, name): the
    /// interface is taken back and moved again with the new configuration.
    async fn replumb(
        &self,
        ctx: &mut Ctx,
        params: &KernelParams,
        moved: MovedLink,
    ) -> Result<(), Status> {
        let home = LinkRef::Name(moved.original.name.clone());
        let wanted = Self::plan(ctx, params, home, moved.held.clone());
        same_netns(&moved, &wanted.netns)?;
        match ctx.get::<Applied>() {
            Some(a) if *a == Applied::of(&wanted) => return Ok(()),
            // Adopted after a restart: what was applied is not known; keep it.
            None => {
                ctx.insert(Applied::of(&wanted));
                return Ok(());
            }
            Some(_) => {}
        }
        tracing::info!(link = %moved.client_name, "connection context changed on refresh; re-plumbing");
        // Until the new move is recorded the connection is half re-plumbed:
        // a restart in between rolls it back instead of adopting it.
        if let Some(log) = ctx.get::<UndoLog>().cloned() {
            log.update(|r| r.established = false).await?;
        }
        ctx.remove::<MovedLink>();
        if let Err(e) = self.netlink.back_out(moved.clone()).await {
            // Still where the record says: the Close takes it back, not the
            // sweep after bindvf freed the VF under it.
            ctx.insert(moved);
            return Err(status::netlink(e));
        }
        let m = self.move_and_record(ctx, wanted.clone()).await?;
        ctx.insert(m);
        ctx.insert(Applied::of(&wanted));
        Ok(())
    }
}

impl Inject {
    /// Moves the netdev home now (a Request undone by a later element's failure, or a Close
    /// with nothing to leave for after its answer). If it cannot, the connection's record
    /// still says where the link is: the VF stays in use until the sweep brings it home
    /// ([`UndoLog::keep`]).
    async fn return_home(&self, moved: MovedLink, log: Option<&UndoLog>) -> Result<(), Status> {
        let back = Self::back_out(self.netlink.clone(), moved).await;
        if back.is_err()
            && let Some(log) = log
        {
            log.keep();
        }
        back
    }

    async fn back_out(netlink: Arc<dyn NetlinkOps>, moved: MovedLink) -> Result<(), Status> {
        let back = netlink
            .back_out(moved)
            .instrument(tracing::info_span!("host.netns_return"))
            .await;
        sriov_failpoint::hit("inject.close.after-back-out");
        back.map(|outcome| tracing::debug!(?outcome, "VF netdev back out"))
            .map_err(status::netlink)
    }

    /// A Close: the client's interface is made unusable where it is (down, our addresses
    /// deleted) and the move home is left for after the answer ([`crate::returns`]), or, when
    /// netlink requests have a thread of their own, starts at once and the step queued for after
    /// the answer waits for it. The record
    /// says first that the Close began, so a restart before the move home rolls it back; if
    /// that record cannot be written, the move is made now instead.
    async fn disable_and_defer(
        &self,
        log: Option<UndoLog>,
        deferred: Deferred,
        moved: MovedLink,
        applied: Option<Applied>,
    ) -> Result<(), Status> {
        if let Some(log) = log
            && let Err(e) = log.update(|r| r.established = false).await
        {
            tracing::warn!(error = %e, "recording the Close; moving the netdev home before answering");
            return self.return_home(moved, Some(&log)).await;
        }
        let addresses = applied.map(|a| a.0.addresses);
        if let Err(e) = self
            .netlink
            .disable(moved.clone(), addresses)
            .instrument(tracing::info_span!("host.netns_disable"))
            .await
        {
            tracing::warn!(link = %moved.client_name, error = %e, "taking the client's interface down; it is moved home all the same");
        }
        let home = Self::back_out(self.netlink.clone(), moved).instrument(tracing::Span::current());
        if !sriov_netlink::requests_on_own_thread() {
            // The move's kernel time would hold the worker that answers: it waits for the answer.
            deferred.push(Box::pin(home));
            return Ok(());
        }
        // The move home starts now, beside the answer: its kernel time is spent on the netlink
        // thread. The queued step waits for it, so what comes after it (bindvf freeing the VF)
        // still waits for the netdev to be home.
        let home = tokio::spawn(home);
        deferred.push(Box::pin(async move {
            home.await.map_err(|e| {
                Status::internal(format!("moving the client's netdev home: task failed: {e}"))
            })?
        }));
        Ok(())
    }
}

impl Element for Inject {
    type Needs = (VfBinding, KernelParams);

    fn name(&self) -> &'static str {
        "inject"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        (binding, params): (VfBinding, KernelParams),
        request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        // Before the rest acts: a namespace we may not use refuses the
        // Request with nothing to undo.
        let opened = self.received_netns(ctx, &params.netns).await?;
        let conn = next.request(ctx, request).await?;
        if let Some(mut moved) = ctx.get::<MovedLink>().cloned() {
            // A refresh: the interface is there; re-plumb only if asked for.
            // Its fd is kept if the record holds none yet (adopted, or
            // found by /proc scan), so Close no longer needs the scan.
            if moved.held.is_none() {
                moved.held = opened.filter(|ns| ns.id() == moved.netns_id);
                ctx.insert(moved.clone());
            }
            self.replumb(ctx, &params, moved).await?;
            return Ok(conn);
        }
        // The first request after a restart for a connection whose
        // netdev we had moved: the pool kept the record; adopt it.
        if let Some(mut m) = UndoRecord::of(&binding.lease).and_then(|r| r.moved) {
            if let Err(e) = same_netns(&m, &params.netns) {
                return Err(next.fail_after(ctx, conn, e).await);
            }
            tracing::info!(link = %m.client_name, "adopting a VF netdev moved before a restart");
            m.held = opened.filter(|ns| ns.id() == m.netns_id);
            ctx.insert(m);
            return Ok(conn);
        }
        let wanted = Self::home_link(&binding).map(|home| Self::plan(ctx, &params, home, opened));
        let moved = match wanted {
            Ok(link) => self
                .move_and_record(ctx, link.clone())
                .await
                .map(|m| (m, link)),
            Err(e) => Err(e),
        };
        match moved {
            Ok((m, link)) => {
                ctx.insert(m);
                ctx.insert(Applied::of(&link));
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
        let applied = ctx.remove::<Applied>();
        match (ctx.remove::<MovedLink>(), ctx.get::<Deferred>().cloned()) {
            // The next hop's Close does not wait for the interface to go
            // down here, nor the other way round: the answer waits for the
            // slower of the two, not for both in turn.
            (Some(m), Some(deferred)) => {
                let log = ctx.get::<UndoLog>().cloned();
                let (back, rest) = tokio::join!(
                    self.disable_and_defer(log, deferred, m, applied),
                    next.close(ctx, connection)
                );
                back.and(rest)
            }
            (Some(m), None) => {
                let back = self.return_home(m, ctx.get::<UndoLog>()).await;
                let rest = next.close(ctx, connection).await;
                back.and(rest)
            }
            (None, _) => next.close(ctx, connection).await,
        }
    }
}
