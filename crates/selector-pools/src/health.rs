//! Link health as the pools consume it: a small trait, so tests drive it without netlink and
//! the binary feeds it from `sriov-netlink`'s link table and change stream.

use std::collections::HashMap;
use std::sync::RwLock;

/// What is known about one interface in the plugin's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Up with carrier.
    Healthy,
    /// Administratively down, no carrier, or operationally down.
    Unhealthy,
    /// No link of that name exists.
    Absent,
    /// Nothing is known (no link table yet): treated as healthy, as SRDP treats everything.
    Unknown,
}

/// The pools' view of link health.
pub trait LinkHealth: Send + Sync {
    /// The state of interface `name`.
    fn state(&self, name: &str) -> LinkState;
}

/// Knows nothing: every device stays healthy (SRDP's behaviour).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLinkHealth;

impl LinkHealth for NoLinkHealth {
    fn state(&self, _name: &str) -> LinkState {
        LinkState::Unknown
    }
}

/// A table of interface name to health, filled from a full dump and kept current from change
/// events. Until the first [`replace_all`](Self::replace_all) every link is
/// [`LinkState::Unknown`].
#[derive(Debug, Default)]
pub struct LinkTable {
    links: RwLock<Option<HashMap<String, bool>>>,
}

impl LinkTable {
    /// An empty table that knows nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces everything with a full dump of `(name, healthy)`.
    pub fn replace_all(&self, links: impl IntoIterator<Item = (String, bool)>) {
        let map = links.into_iter().collect();
        if let Ok(mut guard) = self.links.write() {
            *guard = Some(map);
        }
    }

    /// Records one link's health; returns whether it changed.
    pub fn set(&self, name: &str, healthy: bool) -> bool {
        let Ok(mut guard) = self.links.write() else {
            return false;
        };
        let map = guard.get_or_insert_with(HashMap::new);
        map.insert(name.to_string(), healthy) != Some(healthy)
    }

    /// Records that a link is gone; returns whether it was known.
    pub fn remove(&self, name: &str) -> bool {
        let Ok(mut guard) = self.links.write() else {
            return false;
        };
        guard
            .get_or_insert_with(HashMap::new)
            .remove(name)
            .is_some()
    }
}

impl LinkHealth for LinkTable {
    fn state(&self, name: &str) -> LinkState {
        let Ok(guard) = self.links.read() else {
            return LinkState::Unknown;
        };
        match guard.as_ref() {
            None => LinkState::Unknown,
            Some(map) => match map.get(name) {
                Some(true) => LinkState::Healthy,
                Some(false) => LinkState::Unhealthy,
                None => LinkState::Absent,
            },
        }
    }
}

/// Link health with carrier ignored, for users whose VFs must stay offered while the PF's
/// cable is out (VF-to-VF traffic on the NIC's switch still works): a link that exists counts
/// as healthy whatever its carrier or state; a link that is gone still does not.
#[derive(Debug)]
pub struct IgnoreCarrier<L>(pub L);

impl<L: LinkHealth> LinkHealth for IgnoreCarrier<L> {
    fn state(&self, name: &str) -> LinkState {
        match self.0.state(name) {
            LinkState::Unhealthy => LinkState::Healthy,
            other => other,
        }
    }
}

impl<L: LinkHealth + ?Sized> LinkHealth for &L {
    fn state(&self, name: &str) -> LinkState {
        (**self).state(name)
    }
}

impl<L: LinkHealth + ?Sized> LinkHealth for std::sync::Arc<L> {
    fn state(&self, name: &str) -> LinkState {
        (**self).state(name)
    }
}

/// Why a device is unhealthy, as the `cause` label of `sriov.link.health.changes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthCause {
    /// Its uplink (the PF's netdev, or a PF's own) is down or has no carrier.
    LinkDown,
    /// Its uplink netdev is gone.
    LinkGone,
    /// Its own netdev vanished while no pod held it.
    NetdevGone,
    /// No driver is bound to it any more.
    DriverUnbound,
    /// The PCI function is gone (a VF after `sriov_numvfs` was lowered, a hot-unplug).
    DeviceGone,
}

impl HealthCause {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthCause::LinkDown => "link_down",
            HealthCause::LinkGone => "link_gone",
            HealthCause::NetdevGone => "netdev_gone",
            HealthCause::DriverUnbound => "driver_unbound",
            HealthCause::DeviceGone => "device_gone",
        }
    }
}

/// A device's ill health: the cause, and the sentence kubelet's users read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unhealthy {
    pub(crate) cause: HealthCause,
    pub(crate) why: String,
}

impl Unhealthy {
    pub(crate) fn new(cause: HealthCause, why: impl Into<String>) -> Self {
        Self {
            cause,
            why: why.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignoring_carrier_keeps_down_links_healthy_but_not_gone_ones() {
        let table = LinkTable::new();
        table.replace_all([("up".to_string(), true), ("down".to_string(), false)]);
        let ignoring = IgnoreCarrier(&table);
        assert_eq!(ignoring.state("up"), LinkState::Healthy);
        assert_eq!(ignoring.state("down"), LinkState::Healthy);
        assert_eq!(ignoring.state("gone"), LinkState::Absent);
        assert_eq!(table.state("down"), LinkState::Unhealthy);
        assert_eq!(IgnoreCarrier(NoLinkHealth).state("x"), LinkState::Unknown);
    }
}
