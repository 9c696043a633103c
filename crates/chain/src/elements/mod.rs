//! One element per file. Each file's doc says what the element adds to the
//! connection and what it undoes.

pub mod authorize;
pub mod begin;
pub mod bindvf;
pub mod connect;
pub mod discover;
pub mod inject;
pub mod ipcontext;
pub mod limits;
pub mod mechanisms;
pub mod monitor;
pub mod resetmechanism;
pub mod roundrobin;
pub mod timeout;
pub mod updatepath;
pub mod updatetoken;
pub mod validate;
pub mod vfconfig;
pub mod vfio;
