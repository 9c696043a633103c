//! Moving a link into a client's namespace and configuring it there, and bringing it back.
//!
//! Kernel facts this relies on:
//! - Moving a link to another namespace closes it (it arrives down) and flushes its addresses,
//!   routes and neighbours in the namespace it leaves, so backing out needs no per-address undo.
//! - `RTM_NEWLINK` carrying both `IFLA_NET_NS_FD` and `IFLA_IFNAME` moves first (using the new
//!   name directly if the current one is taken in the target) and renames after, so a link never
//!   collides with a same-named link on the other side.
//! - A renamed link must be down (`EBUSY` otherwise); it is, right after a move.
//! - The same `RTM_NEWLINK` may carry MTU, MAC and `IFF_UP` too: `do_setlink` moves first and
//!   applies them to the link in its new namespace, stopping at the first it refuses (the move
//!   stays done). `IFLA_NEW_IFINDEX` keeps the ifindex or fails (`EBUSY`) before moving, so a
//!   successful answer says where the link is without a lookup.
//! - When a namespace is destroyed, physical netdevs (VFs) go back to the initial namespace,
//!   keeping ifindex and name unless taken (then `dev<N>`); veth and other virtual links are
//!   destroyed with it. [`BackOut`] reports which happened.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::RouteScope;
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec, RouteMessageBuilder};

use crate::client::{
    LinkStatus, RtNetlink, change_link, dump_links, get_link, require_link, set_up,
};
use crate::error::{Error, Result, netlink_errno};
use crate::netns::{Netns, NetnsId, NetnsUrl, open_client};
use crate::types::{IfName, IpNetwork, LinkRef, MacAddr, NeighbourSpec, RouteSpec};

const EBUSY: i32 = nix::libc::EBUSY;
const ENODEV: i32 = nix::libc::ENODEV;
const EADDRNOTAVAIL: i32 = nix::libc::EADDRNOTAVAIL;

/// What to do with a link for a client: which link (in our namespace), which namespace, and how
/// to configure it there. The link is always brought up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientLink {
    /// The link in the home namespace.
    pub link: LinkRef,
    /// The client's namespace, as the request named it.
    pub netns: NetnsUrl,
    /// The client's namespace already opened (a peer sent it by fd): used instead of opening
    /// `netns` again, and kept in the [`MovedLink`] so the link can be returned after the
    /// peer's connection is gone. Still checked against the guard.
    pub opened: Option<Arc<Netns>>,
    /// Name inside the client (keeps its name when `None`).
    pub name: Option<IfName>,
    /// MTU to set.
    pub mtu: Option<u32>,
    /// MAC address to set.
    pub mac: Option<MacAddr>,
    /// Addresses to add (IPv4 and IPv6).
    pub addresses: Vec<IpNetwork>,
    /// Routes through the link.
    pub routes: Vec<RouteSpec>,
    /// Permanent neighbour entries on the link.
    pub neighbours: Vec<NeighbourSpec>,
}

impl ClientLink {
    /// Moves `link` into `netns` and only brings it up; add settings with the builder methods.
    pub fn new(link: impl Into<LinkRef>, netns: NetnsUrl) -> Self {
        ClientLink {
            link: link.into(),
            netns,
            opened: None,
            name: None,
            mtu: None,
            mac: None,
            addresses: Vec::new(),
            routes: Vec::new(),
            neighbours: Vec::new(),
        }
    }

    /// Uses `netns`, already opened, as the client's namespace (see [`ClientLink::opened`]).
    pub fn in_opened(mut self, netns: Arc<Netns>) -> Self {
        self.opened = Some(netns);
        self
    }

    /// Renames it inside the client.
    pub fn name(mut self, name: IfName) -> Self {
        self.name = Some(name);
        self
    }

