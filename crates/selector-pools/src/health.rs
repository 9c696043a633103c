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
