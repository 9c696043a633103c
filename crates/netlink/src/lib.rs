//! Netlink for the SR-IOV forwarder and device plugin: network namespaces from NSM URLs, moving
//! a VF netdev into a client's namespace and configuring it there (and back), PF-side VF
//! settings, and link health. Everything goes over rtnetlink (netlink-packet-route); no `ip`
//! processes.
//!
//! # Model
//!
//! An [`RtNetlink`] is a connection to one namespace, "home": the forwarder's own, where VFs
//! live while no client uses them. Other namespaces are named by [`NetnsUrl`]
//! (`file:///proc/<pid>/ns/net`, `file:///var/run/netns/<name>`, `inode://<dev>/<ino>`) and
//! opened as [`Netns`], which checks that the file really is a network namespace.
//!
//! **Threads and namespaces.** A thread's network namespace is per-thread state; entering one on
//! a tokio worker would silently move every later task on that worker. So this crate never calls
//! `setns` on a thread it does not own: [`Netns::run`] starts a fresh OS thread, enters the
//! namespace there, runs a closure and lets the thread end. Its main use is
//! [`Netns::route_socket`]: a netlink socket stays bound to the namespace it was created in, so
//! the thread only creates the socket and hands it back, and async code on any runtime thread
//! drives it. Moving a link uses `IFLA_NET_NS_FD` on the home socket; configuring it afterwards
//! uses a socket created in the client namespace and kept with that [`Netns`] while it lives,
//! so a Request's plan, move and configuration (and a held namespace's Close) share one.
//!
//! **Round trips.** Each netlink message is a kernel round trip, so the plumbing sends the
//! fewest the kernel allows: one `RTM_NEWLINK` moves, renames, sets MTU and MAC and brings the
//! link up; one per address, route and neighbour; one moves it home restored. Every socket
//! counts what it sends ([`RtNetlink::messages`], [`process_messages`]), reads apart from
//! changes ([`MessageCounts`]).
//!
//! **Undo.** [`RtNetlink::move_into`] returns a [`MovedLink`] record (plain data, no file
//! descriptors, so it can be persisted and it never pins a dead pod's namespace). If a later step
//! fails, earlier ones are undone before the error returns ([`Error::RolledBack`]); if the undo
//! fails too, the error carries the record ([`Error::RollbackFailed`]), so a link is never
//! half-moved with no record. [`RtNetlink::back_out`] reverses a move, and when the client's
//! namespace is already gone it finds the link the kernel returned to the home namespace and
//! restores it ([`BackOut`]). [`RtNetlink::set_vf`] likewise returns the previous VF settings
//! for [`RtNetlink::restore_vf`].
//!
//! The kernel returns a physical netdev from a dying namespace to the *initial* namespace, so
//! recovery after a client namespace died only finds it when home is the initial namespace (the
//! forwarder runs with `hostNetwork`). veth and other virtual links are destroyed instead
//! ([`BackOut::Vanished`]).
//!
//! **Health.** [`RtNetlink::link_health`] reads a link's flags, carrier and operstate;
//! [`RtNetlink::link_events`] streams `RTNLGRP_LINK` changes (including removal) for the device
//! plugin.
//!
//! **Seam.** [`NetlinkOps`] is the narrow, object-safe trait over these operations for the
//! forwarder's chain elements; [`RtNetlink`] implements it, `MockNetlinkOps` mocks it and
//! `testing::RecordingOps` records calls (both behind the `testing` feature, never in a
//! production build).
//!
//! **Tests.** `testing` creates private namespaces (`unshare(CLONE_NEWNET)` on a parked std
//! thread) and veth pairs; the crate's kernel tests run there and print `SKIP` without
//! CAP_SYS_ADMIN. `cargo bench -p sriov-netlink --bench plumbing` compares the plumbing sequence
//! with the same steps as `ip` commands.
//!
//! # Example
//!
//! ```no_run
//! use sriov_netlink::{ClientLink, IfName, NetnsUrl, RtNetlink};
//!
//! # async fn example() -> Result<(), sriov_netlink::Error> {
//! let nl = RtNetlink::new()?; // home = this thread's namespace
//! let request = ClientLink::new("ens1f0v3", NetnsUrl::parse("file:///proc/4242/ns/net")?)
//!     .name(IfName::new("nsm-1")?)
//!     .mtu(9000)
//!     .address("10.0.0.2/24".parse()?)
//!     .route("10.1.0.0/16".parse()?, "10.0.0.1".parse().ok());
//! let record = nl.move_into(&request).await?; // keep it with the connection
//! // ... on Close:
//! nl.back_out(&record).await?;
//! # Ok(())
//! # }
//! ```

// This crate reads client, kubelet or file input: a panic here is a denial
// of service of a node agent, so the panicking shortcuts are refused.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod client;
mod count;
mod error;
mod health;
mod netns;
mod ops;
mod plumb;
mod socket;
#[cfg(feature = "testing")]
pub mod testing;
mod types;
mod vf;

pub use client::{LinkStatus, OperState, RtNetlink};
pub use count::{MessageCounts, process_messages};
pub use error::{Error, Result};
pub use health::{LinkEvent, LinkEvents};
pub use netns::{
    Netns, NetnsGuard, NetnsId, NetnsUrl, RULE_HOST_NETNS, RULE_OWN_NETNS, open_client,
};
#[cfg(feature = "testing")]
pub use ops::MockNetlinkOps;
pub use ops::NetlinkOps;
pub use plumb::{BackOut, ClientLink, MovedLink, OriginalLink};
pub use socket::{drive_requests_on_own_thread, requests_on_own_thread};
pub use types::{IfName, IpNetwork, LinkRef, MacAddr, NeighbourSpec, RouteSpec};
pub use vf::{TxRate, VfConfig, VfRecord, VfState, VfVlan, vf_config_message, vf_states};

/// rtnetlink and netlink-packet-route as this crate uses them, for callers that need raw access
/// through [`RtNetlink::handle`].
pub use netlink_packet_route;
pub use rtnetlink;
