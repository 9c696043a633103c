//! KEP-4680's device health for DRA: what `NodeWatchResources` streams.
//!
//! The health comes from the same source as device-plugin mode's
//! ListAndWatch: the selector pools' members (link state, driver, presence),
//! carried in the [`Inventory`]. Every message lists every device, so a
//! kubelet that missed one loses nothing; a device that left the inventory
//! is reported once as UNKNOWN, since kubelet keeps the last state it heard.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use sriov_api::kubelet::dra::health_v1alpha1::{
    DeviceHealth, DeviceIdentifier, HealthStatus, NodeWatchResourcesResponse,
};

use crate::devices::Inventory;

/// How long kubelet may trust one report; the stream repeats itself well
/// within it ([`RESEND_EVERY`]) so a quiet node never goes stale.
pub const HEALTH_TIMEOUT_SECONDS: i64 = 60;
/// How often the full list is sent again without a change.
pub const RESEND_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

/// The message for `inventory` in `pool`, with UNKNOWN for the devices of
/// `gone` (names reported before that are no longer there).
pub fn report(
    inventory: &Inventory,
    pool: &str,
    gone: &BTreeSet<String>,
) -> NodeWatchResourcesResponse {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let entry = |name: &str, health: HealthStatus, message: String| DeviceHealth {
        device: Some(DeviceIdentifier {
            pool_name: pool.to_string(),
            device_name: name.to_string(),
        }),
        health: health.into(),
        last_updated_time: now,
        health_check_timeout_seconds: HEALTH_TIMEOUT_SECONDS,
        message,
    };
    let mut devices: Vec<DeviceHealth> = inventory
        .iter()
        .map(|d| match &d.unhealthy {
            None => entry(&d.name, HealthStatus::Healthy, String::new()),
            Some(why) => entry(&d.name, HealthStatus::Unhealthy, why.clone()),
        })
        .collect();
    devices.extend(gone.iter().map(|name| {
        entry(
            name,
            HealthStatus::Unknown,
            "the device left the node's pools".to_string(),
        )
    }));
    NodeWatchResourcesResponse { devices }
}

/// Names in `before` that `now` no longer has.
pub fn departed(before: &Inventory, now: &Inventory) -> BTreeSet<String> {
    before
        .iter()
        .filter(|d| now.get(&d.name).is_none())
        .map(|d| d.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::test_device as dev;

    #[test]
    fn every_device_is_reported_with_its_health_and_departed_ones_as_unknown() {
        let before = Inventory::from_devices([
            dev("0000:3b:02.0", None),
            dev("0000:3b:02.1", None),
            dev("0000:3b:02.2", None),
        ]);
        let now = Inventory::from_devices([
            dev("0000:3b:02.0", None),
            dev("0000:3b:02.1", Some("PF link ens1f0 is down")),
        ]);
        let gone = departed(&before, &now);
        let r = report(&now, "node-a", &gone);
        let got: Vec<(String, i32, String)> = r
            .devices
            .iter()
            .map(|d| {
                let id = d.device.clone().unwrap();
                assert_eq!(id.pool_name, "node-a");
                assert_eq!(d.health_check_timeout_seconds, HEALTH_TIMEOUT_SECONDS);
                (id.device_name, d.health, d.message.clone())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "0000-3b-02-0".into(),
                    HealthStatus::Healthy as i32,
                    String::new()
                ),
                (
                    "0000-3b-02-1".into(),
                    HealthStatus::Unhealthy as i32,
                    "PF link ens1f0 is down".into()
                ),
                (
                    "0000-3b-02-2".into(),
                    HealthStatus::Unknown as i32,
                    "the device left the node's pools".into()
                ),
            ]
        );
    }
}
