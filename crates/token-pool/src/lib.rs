//! The forwarder's token pool: tokens kubelet hands to pods, and the VFs
//! connections use. (The standalone plugin's selector-defined pools are
//! `sriov-selector-pools`; the chain element that takes a VF from this pool
//! and binds it is `sriov-chain`'s `bindvf`.)
//!
//! # Model
//!
//! Each configured PF serves one or more names (`serviceDomain/capability`).
//! For every PF and name the pool keeps as many tokens (`sriov-<uuid>`) as
//! the PF has VFs; each name is a kubelet resource whose devices are the
//! tokens. A token moves through three states:
//!
//! - **free** — not held by any pod;
//! - **allocated** — kubelet's `Allocate` gave it to a pod, whose env
//!   carries it as `NSM_SRIOV_TOKENS_<name>=<id>,...`;
//! - **in use** — an NSM Request with that `tokenID` took a VF of the
//!   token's PF; Close returns it to allocated, and pod-resources showing
//!   no pod holding it returns it to free.
//!
//! A PF's VFs are shared among its names, so an allocated token of one name
//! leaves one fewer VF for every name. The device lists kubelet sees mark
//! free tokens beyond the remaining room unhealthy, and `Allocate` refuses
//! them: kubelet is never told more VFs are available than exist (the Go
//! original advertises every token and fails later, at Request time).
//! VF health ([`Pool::set_unhealthy_vfs`], fed by the forwarder from link
//! events and kernel uevents) narrows that room to healthy VFs: a token on
//! an unhealthy VF is unhealthy, a PF whose link is down advertises no free
//! token, and a Request is never given an unhealthy VF.
//!
//! Every change is durable in the state directory before it is
//! acknowledged: one line appended to a journal, synced with group commit
//! outside the pool's lock, folded into an atomically replaced snapshot at
//! start and every few thousand changes. On start the pool keeps
//! existing token IDs (pods hold them), reshapes the token set to the
//! configuration, and releases recorded uses whose VF is gone. Every other
//! recorded use stays until the forwarder has undone what it did to the
//! host (its undo record, kept with the use, says what), so a `kill -9` at
//! any point neither loses nor leaks a VF, nor hands it out still on
//! someone's side.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use sriov_pci_fake::{FakeSysfs, fixtures};
//! use sriov_token_pool::{DriverKind, FileStore, PfEntry, Pool, system_clock};
//!
//! let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
//! let sysfs = fake.sysfs();
//! let pf = sysfs.physical_function("0000:3b:00.0".parse().unwrap()).unwrap();
//! let state = tempfile::tempdir().unwrap();
//! let (pool, _warnings) = Pool::open(
//!     vec![PfEntry { pf, names: vec!["worker.domain/10G".into()], vf_kernel_driver: "iavf".into() }],
//!     FileStore::in_dir(state.path()).unwrap(),
//!     &sysfs,
//!     system_clock(),
//! ).unwrap();
//! let token = pool.tokens().unwrap()[0].id.clone();
//! pool.allocate("worker.domain/10G", &[token.clone()]).unwrap();      // kubelet
//! let lease = pool.use_token(&token, DriverKind::Kernel, "conn-1", u64::MAX).unwrap(); // Request
//! assert_eq!(lease.vf.to_string(), "0000:3b:02.0");
//! pool.unuse("conn-1").unwrap();                                     // Close
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

mod error;
#[doc(hidden)]
pub mod fuzzing;
mod journal;
pub mod metrics;
mod pool;
pub mod redact;
mod resource;
mod state;
mod store;

pub use error::PoolError;
pub use journal::JOURNAL_FILE;
pub use pool::layout::Reconfigured;
pub use pool::observe::{VfCounts, VfView};
pub use pool::{AllocateBinding, Clock, PfEntry, Pool, TOKEN_PREFIX, VfLease, system_clock};
pub use resource::{PoolResource, TOKENS_ENV_PREFIX, VfioAtAllocate, tokens_env};
pub use state::{AllocBinding, DriverKind, Token, TokenState, VfUse};
pub use store::{FileStore, LoadNote, STATE_FILE};
