//! Kernel uevents: what makes device health event-driven where netlink link events say
//! nothing (a driver unbound from a VF, a VF removed when `sriov_numvfs` is lowered, a
//! device appearing late).
//!
//! A separate crate rather than part of `sriov-netlink`: it is a different netlink family
//! with a text protocol, needs nothing of rtnetlink, and its parser is fuzzed on its own.
//!
//! [`Uevent::parse`] reads one datagram (`ACTION@DEVPATH\0KEY=VALUE\0...`);
//! [`UeventSocket`] is a `NETLINK_KOBJECT_UEVENT` socket (rustix, no `unsafe`) yielding
//! [`Notice`]s, [`Notice::Lost`] when the kernel dropped events, after which callers rescan
//! everything. Consumers take any [`UeventSource`] (a stream of notices), so tests feed them
//! from a channel where a fake sysfs tree emits nothing.
//!
//! ```no_run
//! # async fn run() -> Result<(), sriov_uevent::UeventError> {
//! use sriov_uevent::{Action, Notice, UeventSocket};
//!
//! let mut socket = UeventSocket::open()?;
//! loop {
//!     match socket.recv().await? {
//!         Notice::Event(ev) if ev.is_pci() && ev.action == Action::Unbind => {
//!             println!("{} left driver {:?}", ev.name(), ev.driver);
//!         }
//!         Notice::Event(_) => {}
//!         Notice::Lost => println!("events were dropped: rescan"),
//!     }
//! }
//! # }
//! ```

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod error;
mod parse;
mod socket;

pub use error::UeventError;
pub use parse::{Action, MAX_UEVENT_LEN, ParseError, Uevent};
pub use socket::{Notice, UeventSocket};

/// Where uevents come from: the kernel's socket, or in tests any stream of notices (a
/// channel's receiver), since a fake sysfs tree emits none.
pub trait UeventSource: futures::Stream<Item = Notice> + Send + Unpin {}

impl<T: futures::Stream<Item = Notice> + Send + Unpin> UeventSource for T {}
