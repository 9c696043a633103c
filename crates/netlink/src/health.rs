//! Link health for the device plugin: a link's carrier, operstate and existence now, and a
//! stream of changes from the `RTNLGRP_LINK` multicast group.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::NetlinkPayload;

use crate::client::{LinkStatus, OperState, RtNetlink};
use crate::error::Result;
use crate::netns::Netns;
use crate::socket::{self, Notifications};
use crate::types::LinkRef;

/// `RTNLGRP_LINK` (1) as a bind(2) group mask: bit `group - 1`.
const RTNLGRP_LINK_MASK: u32 = 1;

/// A change the kernel announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link appeared or changed (flags, carrier, operstate, name, ...); its state now.
    Changed(LinkStatus),
    /// A link was deleted or left the namespace.
    Removed {
        /// Its ifindex.
        index: u32,
        /// Its name.
        name: String,
    },
    /// The socket's receive buffer overflowed (`ENOBUFS`) and the kernel dropped events: re-read
    /// the state of every link you watch ([`RtNetlink::link_health`]).
    Lost,
}

impl LinkEvent {
    /// The link's ifindex (`None` for [`LinkEvent::Lost`]).
    pub fn index(&self) -> Option<u32> {
        match self {
            LinkEvent::Changed(status) => Some(status.index),
            LinkEvent::Removed { index, .. } => Some(*index),
            LinkEvent::Lost => None,
        }
    }

    /// The link's name (`None` for [`LinkEvent::Lost`]).
    pub fn name(&self) -> Option<&str> {
        match self {
            LinkEvent::Changed(status) => Some(&status.name),
            LinkEvent::Removed { name, .. } => Some(name),
            LinkEvent::Lost => None,
        }
    }
}

impl LinkStatus {
    /// Healthy for a device plugin: administratively up with carrier, and not operationally
    /// down (virtual links often report `Unknown`, which counts as healthy).
    pub fn is_healthy(&self) -> bool {
        self.up
            && self.carrier != Some(false)
            && !matches!(
                self.oper_state,
                OperState::Down | OperState::LowerLayerDown | OperState::NotPresent
            )
    }
}

/// Link changes in one namespace, as a stream. Ends only if the socket fails.
pub struct LinkEvents {
    notifications: Notifications,
}

impl std::fmt::Debug for LinkEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkEvents").finish_non_exhaustive()
    }
}

impl LinkEvents {
    /// Subscribes to link changes in `netns` (the socket is created inside it).
    pub fn subscribe(netns: &Netns) -> Result<Self> {
        let (_handle, notifications) = socket::multicast(netns, RTNLGRP_LINK_MASK)?;
        Ok(LinkEvents { notifications })
    }
}

impl Stream for LinkEvents {
    type Item = LinkEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LinkEvent>> {
        loop {
            let Some((msg, _)) = futures::ready!(Pin::new(&mut self.notifications).poll_next(cx))
            else {
                return Poll::Ready(None);
            };
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    return Poll::Ready(Some(LinkEvent::Changed(LinkStatus::from_message(&link))));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    let status = LinkStatus::from_message(&link);
                    return Poll::Ready(Some(LinkEvent::Removed {
                        index: status.index,
                        name: status.name,
                    }));
                }
                // netlink-proto turns ENOBUFS on the socket into an overrun message.
                NetlinkPayload::Overrun(_) => return Poll::Ready(Some(LinkEvent::Lost)),
                _ => continue,
            }
        }
    }
}

impl RtNetlink {
    /// Carrier, operstate and flags of a link in the home namespace; `None` if it is gone.
    pub async fn link_health(&self, link: &LinkRef) -> Result<Option<LinkStatus>> {
        self.link(link).await
    }

    /// Link changes in the home namespace.
    pub fn link_events(&self) -> Result<LinkEvents> {
        LinkEvents::subscribe(&self.home)
    }
}
