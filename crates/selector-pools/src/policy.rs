//! `allocationPolicy`, a resource's choice of how `GetPreferredAllocation`
//! picks its devices (see [`AllocationPolicy`]), read from the config.
//!
//! SRDP has no such field: its `GetPreferredAllocation` is a stub it never
//! advertises (its PR #443 proposed this key, with `packed`, and was not
//! merged). So absent, `null` or `""` keeps SRDP's behaviour, kubelet
//! choosing on its own, and a config written for SRDP means what it meant.

use sriov_deviceplugin::AllocationPolicy;

use crate::config::{invalid, join};
use crate::error::ConfigError;

/// The policy a resource's `allocationPolicy` value names. Values are
/// matched exactly, as `deviceType`'s are (only keys are case-insensitive);
/// a near miss is refused with the spelling that would be taken.
pub(crate) fn allocation_policy(
    value: Option<&str>,
    resource_path: &str,
) -> Result<Option<AllocationPolicy>, ConfigError> {
    let value = match value {
        None | Some("") => return Ok(None),
        Some(v) => v,
    };
    if let Some(policy) = AllocationPolicy::from_name(value) {
        return Ok(Some(policy));
    }
    let names: Vec<&str> = AllocationPolicy::ALL.iter().map(|p| p.as_str()).collect();
    let hint = AllocationPolicy::ALL
        .iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(value.trim()))
        .map(|p| format!("; did you mean {:?}? values are case-sensitive", p.as_str()))
        .unwrap_or_default();
    Err(invalid(
        join(resource_path, "allocationPolicy"),
        format!(
            "unsupported {value:?} ({}, or \"\" to let kubelet choose){hint}",
            names.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn absent_and_empty_mean_no_policy_and_names_are_exact() {
        assert_eq!(allocation_policy(None, "r").unwrap(), None);
        assert_eq!(allocation_policy(Some(""), "r").unwrap(), None);
        for p in AllocationPolicy::ALL {
            assert_eq!(allocation_policy(Some(p.as_str()), "r").unwrap(), Some(p));
        }
        let e = allocation_policy(Some("Spread"), "resourceList[2]").unwrap_err();
        assert_eq!(e.field(), Some("resourceList[2].allocationPolicy"));
        assert!(e.to_string().contains("did you mean \"spread\""), "{e}");
        let e = allocation_policy(Some("balanced"), "resourceList[0]").unwrap_err();
        assert!(e.to_string().contains("packed, spread, numa"), "{e}");
        assert!(!e.to_string().contains("did you mean"), "{e}");
    }
}