    /// Sets its MTU.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// Sets its MAC address.
    pub fn mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }

    /// Adds an address.
    pub fn address(mut self, address: IpNetwork) -> Self {
        self.addresses.push(address);
        self
    }

    /// Adds a route.
    pub fn route(mut self, destination: IpNetwork, gateway: Option<IpAddr>) -> Self {
        self.routes.push(RouteSpec {
            destination,
            gateway,
        });
        self
    }

    /// Adds a permanent neighbour.
    pub fn neighbour(mut self, ip: IpAddr, mac: MacAddr) -> Self {
        self.neighbours.push(NeighbourSpec { ip, mac });
        self
    }
}

/// The link as it was in the home namespace before it was moved.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OriginalLink {
    /// Its ifindex at home.
    pub index: u32,
    /// Its name at home.
    pub name: String,
    /// Its hardware address at home.
    pub address: Vec<u8>,
    /// Its permanent hardware address, if the driver reports one (VFs usually do not; PFs do).
    pub perm_address: Option<Vec<u8>>,
    /// Its MTU at home.
    pub mtu: u32,
}

/// The record of a link given to a client: everything [`RtNetlink::back_out`] needs. What it
/// stores (it serialises with serde) keeps no namespace alive; only a namespace a peer sent by
/// fd is held (`held`, never stored), since it cannot be found again by its URL without a
/// `/proc` scan.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MovedLink {
    /// The client namespace as the request named it.
    pub netns: NetnsUrl,
    /// Its identity when we moved the link, so a reused PID cannot redirect the back-out.
    pub netns_id: NetnsId,
    /// The link as it was at home.
    pub original: OriginalLink,
    /// Its ifindex in the client.
    pub client_index: u32,
    /// Its name in the client.
    pub client_name: String,
    /// Its hardware address in the client.
    pub client_address: Vec<u8>,
    /// The client namespace as it was sent to us by fd, held so [`RtNetlink::back_out`] reaches
    /// it however long ago the sender's connection ended. Not stored: after a restart the URL
    /// is all there is.
    #[serde(skip)]
    pub held: Option<Arc<Netns>>,
}

/// Records are equal when they say the same; a held handle is how to reach the namespace, not
/// part of what was recorded.
impl PartialEq for MovedLink {
    fn eq(&self, other: &Self) -> bool {
        self.netns == other.netns
            && self.netns_id == other.netns_id
            && self.original == other.original
            && self.client_index == other.client_index
            && self.client_name == other.client_name
            && self.client_address == other.client_address
    }
}

impl Eq for MovedLink {}

impl MovedLink {
    /// The record of `link` as it is at home, before `request` moves it: the client side
    /// starts out as the home side (the kernel keeps the ifindex across a move unless the
    /// target has it taken).
    fn at_home(request: &ClientLink, netns_id: NetnsId, link: &LinkStatus) -> Self {
        Self {
            netns: request.netns.clone(),
            netns_id,
            original: OriginalLink {
                index: link.index,
                name: link.name.clone(),
                address: link.address.clone(),
                perm_address: link.perm_address.clone(),
                mtu: link.mtu,
            },
            client_index: link.index,
            client_name: link.name.clone(),
            client_address: link.address.clone(),
            held: request.opened.clone(),
        }
    }
}

/// How a back-out ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackOut {
    /// Moved back from the live client namespace and restored, down, under its original name.
    Returned {
        /// Its ifindex at home now.
        index: u32,
    },
    /// The client namespace was gone; the kernel had returned the link to our namespace and it
    /// was found (by permanent address, hardware address or ifindex) and restored.
    Recovered {
        /// Its ifindex at home now.
        index: u32,
    },
    /// The client namespace was gone (or unreachable) and the link did not come back within the
    /// recovery wait: virtual links such as veth are destroyed with their namespace.
    Vanished,
}

