//! The SR-IOV forwarder's chain, composed in one place and read top to
//! bottom like the Go forwarder's `server.go`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sriov_netlink::NetlinkOps;
use sriov_pci::Sysfs;
use sriov_token_pool::{DriverKind, Pool};
use sriov_vfio::{CgroupDevices, VfioDir};

use crate::contract::ContractError;
use crate::elements::{
    authorize::{Authorization, Authorize},
    begin::Begin,
    bindvf::BindVf,
    connect::Connect,
    discover::Discover,
    inject::Inject,
    ipcontext::IpContext,
    limits::Limits,
    mechanisms::Mechanisms,
    monitor::Monitor,
    resetmechanism::ResetMechanism,
    roundrobin::RoundRobin,
    timeout::Timeout,
    updatepath::{KnownConnections, UpdatePath},
    updatetoken::{TokenSigner, UpdateToken},
    validate::Validate,
    vfconfig::VfConfigElement,
    vfio::Vfio,
};
use crate::params::{MECH_KERNEL, MECH_NOOP, MECH_VFIO};
use crate::reclaim::Reclaim;
use crate::returns::Returns;
use crate::{Chain, EndpointFinder, NextHop};

/// Everything the chain's elements use.
pub struct Deps {
    /// `NSM_NAME`: the forwarder's path segment name.
    pub name: String,
    /// `NSM_MAX_TOKEN_LIFETIME`.
    pub max_token_lifetime: Duration,
    /// Signs our path segment's tokens (the SVID); `None` with
    /// `NSM_INSECURE=true`.
    pub signer: Option<Arc<dyn TokenSigner>>,
    /// NSM's server policies and the connection owners (secure mode);
    /// `None`: the owner rule only.
    pub authorization: Option<Authorization>,
    /// The VF pool.
    pub pool: Arc<Pool>,
    /// Sysfs (driver binding, IOMMU groups).
    pub sysfs: Sysfs,
    /// Netlink (namespaces, VF settings).
    pub netlink: Arc<dyn NetlinkOps>,
    /// `/dev/vfio` (`NSM_VFIO_PATH`).
    pub vfio_dir: VfioDir,
    /// Cgroup device access (`NSM_CGROUP_PATH`); `None` when the root could
    /// not be opened, so VFIO requests fail with the reason instead of the
    /// whole forwarder refusing to start for KERNEL users.
    pub cgroups: Result<Arc<CgroupDevices>, String>,
    /// The registry, for `discover`.
    pub finder: Arc<dyn EndpointFinder>,
    /// The next hop, for `connect`.
    pub next_hop: Arc<dyn NextHop>,
    /// `NSM_NEXT_HOP_TIMEOUT`: the longest one call to the next hop may take.
    pub next_hop_timeout: Duration,
    /// Connection events, shared with the MonitorConnection server.
    pub monitor: Monitor,
    /// Whether an `inode://` namespace not sent by fd may be found by
    /// scanning `/proc` (hostPID): development only (`NSM_INSECURE`).
    pub netns_proc_scan: bool,
    /// The undo Closes leave for after their answer ([`crate::returns`]);
    /// the daemon waits on it at shutdown.
    pub returns: Returns,
}

/// The connection ids a client may send back: those `begin` serves, and
/// those the pool still records a VF for (connections made before a
/// restart, which a refresh adopts).
struct Known {
    begin: Arc<Begin>,
    pool: Arc<Pool>,
}

impl KnownConnections for Known {
    fn is_known(&self, id: &str) -> bool {
        self.begin.is_known(id) || (!id.is_empty() && self.pool.holds(id))
    }
}

/// Builds the forwarder chain:
///
/// ```text
/// limits → updatepath → begin → updatetoken → authorize → timeout → monitor → discover → roundrobin → resetmechanism
///   → mechanisms { KERNEL: validate → bindvf(kernel driver) → vfconfig → inject → ipcontext
///                  VFIO:   validate → bindvf(vfio-pci) → vfconfig → vfio
///                  NOOP:   (nothing) }
///   → connect (next hop, NOOP)
/// ```
///
/// Elements that need the endpoint's answer (`vfconfig`, `inject`,
/// `ipcontext`) act on the way back, after `connect` returned, so the
/// return order is ipcontext (plans the IPs), inject (moves and
/// configures in one step), vfconfig (MAC/VLAN through the PF).
///
/// Fails, before anything is served, when an element comes before one
/// whose records it reads ([`Chain::check`]).
pub fn chain(d: Deps) -> Result<Arc<Chain>, ContractError> {
    let handle: Arc<OnceLock<std::sync::Weak<Chain>>> = Arc::new(OnceLock::new());
    let pool_for = |kind| {
        Arc::new(BindVf::new(
            d.pool.clone(),
            d.sysfs.clone(),
            kind,
            d.max_token_lifetime,
        ))
    };
    let kernel = Chain::new()
        .with(Validate::Kernel)
        .with(pool_for(DriverKind::Kernel))
        .with(VfConfigElement::new(d.netlink.clone()))
        .with(Inject::new(d.netlink.clone()).with_proc_scan(d.netns_proc_scan))
        .with(IpContext);
    let vfio = Chain::new()
        .with(Validate::Vfio)
        .with(pool_for(DriverKind::Vfio))
        .with(VfConfigElement::new(d.netlink.clone()))
        .with(Vfio::new(
            d.sysfs.clone(),
            d.vfio_dir.clone(),
            d.cgroups.clone(),
        ));
    let mut reclaim = Reclaim::new(d.pool.clone(), d.sysfs.clone(), d.netlink.clone())
        .with_returns(d.returns.clone());
    if let Ok(c) = &d.cgroups {
        reclaim = reclaim.with_cgroups(c.clone());
    }
    let begin = Arc::new(
        Begin::new()
            .with_orphans(Arc::new(reclaim))
            .with_returns(d.returns.clone()),
    );
    let chain = Arc::new(
        Chain::new()
            .with(Limits)
            .with(UpdatePath::new(
                d.name.clone(),
                d.max_token_lifetime,
                Arc::new(Known {
                    begin: begin.clone(),
                    pool: d.pool.clone(),
                }),
            ))
            .with_arc(begin)
            .with(UpdateToken::new(d.signer.clone()))
            .with(match d.authorization.clone() {
                Some(a) => Authorize::with_policies(a),
                None => Authorize::owner_only(),
            })
            .with(Timeout::new(d.max_token_lifetime, handle.clone()))
            .with(d.monitor.clone())
            .with(Discover::new(d.finder.clone()))
            .with(RoundRobin::new())
            .with(ResetMechanism)
            .with(
                Mechanisms::new()
                    .with(MECH_KERNEL, kernel)
                    .with(MECH_VFIO, vfio)
                    .with(MECH_NOOP, Chain::new()),
            )
            .with(Connect::new(d.next_hop.clone()).with_timeout(d.next_hop_timeout)),
    );
    chain.check()?;
    let _ = handle.set(Arc::downgrade(&chain));
    Ok(chain)
}
