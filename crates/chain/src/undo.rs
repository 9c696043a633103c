//! [`UndoRecord`]: what a connection changes on the host, persisted with its
//! pool lease *before* each change is made, so that a process killed at any
//! instant leaves a record a restarted forwarder can act on: it adopts an
//! established connection on a refresh, undoes it on a Close or expiry, and
//! rolls back at start one whose Request never finished ([`crate::reclaim`]).
//!
//! Every part is written before its host change and undoes idempotently
//! whether or not the change then happened: the VF's settings are read and
//! recorded before they are set (restoring unchanged values is a no-op), the
//! device rules are planned and recorded before they are written (denying a
//! rule never allowed takes nothing away), and the netdev move is recorded as
//! intended (`moving`) before it is made and as done (`moved`) after (backing
//! out finds the link wherever it is: in the client, or still at home).

use serde::{Deserialize, Serialize};
use sriov_netlink::{MovedLink, VfRecord};
use sriov_token_pool::VfLease;
use sriov_vfio::Grant;

use crate::records::ClientId;

/// See the module docs. Each element fills its own part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoRecord {
    /// `bindvf`: every host change of the Request was made and
    /// recorded. A use recorded without it at start belongs to a Request
    /// that never answered, and is rolled back. (Absent in records of
    /// earlier builds, which wrote records only once a change was made.)
    #[serde(default = "established_by_default")]
    pub established: bool,
    /// `inject`: the move of the VF netdev into the client's namespace, as
    /// intended, before it is made; cleared once `moved` records it done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<MovedLink>,
    /// `inject`: the VF netdev moved into the client's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<MovedLink>,
    /// `vfconfig`: the VF's MAC/VLAN before we set them through the PF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vf: Option<VfRecord>,
    /// `vfio`: the device rules allowed to the client's cgroups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// `begin`: the client that made the connection, so its retry is
    /// recognised when the answer was lost (not a host change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientId>,
}

fn established_by_default() -> bool {
    true
}

impl UndoRecord {
    /// The record kept with `lease`, if any. A record of the first format
    /// (a bare [`MovedLink`]) is read as one with only `moved`.
    pub fn of(lease: &VfLease) -> Option<Self> {
        let value = lease.undo.as_deref()?;
        if let Ok(moved) = MovedLink::deserialize(value) {
            return Some(Self {
                established: true,
                moved: Some(moved),
                ..Self::default()
            });
        }
        Self::deserialize(value).ok()
    }

    /// Whether the lease belongs to a Request that never finished: no
    /// record at all (killed between taking the token and the first
    /// record), or one not marked established.
    pub fn unfinished(lease: &VfLease) -> bool {
        Self::of(lease).is_none_or(|r| !r.established)
    }

    /// The move to back out: the one done, else the one intended.
    pub fn move_to_undo(&self) -> Option<&MovedLink> {
        self.moved.as_ref().or(self.moving.as_ref())
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.moving.is_none() && self.moved.is_none() && self.vf.is_none() && self.grant.is_none()
    }
}
