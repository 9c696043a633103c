//! [`UndoRecord`]: what a connection changed on the host, persisted with its
//! pool lease before the forwarder answers, so that a restarted forwarder can
//! adopt the connection on a refresh or undo it on a Close or expiry
//! ([`crate::reclaim`]).

use serde::{Deserialize, Serialize};
use sriov_netlink::{MovedLink, VfRecord};
use sriov_pool::VfLease;
use sriov_vfio::Grant;

/// See the module docs. Each element fills its own part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoRecord {
    /// `inject`: the VF netdev moved into the client's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<MovedLink>,
    /// `vfconfig`: the VF's MAC/VLAN before we set them through the PF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vf: Option<VfRecord>,
    /// `vfio`: the device rules allowed to the client's cgroups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
}

impl UndoRecord {
    /// The record kept with `lease`, if any. A record of the first format
    /// (a bare [`MovedLink`]) is read as one with only `moved`.
    pub fn of(lease: &VfLease) -> Option<Self> {
        let value = lease.undo.clone()?;
        if let Ok(moved) = serde_json::from_value::<MovedLink>(value.clone()) {
            return Some(Self {
                moved: Some(moved),
                ..Self::default()
            });
        }
        serde_json::from_value(value).ok()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.moved.is_none() && self.vf.is_none() && self.grant.is_none()
    }
}
