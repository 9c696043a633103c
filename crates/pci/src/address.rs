//! PCI addresses in the kernel's `DDDD:BB:DD.F` form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::AddressError;

/// A PCI function address: domain, bus, device (slot) and function.
///
/// Parses the long form `0000:01:00.0` and the short form `01:00.0` (domain
/// 0), case-insensitively, and always displays the long, lower-case form
/// that sysfs uses for directory names. Ordering is numeric (domain, bus,
/// device, function), which is also the order the kernel assigns VFs in.
///
/// ```
/// use sriov_pci::PciAddress;
/// let a: PciAddress = "01:10.2".parse().unwrap();
/// assert_eq!(a.to_string(), "0000:01:10.2");
/// assert!("0000:01:20.0".parse::<PciAddress>().is_err()); // device > 0x1f
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    domain: u32,
    bus: u8,
    device: u8,
    function: u8,
}

impl PciAddress {
    /// Builds an address from its parts; `None` when the device is above
    /// 0x1f or the function above 7.
    pub const fn new(domain: u32, bus: u8, device: u8, function: u8) -> Option<Self> {
        if device > 0x1f || function > 7 {
            return None;
        }
        Some(Self {
            domain,
            bus,
            device,
            function,
        })
    }

    /// The PCI domain (segment).
    pub const fn domain(&self) -> u32 {
        self.domain
    }

    /// The bus number.
    pub const fn bus(&self) -> u8 {
        self.bus
    }

    /// The device (slot) number, 0..=0x1f.
    pub const fn device(&self) -> u8 {
        self.device
    }

    /// The function number, 0..=7.
    pub const fn function(&self) -> u8 {
        self.function
    }

    /// The 16-bit routing ID (bus, device, function) the SR-IOV capability
    /// uses for VF offset and stride arithmetic.
    pub const fn routing_id(&self) -> u16 {
        ((self.bus as u16) << 8) | ((self.device as u16) << 3) | self.function as u16
    }

    /// The address with the same domain and the given routing ID.
    pub const fn with_routing_id(&self, rid: u16) -> Self {
        Self {
            domain: self.domain,
            bus: (rid >> 8) as u8,
            device: ((rid >> 3) & 0x1f) as u8,
            function: (rid & 7) as u8,
        }
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl fmt::Debug for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PciAddress({self})")
    }
}

fn hex_field(
    input: &str,
    part: &str,
    what: &'static str,
    max_len: usize,
) -> Result<u32, AddressError> {
    if part.is_empty() || part.len() > max_len || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AddressError::new(
            input,
            format!("{what} must be 1 to {max_len} hex digits, got {part:?}"),
        ));
    }
    u32::from_str_radix(part, 16)
        .map_err(|_| AddressError::new(input, format!("bad {what} {part:?}")))
}

impl FromStr for PciAddress {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (head, function) = input
            .rsplit_once('.')
            .ok_or_else(|| AddressError::new(input, "missing '.' before the function number"))?;
        let parts = head.split(':').collect::<Vec<_>>();
        let (domain, bus, device) = match parts.as_slice() {
            [d, bus, device] => (hex_field(input, d, "domain", 8)?, *bus, *device),
            [bus, device] => (0, *bus, *device),
            _ => {
                return Err(AddressError::new(input, "expected DDDD:BB:DD.F or BB:DD.F"));
            }
        };
        let bus = hex_field(input, bus, "bus", 2)? as u8;
        let device = hex_field(input, device, "device", 2)?;
        if device > 0x1f {
            return Err(AddressError::new(
                input,
                format!("device {device:#x} is above 0x1f"),
            ));
        }
        if function.len() != 1 {
            return Err(AddressError::new(input, "function must be one digit 0-7"));
        }
        let function = hex_field(input, function, "function", 1)?;
        if function > 7 {
            return Err(AddressError::new(
                input,
                format!("function {function} is above 7"),
            ));
        }
        Ok(Self {
            domain,
            bus,
            device: device as u8,
            function: function as u8,
        })
    }
}

impl Serialize for PciAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_short_forms_parse_to_the_same_address() {
        let long: PciAddress = "0000:3b:02.7".parse().unwrap();
        let short: PciAddress = "3b:02.7".parse().unwrap();
        assert_eq!(long, short);
        assert_eq!(long.to_string(), "0000:3b:02.7");
        assert_eq!((long.bus(), long.device(), long.function()), (0x3b, 2, 7));
    }

    #[test]
    fn upper_case_input_displays_canonically() {
        let a: PciAddress = "0000:AF:1F.3".parse().unwrap();
        assert_eq!(a.to_string(), "0000:af:1f.3");
    }

    #[test]
    fn wide_domains_are_accepted() {
        let a: PciAddress = "10000:e1:00.0".parse().unwrap();
        assert_eq!(a.domain(), 0x10000);
        assert_eq!(a.to_string(), "10000:e1:00.0");
    }

    #[test]
    fn malformed_addresses_are_rejected_with_the_input_named() {
        for bad in [
            "",
            "0000:01:00",
            "0000:01:00.8",
            "0000:01:20.0",
            "0000:01:0g.0",
            "0000:001:00.0",
            "0:0:0:0.0",
            "0000:01:00.00",
            "0000:01:00.",
            ":01:00.0",
            "0000:01:00.0 ",
            "../0000:01:00.0",
            "000000000:01:00.0",
        ] {
            let err = bad.parse::<PciAddress>().unwrap_err();
            assert!(
                err.to_string().contains(&format!("{bad:?}")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn ordering_is_numeric() {
        let mut v: Vec<PciAddress> = ["01:10.2", "01:01.0", "00:1f.0", "0001:00:00.0", "01:10.0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "0000:00:1f.0",
                "0000:01:01.0",
                "0000:01:10.0",
                "0000:01:10.2",
                "0001:00:00.0"
            ]
        );
    }

    #[test]
    fn routing_id_round_trips_with_vf_offset_and_stride() {
        // 82576: PF 01:00.0, VF offset 128, stride 2 -> VF1 at 01:10.2.
        let pf: PciAddress = "0000:01:00.0".parse().unwrap();
        let vf1 = pf.with_routing_id(pf.routing_id() + 128 + 2);
        assert_eq!(vf1.to_string(), "0000:01:10.2");
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let a: PciAddress = "01:00.1".parse().unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"0000:01:00.1\"");
        let back: PciAddress = serde_json::from_str("\"0000:01:00.1\"").unwrap();
        assert_eq!(back, a);
        assert!(serde_json::from_str::<PciAddress>("\"zz\"").is_err());
    }
}
