//! NSM's mechanism vocabulary the transport needs (from
//! networkservicemesh/api `pkg/api/networkservice/mechanisms/{cls,noop}`).

use sriov_api::nsm::connection::Mechanism;

pub use sriov_chain::params::{CLS_LOCAL, CLS_REMOTE, MECH_NOOP as NOOP, noop_preferences};

/// Whether `mechanism` is a NOOP mechanism (of either class).
pub fn is_noop(mechanism: &Mechanism) -> bool {
    mechanism.r#type == NOOP
}
