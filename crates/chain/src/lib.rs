//! The forwarder's NetworkService chain: chain elements, each doing one
//! thing on Request and undoing it on Close and when a later element fails.
//!
//! # Model
//!
//! A [`Chain`] is an ordered list of [`Element`]s. Each element receives
//! the request, a per-connection [`Ctx`] (typed state that survives
//! refreshes and is dropped after Close), the records it reads from the
//! elements before it ([`Element::Needs`], checked once at composition by
//! [`Chain::check`], see [`contract`]), and [`Next`], the rest of the
//! chain. It does its one job, calls `next`, and when `next` fails undoes
//! exactly what it did in this call. Errors reach the client as the gRPC
//! codes [`status`] maps them to. The forwarder's composition (see
//! `bins/forwarder-sriov`) reads top to bottom like the Go forwarder's
//! `server.go`.
//!
//! ```
//! use sriov_chain::{Chain, Ctx};
//! use sriov_api::nsm::networkservice::NetworkServiceRequest;
//!
//! # tokio_test_block(async {
//! let chain = Chain::new(); // elements are appended with `.with(..)`
//! let conn = chain.request(&mut Ctx::new(), NetworkServiceRequest::default()).await.unwrap();
//! assert_eq!(conn.id, "");
//! # });
//! # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
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

pub mod caller;
mod chain;
mod context;
pub mod contract;
pub mod elements;
pub mod forwarder;
pub mod metrics;
pub mod params;
pub mod peers;
pub mod reclaim;
pub mod records;
pub mod returns;
pub mod server;
pub mod status;
pub mod undo;

pub use chain::{Chain, Element, Next};
pub use context::Ctx;
pub use peers::{EndpointFinder, EndpointQuery, NextHop};
