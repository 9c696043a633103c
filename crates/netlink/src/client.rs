//! [`RtNetlink`]: the rtnetlink connection to "our" namespace, and the link queries and changes
//! everything else is built from.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use rtnetlink::{Handle, LinkUnspec};

use crate::count::{Counter, MessageCounts};
use crate::error::{Error, Result, netlink_errno};
use crate::netns::{Netns, NetnsGuard};
use crate::socket;
use crate::types::{LinkRef, MacAddr};

const ENODEV: i32 = nix::libc::ENODEV;

/// The operational state of a link (RFC 2863, `IF_OPER_*`), as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperState {
    /// The driver does not report it (common for virtual links).
    Unknown,
    /// Some component is missing.
    NotPresent,
    /// Down.
    Down,
    /// Down because a lower link is down.
    LowerLayerDown,
    /// In a test mode.
    Testing,
    /// Waiting for an external event.
    Dormant,
    /// Up and able to pass packets.
    Up,
    /// A value newer than this crate.
    Other(u8),
}

impl From<State> for OperState {
    fn from(state: State) -> Self {
        match state {
            State::Unknown => OperState::Unknown,
            State::NotPresent => OperState::NotPresent,
            State::Down => OperState::Down,
            State::LowerLayerDown => OperState::LowerLayerDown,
            State::Testing => OperState::Testing,
            State::Dormant => OperState::Dormant,
            State::Up => OperState::Up,
            other => OperState::Other(u8::from(other)),
        }
    }
}

/// What the kernel says about one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Current hardware address (empty if the link has none).
    pub address: Vec<u8>,
    /// Permanent (factory) hardware address, when the driver reports one.
    pub perm_address: Option<Vec<u8>>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier (`IFLA_CARRIER`), when reported.
    pub carrier: Option<bool>,
    /// Operational state.
    pub oper_state: OperState,
}

impl LinkStatus {
    /// Reads the fields we care about from a link message.
    pub fn from_message(msg: &LinkMessage) -> Self {
        let mut status = LinkStatus {
            index: msg.header.index,
            name: String::new(),
            address: Vec::new(),
            perm_address: None,
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            carrier: None,
            oper_state: OperState::Unknown,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => status.name = name.clone(),
                LinkAttribute::Address(a) => status.address = a.clone(),
                LinkAttribute::PermAddress(a) if a.iter().any(|b| *b != 0) => {
                    status.perm_address = Some(a.clone())
                }
                LinkAttribute::Mtu(mtu) => status.mtu = *mtu,
                LinkAttribute::Carrier(c) => status.carrier = Some(*c != 0),
                LinkAttribute::OperState(s) => status.oper_state = (*s).into(),
                _ => {}
            }
        }
        status
    }

    /// The hardware address as a MAC, if it is an Ethernet one.
    pub fn mac(&self) -> Option<MacAddr> {
        MacAddr::from_slice(&self.address)
    }
}

/// The rtnetlink connection to one namespace ("home": the forwarder's own, where VFs live when
/// no client uses them), plus the operations of this crate.
///
/// Cheap to clone; clones share the connection. Must be created and used inside a tokio runtime
/// with IO enabled. Other namespaces are reached by a socket created inside them
/// ([`Netns::route_socket`]) and kept with the [`Netns`] while it lives, never by entering them
/// on a runtime thread.
#[derive(Clone, Debug)]
pub struct RtNetlink {
    pub(crate) home: Arc<Netns>,
    pub(crate) guard: Arc<NetnsGuard>,
    pub(crate) handle: Handle,
    pub(crate) recovery_wait: Duration,
    pub(crate) counter: Arc<Counter>,
    /// Whether the kernel honours `IFLA_NEW_IFINDEX` on a move (older ones ignore it silently).
    pub(crate) pins_ifindex: bool,
}

impl RtNetlink {
    /// Connects to the calling thread's network namespace, which becomes "home".
    pub fn new() -> Result<Self> {
        Self::in_netns(Netns::current()?)
    }

    /// Connects to `home`, which need not be the caller's namespace.
    pub fn in_netns(home: Netns) -> Result<Self> {
        let counter = Arc::default();
        let handle = socket::request_handle(&home, &counter)?;
        Ok(RtNetlink {
            counter,
            guard: Arc::new(NetnsGuard::for_home(&home)),
            home: Arc::new(home),
            handle,
            recovery_wait: Duration::from_secs(3),
            pins_ifindex: kernel_pins_ifindex(),
        })
    }

    /// Replaces the namespaces clients may not name (see [`NetnsGuard`]); by default the
    /// home namespace, the caller's and PID 1's.
    pub fn with_guard(mut self, guard: NetnsGuard) -> Self {
        self.guard = Arc::new(guard);
        self
    }

    /// The namespaces clients may not name.
    pub fn guard(&self) -> &NetnsGuard {
        &self.guard
    }

