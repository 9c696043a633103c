//! Small validated values: interface names, MAC addresses, IP networks, routes, neighbours.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A link as the caller knows it: by name or by ifindex, in the namespace it is looked up in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkRef {
    /// By interface name.
    Name(String),
    /// By interface index.
    Index(u32),
}

impl fmt::Display for LinkRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkRef::Name(name) => f.write_str(name),
            LinkRef::Index(index) => write!(f, "#{index}"),
        }
    }
}

impl From<&str> for LinkRef {
    fn from(name: &str) -> Self {
        LinkRef::Name(name.to_owned())
    }
}

impl From<u32> for LinkRef {
    fn from(index: u32) -> Self {
        LinkRef::Index(index)
    }
}

/// An interface name the kernel will accept: 1 to 15 bytes (IFNAMSIZ - 1), no `/`, `:`, NUL or
/// whitespace, and not `.` or `..` (the kernel's `dev_valid_name` rules, plus `:` which the
/// kernel allows but which iproute2 and sysfs consumers read as an alias separator).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl IfName {
    /// Longest name the kernel stores (`IFNAMSIZ` is 16 including the NUL).
    pub const MAX_LEN: usize = 15;

    /// Validates a name.
    pub fn new(name: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidInterfaceName {
            name: name.chars().take(64).collect(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("empty"));
        }
        if name.len() > Self::MAX_LEN {
            return Err(invalid("longer than 15 bytes"));
        }
        if name == "." || name == ".." {
            return Err(invalid("'.' and '..' are reserved"));
        }
        if name.contains(['/', ':', '\0']) {
            return Err(invalid("contains '/', ':' or NUL"));
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("contains whitespace or control characters"));
        }
        Ok(IfName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        IfName::new(&s)
    }
}

impl From<IfName> for String {
    fn from(name: IfName) -> String {
        name.0
    }
}

impl FromStr for IfName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        IfName::new(s)
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Ethernet MAC address.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The bytes.
    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// The address from a link attribute, if it is 6 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }

    /// All zeroes (what the kernel reports for "no address set").
    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }
}

impl TryFrom<String> for MacAddr {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(mac: MacAddr) -> String {
        mac.to_string()
    }
}

impl FromStr for MacAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidValue {
            what: "MAC address",
            value: s.chars().take(64).collect(),
            reason,
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| invalid("expected 6 octets"))?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid("each octet must be two hex digits"));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| invalid("bad hex"))?;
        }
        if parts.next().is_some() {
            return Err(invalid("expected 6 octets"));
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// An IP address with a prefix length, e.g. `10.0.0.1/24` (an interface address or a route
/// destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Checks the prefix length against the address family.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(Error::InvalidValue {
                what: "prefix length",
                value: format!("{addr}/{prefix}"),
                reason: "longer than the address",
            });
        }
        Ok(IpNetwork { addr, prefix })
    }

    /// The address.
    pub fn addr(self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(self) -> u8 {
        self.prefix
    }
}

impl FromStr for IpNetwork {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidValue {
            what: "IP network",
            value: s.chars().take(64).collect(),
            reason,
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| invalid("expected addr/prefix"))?;
        let addr: IpAddr = addr.parse().map_err(|_| invalid("bad address"))?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("bad prefix length"));
        }
        let prefix: u8 = prefix.parse().map_err(|_| invalid("bad prefix length"))?;
        IpNetwork::new(addr, prefix)
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A route through the moved link: to `destination`, optionally via `gateway`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// Destination prefix.
    pub destination: IpNetwork,
    /// Next hop; `None` for a directly connected (link-scope) route.
    pub gateway: Option<IpAddr>,
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gateway {
            Some(gw) => write!(f, "{} via {gw}", self.destination),
            None => write!(f, "{}", self.destination),
        }
    }
}

/// A permanent neighbour (ARP/NDP) entry on the moved link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NeighbourSpec {
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// Its MAC address.
    pub mac: MacAddr,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_up_to_fifteen_bytes_are_accepted() {
        for name in ["eth0", "nsm-0123456789a", "a", "vf_3.100", "ünï"] {
            assert_eq!(IfName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn names_the_kernel_would_refuse_are_rejected() {
        for name in [
            "",
            "nsm-0123456789ab",
            "ééééééééé",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\nb",
            "a\0b",
        ] {
            let err = IfName::new(name).unwrap_err();
            assert!(
                matches!(err, Error::InvalidInterfaceName { .. }),
                "{name:?}: {err}"
            );
        }
    }

    #[test]
    fn mac_addresses_parse_and_print_lowercase() {
        let mac: MacAddr = "02:AB:cd:00:11:ff".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0xab, 0xcd, 0x00, 0x11, 0xff]);
        assert_eq!(mac.to_string(), "02:ab:cd:00:11:ff");
    }

    #[test]
    fn malformed_mac_addresses_are_rejected() {
        for s in [
            "",
            "02:ab:cd:00:11",
            "02:ab:cd:00:11:ff:00",
            "2:ab:cd:00:11:ff",
            "zz:ab:cd:00:11:ff",
            "+2:ab:cd:00:11:ff",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s}");
        }
    }

    #[test]
    fn networks_check_prefix_against_family() {
        assert_eq!("10.0.0.1/24".parse::<IpNetwork>().unwrap().prefix(), 24);
        assert_eq!("fd00::1/128".parse::<IpNetwork>().unwrap().prefix(), 128);
        for s in [
            "10.0.0.1/33",
            "fd00::1/129",
            "10.0.0.1",
            "10.0.0.1/",
            "10.0.0.1/+4",
            "x/4",
        ] {
            assert!(s.parse::<IpNetwork>().is_err(), "{s}");
        }
    }
}
