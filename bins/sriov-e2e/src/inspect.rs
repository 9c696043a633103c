//! What the kernel shows in a namespace, read through our netlink crate.

use futures::TryStreamExt;
use sriov_netlink::netlink_packet_route::address::AddressAttribute;
use sriov_netlink::{LinkRef, Netns, NetnsUrl, RtNetlink};

/// A link as seen in a namespace.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) name: String,
    pub(crate) up: bool,
    pub(crate) mtu: u32,
    pub(crate) addresses: Vec<String>,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} mtu {} {}",
            self.name,
            if self.up { "UP" } else { "DOWN" },
            self.mtu,
            self.addresses.join(" ")
        )
    }
}

/// The link `name` in the namespace at `url` with its addresses, if it exists.
pub(crate) async fn link(url: &NetnsUrl, name: &str) -> Result<Option<Seen>, String> {
    let netns = Netns::open(url).map_err(|e| e.to_string())?;
    let nl = RtNetlink::in_netns(netns).map_err(|e| e.to_string())?;
    link_with(&nl, name).await
}

/// The link `name` in `nl`'s home namespace with its addresses.
pub(crate) async fn link_with(nl: &RtNetlink, name: &str) -> Result<Option<Seen>, String> {
    let Some(l) = nl
        .link(&LinkRef::Name(name.to_string()))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let mut addresses = Vec::new();
    let mut stream = nl
        .handle()
        .address()
        .get()
        .set_link_index_filter(l.index)
        .execute();
    while let Some(msg) = stream.try_next().await.map_err(|e| e.to_string())? {
        for a in &msg.attributes {
            if let AddressAttribute::Address(ip) = a {
                addresses.push(format!("{ip}/{}", msg.header.prefix_len));
            }
        }
    }
    addresses.sort();
    addresses.dedup();
    Ok(Some(Seen {
        name: l.name,
        up: l.up,
        mtu: l.mtu,
        addresses,
    }))
}
