//! NSM's mechanism vocabulary the transport needs (from
//! networkservicemesh/api `pkg/api/networkservice/mechanisms/{cls,noop}`).

use sriov_api::nsm::connection::Mechanism;

/// `Mechanism.cls` of a mechanism between a workload and its node.
pub const CLS_LOCAL: &str = "LOCAL";
/// `Mechanism.cls` of a mechanism between nodes.
pub const CLS_REMOTE: &str = "REMOTE";
/// `Mechanism.type` meaning "nothing to plumb": what a forwarder offers
/// the next hop, since the SR-IOV VF itself is the data path.
pub const NOOP: &str = "NOOP";

/// The preferences the forwarder's connect client sends onwards, in the Go
/// forwarder's order (sdk-sriov `mechanisms/noop` client): NOOP as LOCAL,
/// then NOOP as REMOTE.
pub fn noop_preferences() -> Vec<Mechanism> {
    [CLS_LOCAL, CLS_REMOTE]
        .into_iter()
        .map(|cls| Mechanism {
            cls: cls.to_string(),
            r#type: NOOP.to_string(),
            parameters: Default::default(),
        })
        .collect()
}

/// Whether `mechanism` is a NOOP mechanism (of either class).
pub fn is_noop(mechanism: &Mechanism) -> bool {
    mechanism.r#type == NOOP
}