impl RtNetlink {
    /// The record [`RtNetlink::move_into`] would return for `request` if the move, rename and
    /// configuration all succeed, read without changing anything: the client namespace is opened
    /// and checked (the same refusals as `move_into`) and the link read at home. Callers persist
    /// it as the intent before moving, so a process killed mid-move leaves a record that
    /// [`RtNetlink::back_out`] can act on whether the move happened or not.
    pub async fn plan_move(&self, request: &ClientLink) -> Result<MovedLink> {
        let target = self.client_netns(request).await?;
        let link = require_link(&self.handle, &request.link, &self.home_label()).await?;
        let mut record = MovedLink::at_home(request, target.id(), &link);
        if let Some(name) = &request.name {
            record.client_name = name.as_str().to_owned();
        }
        if let Some(mac) = request.mac {
            record.client_address = mac.octets().to_vec();
        }
        // The plan carries the namespace it opened (and, with it, its socket) to
        // `move_planned`, so the move neither opens it nor reads the link again.
        record.held = Some(target);
        Ok(record)
    }

    /// Moves a link into a client namespace and configures it: rename, MTU, MAC, up, addresses,
    /// routes, neighbours, in that order. The same as [`RtNetlink::plan_move`] then
    /// [`RtNetlink::move_planned`].
    ///
    /// If any step fails, the link is returned home as it was and the error is
    /// [`Error::RolledBack`]; if even that fails, [`Error::RollbackFailed`] carries the
    /// [`MovedLink`] record so the caller can retry [`RtNetlink::back_out`].
    pub async fn move_into(&self, request: &ClientLink) -> Result<MovedLink> {
        let plan = self.plan_move(request).await?;
        self.move_planned(request, &plan).await
    }

    /// [`RtNetlink::move_into`] for a `plan` that [`RtNetlink::plan_move`] made of the same
    /// `request` (and the caller has persisted): the plan's namespace and its reading of the link
    /// are used as they are, so the move opens nothing and reads nothing first.
    ///
    /// Move, rename, MTU, MAC and up go to the kernel as one `RTM_NEWLINK`: it moves the link
    /// first (under the new name, with the ifindex it had at home, `IFLA_NEW_IFINDEX`) and
    /// applies the rest in the client, so the message's success says where the link is. Only
    /// when it fails is the client searched for the link, to roll back whatever part landed.
    /// Each address, route and neighbour is one message more. The returned record holds the
    /// namespace only if the request did ([`ClientLink::opened`]).
    pub async fn move_planned(&self, request: &ClientLink, plan: &MovedLink) -> Result<MovedLink> {
        let target = match &plan.held {
            Some(ns) if ns.id() == plan.netns_id => {
                self.guard.check(ns, &request.netns)?;
                ns.clone()
            }
            _ => {
                let ns = self.client_netns(request).await?;
                if ns.id() != plan.netns_id {
                    return Err(Error::NotANetns {
                        path: ns.path().to_owned(),
                        reason: format!(
                            "not the namespace named {} when the move was planned",
                            plan.netns
                        ),
                    });
                }
                ns
            }
        };
        let client = self.client_handle(&target)?;
        let original = &plan.original;
        let mut record = plan.clone();
        record.held = request.opened.clone();
        record.client_index = original.index;
        record.client_name = original.name.clone();
        record.client_address = original.address.clone();

        let change = |pin_index: bool| {
            let mut msg =
                LinkUnspec::new_with_index(original.index).setns_by_fd(target.as_raw_fd());
            if pin_index {
                msg = msg.append_extra_attribute(LinkAttribute::NewIfIndex(
                    i32::try_from(original.index).unwrap_or_default(),
                ));
            }
            if let Some(name) = &request.name {
                msg = msg.name(name.as_str());
            }
            if let Some(mtu) = request.mtu {
                msg = msg.mtu(mtu);
            }
            if let Some(mac) = request.mac {
                msg = msg.address(mac.octets().to_vec());
            }
            msg.up().build()
        };
        let op = format!("move to {target}");
        let mut moved = change_link(&self.handle, change(true), &op, &original.name).await;
        let mut pinned = true;
        if let Err(e) = &moved
            && e.errno() == Some(EBUSY)
            && find_in_client(&client, &record, &[]).await?.is_none()
        {
            // The client has a link at our ifindex: let the kernel pick another.
            pinned = false;
            moved = change_link(&self.handle, change(false), &op, &original.name).await;
        }
        match moved {
            Ok(()) => {
                if let Some(name) = &request.name {
                    record.client_name = name.as_str().to_owned();
                }
                if let Some(mac) = request.mac {
                    record.client_address = mac.octets().to_vec();
                }
                if !(pinned && self.pins_ifindex)
                    && let Some(found) = self.index_after_move(&client, &record).await?
                {
                    record.client_index = found;
                }
            }
            Err(e) => {
                // The kernel stops at the first failing attribute, after the move: look where
                // the link is rather than trusting the answer.
                let names: Vec<&str> = request.name.iter().map(IfName::as_str).collect();
                let mut probe = record.clone();
                if let Some(mac) = request.mac {
                    probe.client_address = mac.octets().to_vec();
                }
                return match find_in_client(&client, &probe, &names).await? {
                    None => Err(e),
                    Some(found) => {
                        probe.client_index = found.index;
                        probe.client_name = found.name;
                        Err(self.roll_back(e, probe, &client).await)
                    }
                };
            }
        }

        match configure(&client, request, &record).await {
            Ok(()) => Ok(record),
            Err(e) => Err(self.roll_back(e, record, &client).await),
        }
    }