    /// How long [`RtNetlink::back_out`] waits for the kernel to return a link from a namespace
    /// that is being destroyed (namespace cleanup runs asynchronously in a kernel workqueue).
    /// Default 3 s.
    pub fn with_recovery_wait(mut self, wait: Duration) -> Self {
        self.recovery_wait = wait;
        self
    }

    /// The home namespace.
    pub fn home(&self) -> &Netns {
        &self.home
    }

    /// The raw rtnetlink handle to the home namespace, for requests this crate does not wrap
    /// (tests use it to create veth pairs).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// A raw rtnetlink handle whose socket lives in `netns`.
    pub fn connect(&self, netns: &Netns) -> Result<Handle> {
        socket::request_handle(netns, &self.counter)
    }

    /// The netlink requests sent so far by this connection and its clones, in every namespace
    /// (home and clients). A client namespace's socket is shared while its [`Netns`] lives and
    /// counts for the `RtNetlink` that opened it. Read it before and after an operation to see
    /// what the operation cost in kernel round trips.
    pub fn messages(&self) -> MessageCounts {
        self.counter.snapshot()
    }

    /// The shared request handle of `netns` (see [`Netns`]: one socket while it lives).
    pub(crate) fn client_handle(&self, netns: &Netns) -> Result<Handle> {
        socket::shared_request(netns, &self.counter)
    }

    /// The status of a link in the home namespace, `None` if it does not exist.
    pub async fn link(&self, link: &LinkRef) -> Result<Option<LinkStatus>> {
        get_link(&self.handle, link).await
    }

    /// All links in the home namespace.
    pub async fn links(&self) -> Result<Vec<LinkStatus>> {
        dump_links(&self.handle).await
    }

    pub(crate) fn home_label(&self) -> String {
        self.home.to_string()
    }

    pub(crate) fn home_fd(&self) -> i32 {
        self.home.as_raw_fd()
    }
}

/// Whether the running kernel keeps the ifindex `IFLA_NEW_IFINDEX` asks for on a namespace move
/// or refuses the move: `do_setlink` honours it from Linux 5.13 (the attribute is parsed, and
/// ignored on a move, by older kernels). Unknown releases are treated as older: a lookup after
/// each move costs one read, a wrong ifindex would configure a link of the client's own.
fn kernel_pins_ifindex() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (5, 13)
}

/// One link by name or index; `None` when the kernel answers ENODEV.
pub(crate) async fn get_link(handle: &Handle, link: &LinkRef) -> Result<Option<LinkStatus>> {
    let request = handle.link().get();
    let request = match link {
        LinkRef::Name(name) => request.match_name(name.clone()),
        LinkRef::Index(index) => request.match_index(*index),
    };
    match request.execute().try_next().await {
        Ok(Some(msg)) => Ok(Some(LinkStatus::from_message(&msg))),
        Ok(None) => Ok(None),
        Err(e) if netlink_errno(&e) == Some(ENODEV) => Ok(None),
        Err(source) => Err(Error::Netlink {
            op: "get link".into(),
            link: link.to_string(),
            source,
        }),
    }
}

/// Like [`get_link`], but a missing link is an error naming the namespace.
pub(crate) async fn require_link(
    handle: &Handle,
    link: &LinkRef,
    netns: &str,
) -> Result<LinkStatus> {
    get_link(handle, link)
        .await?
        .ok_or_else(|| Error::LinkNotFound {
            link: link.to_string(),
            netns: netns.to_owned(),
        })
}

pub(crate) async fn dump_links(handle: &Handle) -> Result<Vec<LinkStatus>> {
    // A dump that links changed under (a namespace going away moves its links home) ends
    // with NLM_F_DUMP_INTR, which reaches us as EBUSY: the list may be inconsistent, and a
    // new dump is the answer, as `ip` does.
    let mut attempt = 1;
    loop {
        let dumped = handle
            .link()
            .get()
            .execute()
            .map_ok(|msg| LinkStatus::from_message(&msg))
            .try_collect()
            .await
            .map_err(|source| Error::Netlink {
                op: "dump links".into(),
                link: "*".into(),
                source,
            });
        match dumped {
            Err(e) if e.errno() == Some(nix::libc::EBUSY) && attempt < DUMP_ATTEMPTS => {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// How many times a link dump interrupted by concurrent changes is started again.
const DUMP_ATTEMPTS: u32 = 5;

/// Sends an `ip link set`-style change (RTM_NEWLINK without NLM_F_CREATE).
pub(crate) async fn change_link(
    handle: &Handle,
    msg: LinkMessage,
    op: impl Into<String>,
    link: &str,
) -> Result<()> {
    handle
        .link()
        .change(msg)
        .execute()
        .await
        .map_err(|source| Error::Netlink {
            op: op.into(),
            link: link.to_owned(),
            source,
        })
}

pub(crate) async fn set_up(handle: &Handle, index: u32, up: bool, link: &str) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index);
    let (msg, op) = if up {
        (msg.up(), "set up")
    } else {
        (msg.down(), "set down")
    };
    change_link(handle, msg.build(), op, link).await
}
