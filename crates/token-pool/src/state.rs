//! The persisted state: tokens and the VFs they use.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sriov_pci::PciAddress;

/// Version of the state file's format.
pub(crate) const STATE_VERSION: u32 = 1;

/// Which kind of driver a VF is used with. Two kinds never share an IOMMU
/// group: a group is either all kernel-driver or all vfio-pci.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// The VF's kernel network driver (KERNEL mechanism).
    Kernel,
    /// vfio-pci (VFIO mechanism).
    Vfio,
}

/// Where a token is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum TokenState {
    /// Not handed to any pod.
    Free,
    /// Kubelet allocated it to a pod (its ID is in the pod's env).
    Allocated,
    /// A connection uses a VF with it. Boxed: most tokens are free, and an
    /// inline use would size every token of the map for it (issue #21's
    /// idle RSS; 4096 tokens took 1.4 MiB of B-tree nodes).
    InUse(Box<VfUse>),
}

/// A VF in use by a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfUse {
    /// The VF.
    pub vf: PciAddress,
    /// The driver kind it is used with.
    pub kind: DriverKind,
    /// The NSM connection ID.
    pub connection: String,
    /// Unix time (seconds) after which the use is stale unless refreshed.
    pub expires_at: u64,
    /// What the forwarder needs to undo its host changes for this use (for
    /// example the record of a netdev moved into a client's namespace),
    /// kept with the lease so a restarted forwarder can adopt the
    /// connection instead of redoing or leaking it. Opaque to the pool;
    /// shared (`Arc`), since the pool copies its state on every change and
    /// records are the largest part of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<std::sync::Arc<serde_json::Value>>,
    /// Its PF's `vfKernelDriver` when the use began: where the VF goes
    /// home even after its PF left the config and the forwarder restarted.
    /// (Absent in records of earlier versions: the configured one then.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_driver: Option<String>,
}

/// A VF fixed to a token at kubelet's Allocate and bound to vfio-pci then, so that the container
/// runtime could give the pod its `/dev/vfio` nodes when it created the container (cgroup v2,
/// where nothing written later changes a container's devices). Recorded before the VF is bound;
/// cleared only once the VF is back on `previous_driver`, so a crash at any point leaves a record
/// of what to undo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocBinding {
    /// The VF the token's NSM Request will get, and no other.
    pub vf: PciAddress,
    /// The driver it goes back to when the pod releases the token.
    pub previous_driver: Option<String>,
}

/// One token as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// `sriov-<uuid>`.
    pub id: String,
    /// `serviceDomain/capability`.
    pub name: String,
    /// The PF whose VFs this token may use.
    pub pf: PciAddress,
    /// Its state.
    #[serde(flatten)]
    pub state: TokenState,
    /// The VF bound to it at Allocate, when VFIO access is given at Allocate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<Box<AllocBinding>>,
}

impl Token {
    /// Whether the token holds capacity on its PF (allocated or in use).
    pub fn reserves(&self) -> bool {
        !matches!(self.state, TokenState::Free)
    }
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) version: u32,
    /// The kernel's boot ID when this snapshot was written (absent in
    /// snapshots of earlier builds): the journal beside it was written in
    /// that boot too, since every start writes a fresh snapshot and empties
    /// the journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) boot: Option<String>,
    /// Tokens by ID.
    pub(crate) tokens: BTreeMap<String, Token>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            boot: None,
            tokens: BTreeMap::new(),
        }
    }
}

impl State {
    /// Rebuilds the token map with full B-tree nodes. A map grown one insert
    /// at a time (a parse, or the tokens start-up adds) leaves its nodes
    /// partly empty, and every change clones the map node for node (issue
    /// #21's idle RSS: with the boxing above, 4096 tokens' nodes went from
    /// 1.42 MiB to 427 KiB). `collect` on sorted entries builds full nodes.
    pub(crate) fn compact(&mut self) {
        self.tokens = std::mem::take(&mut self.tokens).into_iter().collect();
    }

    /// A reboot undid every host change a use records (the client
    /// namespaces, the VFs' settings, their drivers and the device rules are
    /// gone with the boot), and the connections are gone with their pods:
    /// the uses are dropped, their tokens stay allocated (kubelet's
    /// checkpoint still gives them to pods). Acting on those records would
    /// be wrong, not just useless: a namespace inode or an ifindex they name
    /// may now belong to another tenant. Returns how many were dropped.
    pub(crate) fn forget_uses(&mut self) -> usize {
        let mut dropped = 0;
        for t in self.tokens.values_mut() {
            if matches!(t.state, TokenState::InUse(_)) {
                t.state = TokenState::Allocated;
                dropped += 1;
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(i: u32) -> Token {
        let pf: PciAddress = "0000:01:00.0".parse().unwrap_or_else(|_| unreachable!());
        Token {
            id: format!("sriov-{i:08}"),
            name: "worker.domain/10G".into(),
            pf,
            state: if i.is_multiple_of(3) {
                TokenState::InUse(Box::new(VfUse {
                    vf: pf,
                    kind: DriverKind::Kernel,
                    connection: format!("conn-{i}"),
                    expires_at: u64::from(i),
                    undo: None,
                    kernel_driver: Some("igbvf".into()),
                }))
            } else {
                TokenState::Free
            },
            bound: i.is_multiple_of(5).then(|| {
                Box::new(AllocBinding {
                    vf: pf,
                    previous_driver: None,
                })
            }),
        }
    }

    #[test]
    fn compacting_keeps_every_token_and_the_order() {
        let mut state = State::default();
        // Out of order, as random token IDs arrive.
        for i in (0..500).map(|i| (i * 7919) % 500) {
            let t = token(i);
            state.tokens.insert(t.id.clone(), t);
        }
        let before = state.clone();
        state.compact();
        assert_eq!(state, before);
        assert!(state.tokens.keys().is_sorted());
    }

    #[test]
    fn a_boxed_use_reads_and_writes_as_the_flat_record_it_was() {
        let t = token(3);
        let json = serde_json::to_value(&t).unwrap_or_default();
        assert_eq!(json["state"], "inuse");
        assert_eq!(json["connection"], "conn-3");
        assert_eq!(json["kind"], "kernel");
        let back: Token = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, t);
    }
}