    /// The link's ifindex in the client after a move that let the kernel pick it; `None` when
    /// it kept the one it had at home.
    async fn index_after_move(&self, client: &Handle, record: &MovedLink) -> Result<Option<u32>> {
        if let Some(found) = get_link(client, &LinkRef::Index(record.client_index)).await?
            && found.name == record.client_name
        {
            return Ok(None);
        }
        let name = LinkRef::Name(record.client_name.clone());
        Ok(get_link(client, &name).await?.map(|l| l.index))
    }

    /// Returns a link from its client namespace: down, original name, MTU and MAC restored
    /// (the last two best effort, see the logs).
    ///
    /// If the namespace is gone (or the URL now names another namespace), waits up to the
    /// recovery wait for the kernel to hand the link back to the home namespace and restores it
    /// there; see [`BackOut`].
    pub async fn back_out(&self, record: &MovedLink) -> Result<BackOut> {
        // No guard here: a record only names a namespace a move was made into.
        if let Some(ns) = self.live_client(record).await {
            let client = self.client_handle(&ns)?;
            if let Some(current) = find_in_client(&client, record, &[]).await? {
                let index = self.return_home(&client, record, Some(current)).await?;
                return Ok(BackOut::Returned { index });
            }
        }
        self.recover(record).await
    }

    /// Makes a moved link unusable where it is, without moving it: down, and `addresses`
    /// deleted, in the client's namespace (`None`: whatever addresses it has, read first). For a
    /// Close that answers before the link goes home; [`RtNetlink::back_out`] follows.
    ///
    /// Down is one `RTM_NEWLINK` by the recorded ifindex (IPv4 local routes and IPv6 addresses
    /// go with it), then one `RTM_DELADDR` per address. A namespace that is gone, a link no
    /// longer at that index and an address already deleted are no error: the kernel returned
    /// the link, or the client removed what we would, and `back_out` finds it either way.
    pub async fn disable(&self, record: &MovedLink, addresses: Option<&[IpNetwork]>) -> Result<()> {
        let Some(ns) = self.live_client(record).await else {
            return Ok(());
        };
        let client = self.client_handle(&ns)?;
        let index = record.client_index;
        let found;
        let addresses = match addresses {
            Some(a) => a,
            None => match link_addresses(&client, index, &record.client_name).await {
                Ok(a) => {
                    found = a;
                    &found[..]
                }
                Err(e) if e.errno() == Some(ENODEV) => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        let name = &record.client_name;
        let down = set_up(&client, index, false, name);
        // Every address's deletion is sent with the "down", before either answer is read (the
        // kernel applies them in order): one wakeup for the lot, not one per message.
        let deletions = addresses.iter().map(|address| {
            let msg = match address.addr() {
                IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
                    .index(index)
                    .address(a, address.prefix())
                    .build(),
                IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
                    .index(index)
                    .address(a, address.prefix())
                    .build(),
            };
            let deleted = client.address().del(msg).execute();
            async move {
                match deleted.await {
                    Ok(()) => Ok(()),
                    // Gone already: the client's doing, or the link's (see below).
                    Err(e) if matches!(netlink_errno(&e), Some(EADDRNOTAVAIL | ENODEV)) => Ok(()),
                    Err(source) => Err(Error::Netlink {
                        op: format!("delete address {address}"),
                        link: name.clone(),
                        source,
                    }),
                }
            }
        });
        let (down, deleted) = futures::join!(down, futures::future::join_all(deletions));
        match down {
            // The link left that index: the kernel returned it, `back_out` finds it.
            Err(e) if e.errno() == Some(ENODEV) => return Ok(()),
            other => other?,
        }
        deleted.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
    }

    /// The client namespace a record names, if it still is the one the link was moved into:
    /// the one the record holds open, else its URL opened again.
    async fn live_client(&self, record: &MovedLink) -> Option<Arc<Netns>> {
        match &record.held {
            Some(ns) if ns.id() == record.netns_id => Some(ns.clone()),
            _ => {
                let url = record.netns.clone();
                let opened = tokio::task::spawn_blocking(move || Netns::open(&url)).await;
                match opened {
                    Ok(Ok(ns)) if ns.id() == record.netns_id => Some(Arc::new(ns)),
                    _ => None,
                }
            }
        }
    }

    /// The client namespace of `request`: the one it carries opened, else its URL opened;
    /// either way checked against the guard.
    async fn client_netns(&self, request: &ClientLink) -> Result<Arc<Netns>> {
        match &request.opened {
            Some(ns) => {
                self.guard.check(ns, &request.netns)?;
                Ok(ns.clone())
            }
            None => Ok(Arc::new(open_client(&request.netns, &self.guard).await?)),
        }
    }

    async fn roll_back(&self, cause: Error, record: MovedLink, client: &Handle) -> Error {
        let link = record.original.name.clone();
        tracing::warn!(link = %link, netns = %record.netns, error = %cause, "move into namespace failed; rolling back");
        match self.return_home(client, &record, None).await {
            Ok(_) => Error::RolledBack {
                op: "move into namespace",
                link,
                source: Box::new(cause),
            },
            Err(rollback) => Error::RollbackFailed {
                op: "move into namespace",
                link,
                cause: Box::new(cause),
                rollback: Box::new(rollback),
                record: Box::new(record),
            },
        }
    }

    /// Moves the link home as it was, in one message: the original name, ifindex, MTU and
    /// hardware address (the move itself takes it down). If the kernel refuses any of it, the
    /// link is looked for at home (it may have moved all the same) and moved or restored step by
    /// step. `current` is the link as just found in the client, if the caller looked.
    /// Returns the home ifindex.
    async fn return_home(
        &self,
        client: &Handle,
        record: &MovedLink,
        current: Option<LinkStatus>,
    ) -> Result<u32> {
        let original = &record.original;
        let current =
            match current {
                Some(found) => found,
                None => find_in_client(client, record, &[]).await?.ok_or_else(|| {
                    Error::LinkNotFound {
                        link: record.client_name.clone(),
                        netns: record.netns.to_string(),
                    }
                })?,
            };
        // No explicit "down": the move closes the link itself (dev_change_net_namespace calls
        // dev_close), and a separate close would cost another RCU grace period.
        let plain = || {
            LinkUnspec::new_with_index(current.index)
                .setns_by_fd(self.home_fd())
                .name(original.name.as_str())
        };
        let mut whole = plain().append_extra_attribute(LinkAttribute::NewIfIndex(
            i32::try_from(original.index).unwrap_or_default(),
        ));
        if current.mtu != original.mtu && original.mtu != 0 {
            whole = whole.mtu(original.mtu);
        }
        if current.address != original.address && !original.address.is_empty() {
            whole = whole.address(original.address.clone());
        }
        match change_link(client, whole.build(), "move home", &current.name).await {
            Ok(()) if self.pins_ifindex => return Ok(original.index),
            Ok(()) => {
                if let Some(back) = self.find_home(record, &[&original.name]).await? {
                    return Ok(back.index);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "moving home in one message failed; step by step")
            }
        }
        let names = [&original.name, &current.name];
        let mut back = self.find_home(record, &names).await?;
        let mut moved = Ok(());
        if back.is_none() {
            moved = change_link(client, plain().build(), "move home", &current.name).await;
            back = self.find_home(record, &names).await?;
        }
        let Some(back) = back else {
            moved?;
            return Err(Error::LinkNotFound {
                link: original.name.clone(),
                netns: self.home_label(),
            });
        };
        self.restore_at_home(&back, original).await?;
        Ok(back.index)
    }

    /// The record's link at home under one of `names`, told by its address.
    async fn find_home(&self, record: &MovedLink, names: &[&String]) -> Result<Option<LinkStatus>> {
        for name in names {
            if let Some(found) = get_link(&self.handle, &LinkRef::Name((*name).clone())).await?
                && same_address(&found, record)
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Puts name, MTU and hardware address back and leaves the link down.
    ///
    /// Down and the name are required (the name is how the VF is found again). MTU and address
    /// are best effort once the link is home: some VF drivers refuse a MAC change from the VF
    /// side while the PF holds an administrative MAC, and failing the whole back-out for that
    /// would only make the caller retry forever; the failure is logged instead.
    async fn restore_at_home(&self, link: &LinkStatus, original: &OriginalLink) -> Result<()> {
        if link.up {
            set_up(&self.handle, link.index, false, &link.name).await?;
        }
        if link.name != original.name {
            let msg = LinkUnspec::new_with_index(link.index).name(original.name.as_str());
            let op = format!("rename to {}", original.name);
            change_link(&self.handle, msg.build(), op, &link.name).await?;
        }
        if link.mtu != original.mtu && original.mtu != 0 {
            let msg = LinkUnspec::new_with_index(link.index).mtu(original.mtu);
            let op = format!("restore mtu {}", original.mtu);
            if let Err(e) = change_link(&self.handle, msg.build(), op, &original.name).await {
                tracing::warn!(error = %e, "link is home, but its MTU was not restored");
            }
        }
        if link.address != original.address && !original.address.is_empty() {
            let msg = LinkUnspec::new_with_index(link.index).address(original.address.clone());
            let op = "restore hardware address";
            if let Err(e) = change_link(&self.handle, msg.build(), op, &original.name).await {
                tracing::warn!(error = %e, "link is home, but its hardware address was not restored");
            }
        }
        Ok(())
    }

    /// The namespace is gone: wait for the kernel to return the link to us, then restore it.
    async fn recover(&self, record: &MovedLink) -> Result<BackOut> {
        let deadline = tokio::time::Instant::now() + self.recovery_wait;
        loop {
            let links = dump_links(&self.handle).await?;
            if let Some(found) = match_returned(&links, record) {
                tracing::info!(link = %record.original.name, found = %found.name, netns = %record.netns,
                    "client namespace gone; restoring the link the kernel returned");
                self.restore_at_home(found, &record.original).await?;
                return Ok(BackOut::Recovered { index: found.index });
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(link = %record.original.name, netns = %record.netns,
                    "client namespace gone and the link did not come back (destroyed with it?)");
                return Ok(BackOut::Vanished);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The moved link in the client: by recorded ifindex, else by name (recorded, original, then
/// `extra`). A candidate must have the link's permanent or hardware address (a move keeps it);
/// at the recorded ifindex an all-zero address also needs the recorded name. So a same-named or
/// same-indexed link of the client's own is never taken for ours.
async fn find_in_client(
    client: &Handle,
    record: &MovedLink,
    extra: &[&str],
) -> Result<Option<LinkStatus>> {
    if let Some(found) = get_link(client, &LinkRef::Index(record.client_index)).await?
        && (is_ours(&found, record)
            || (same_address(&found, record) && found.name == record.client_name))
    {
        return Ok(Some(found));
    }
    let names = [record.client_name.as_str(), record.original.name.as_str()];
    for name in names.iter().chain(extra) {
        if let Some(found) = get_link(client, &LinkRef::Name((*name).to_owned())).await?
            && same_address(&found, record)
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Picks the link the kernel returned from a dead namespace. The permanent address is the only
/// certain mark; without one, a link with the client-side or original hardware address wins,
/// preferring the original ifindex (kept across the return unless taken).
pub(crate) fn match_returned<'a>(
    links: &'a [LinkStatus],
    record: &MovedLink,
) -> Option<&'a LinkStatus> {
    links
        .iter()
        .filter(|l| is_ours(l, record))
        .find(|l| l.index == record.original.index)
        .or_else(|| links.iter().find(|l| is_ours(l, record)))
}

/// Whether a link carries the marks of the moved one: its permanent address when it has one,
/// else a non-zero hardware address it had at home or in the client. All-zero addresses (`lo`,
/// some VFs before a MAC is assigned) prove nothing.
fn is_ours(link: &LinkStatus, record: &MovedLink) -> bool {
    if let Some(perm) = &record.original.perm_address {
        return link.perm_address.as_ref() == Some(perm);
    }
    link.address.iter().any(|b| *b != 0) && same_address(link, record)
}

/// The permanent address matches, or (without one) the hardware address equals the one at home
/// or in the client, zeroes included.
fn same_address(link: &LinkStatus, record: &MovedLink) -> bool {
    if let Some(perm) = &record.original.perm_address {
        return link.perm_address.as_ref() == Some(perm);
    }
    link.address == record.client_address || link.address == record.original.address
}

/// The addresses on the link at `index` (one `RTM_GETADDR` dump, filtered by the kernel).
async fn link_addresses(client: &Handle, index: u32, link: &str) -> Result<Vec<IpNetwork>> {
    let mut dump = client
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut out = Vec::new();
    let failed = |source| Error::Netlink {
        op: "list addresses".into(),
        link: link.to_owned(),
        source,
    };
    while let Some(msg) = dump.try_next().await.map_err(failed)? {
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let addr = local.or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        });
        if let Some(ip) = addr
            && let Ok(net) = IpNetwork::new(ip, msg.header.prefix_len)
        {
            out.push(net);
        }
    }
    Ok(out)
}

/// What the move's own message cannot carry: addresses, routes and neighbours, one message each.
async fn configure(client: &Handle, request: &ClientLink, record: &MovedLink) -> Result<()> {
    let index = record.client_index;
    let name = record.client_name.clone();
    // Addresses, then routes, then neighbours, all sent before the first answer is read: the
    // socket's connection sends what is queued in order and the kernel applies each message
    // as it arrives, so a route still finds the address it goes through, and the answers
    // come back together instead of one wakeup each.
    let mut steps: Vec<futures::future::BoxFuture<'_, Result<()>>> = Vec::new();
    for address in &request.addresses {
        let name = name.clone();
        steps.push(Box::pin(async move {
            client
                .address()
                .add(index, address.addr(), address.prefix())
                .execute()
                .await
                .map_err(|source| Error::Netlink {
                    op: format!("add address {address}"),
                    link: name,
                    source,
                })
        }));
    }
    for route in &request.routes {
        let name = name.clone();
        steps.push(Box::pin(async move {
            add_route(client, index, route, &name).await
        }));
    }
    for neighbour in &request.neighbours {
        let name = name.clone();
        steps.push(Box::pin(async move {
            client
                .neighbours()
                .add(index, neighbour.ip)
                .link_layer_address(&neighbour.mac.octets())
                .execute()
                .await
                .map_err(|source| Error::Netlink {
                    op: format!("add neighbour {} lladdr {}", neighbour.ip, neighbour.mac),
                    link: name,
                    source,
                })
        }));
    }
    // The first failure in the request's order is the one reported; the caller rolls the
    // link back home, which takes whatever did land with it.
    futures::future::join_all(steps)
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .map(|_| ())
}

async fn add_route(client: &Handle, index: u32, route: &RouteSpec, link: &str) -> Result<()> {
    let invalid = |_| Error::InvalidValue {
        what: "route",
        value: route.to_string(),
        reason: "gateway family does not fit the destination",
    };
    let destination = route.destination;
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(destination.addr(), destination.prefix())
        .map_err(invalid)?
        .output_interface(index);
    builder = match route.gateway {
        Some(gateway) => builder.gateway(gateway).map_err(invalid)?,
        // `ip route add <v4 prefix> dev X` uses link scope; the kernel needs it to accept a
        // connected IPv4 route without a next hop as on-link. IPv6 routes stay universe.
        None if destination.addr().is_ipv4() => builder.scope(RouteScope::Link),
        None => builder,
    };
    client
        .route()
        .add(builder.build())
        .execute()
        .await
        .map_err(|source| Error::Netlink {
            op: format!("add route {route}"),
            link: link.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::client::OperState;

    fn status(index: u32, name: &str, address: [u8; 6], perm: Option<[u8; 6]>) -> LinkStatus {
        LinkStatus {
            index,
            name: name.into(),
            address: address.to_vec(),
            perm_address: perm.map(|p| p.to_vec()),
            mtu: 1500,
            up: false,
            carrier: None,
            oper_state: OperState::Down,
        }
    }

    fn record(perm: Option<[u8; 6]>) -> MovedLink {
        MovedLink {
            netns: NetnsUrl::Inode { dev: 4, ino: 1 },
            netns_id: NetnsId { dev: 4, ino: 1 },
            original: OriginalLink {
                index: 7,
                name: "ens1f0v1".into(),
                address: vec![2, 0, 0, 0, 0, 1],
                perm_address: perm.map(|p| p.to_vec()),
                mtu: 1500,
            },
            client_index: 3,
            client_name: "nsm0".into(),
            client_address: vec![2, 0, 0, 0, 0, 9],
            held: None,
        }
    }

    #[test]
    fn records_survive_a_json_round_trip_and_refuse_hostile_urls() {
        let original = record(Some([0xa; 6]));
        let json = serde_json::to_string(&original).unwrap();
        assert!(json.contains("\"inode://4/1\""), "{json}");
        assert_eq!(serde_json::from_str::<MovedLink>(&json).unwrap(), original);
        let hostile = json.replace("inode://4/1", "file:///proc/1/../../etc/shadow");
        assert!(serde_json::from_str::<MovedLink>(&hostile).is_err());
    }

    #[test]
    fn returned_link_is_matched_by_permanent_address_first() {
        let links = [
            status(7, "dev7", [2, 0, 0, 0, 0, 9], Some([0xa; 6])),
            status(9, "dev9", [2, 0, 0, 0, 0, 9], Some([0xb; 6])),
        ];
        assert_eq!(
            match_returned(&links, &record(Some([0xb; 6])))
                .unwrap()
                .index,
            9
        );
    }

    #[test]
    fn returned_link_without_permanent_address_prefers_original_index() {
        let links = [
            status(5, "other", [2, 0, 0, 0, 0, 9], None),
            status(7, "nsm0", [2, 0, 0, 0, 0, 9], None),
        ];
        assert_eq!(match_returned(&links, &record(None)).unwrap().index, 7);
    }

    #[test]
    fn returned_link_is_found_by_address_when_its_index_changed() {
        let links = [
            status(1, "lo", [0; 6], None),
            status(12, "dev3", [2, 0, 0, 0, 0, 1], None),
        ];
        assert_eq!(match_returned(&links, &record(None)).unwrap().name, "dev3");
    }

    #[test]
    fn unrelated_links_are_never_taken_for_the_returned_one() {
        let links = [status(7, "ens1f0v1", [2, 9, 9, 9, 9, 9], None)];
        assert!(match_returned(&links, &record(None)).is_none());
    }
}
