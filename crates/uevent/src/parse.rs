//! The kernel's uevent datagram: `ACTION@DEVPATH`, then `KEY=VALUE` pairs, each ended by a NUL.

use std::collections::BTreeMap;
use std::fmt;

/// Longest datagram the kernel sends (`UEVENT_BUFFER_SIZE` in `include/linux/kobject.h`).
pub const MAX_UEVENT_LEN: usize = 2048;

/// What happened to the device (`ACTION`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// The device appeared.
    Add,
    /// The device went away.
    Remove,
    /// Something about the device changed.
    Change,
    /// The device was renamed or re-parented.
    Move,
    /// The device came online (CPUs, memory).
    Online,
    /// The device went offline.
    Offline,
    /// A driver took the device.
    Bind,
    /// The device's driver let go of it.
    Unbind,
    /// An action this parser does not know; kept so callers can still log it.
    Other(String),
}

impl Action {
    fn from_kernel(s: &str) -> Self {
        match s {
            "add" => Action::Add,
            "remove" => Action::Remove,
            "change" => Action::Change,
            "move" => Action::Move,
            "online" => Action::Online,
            "offline" => Action::Offline,
            "bind" => Action::Bind,
            "unbind" => Action::Unbind,
            other => Action::Other(other.to_string()),
        }
    }

    /// The kernel's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Action::Add => "add",
            Action::Remove => "remove",
            Action::Change => "change",
            Action::Move => "move",
            Action::Online => "online",
            Action::Offline => "offline",
            Action::Bind => "bind",
            Action::Unbind => "unbind",
            Action::Other(s) => s,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// `ACTION`.
    pub action: Action,
    /// `DEVPATH`, under `/sys` (`/devices/pci0000:00/0000:00:02.0/0000:01:10.0`).
    pub devpath: String,
    /// `SUBSYSTEM` (`pci`, `net`, ...), when the kernel sent one.
    pub subsystem: Option<String>,
    /// `DRIVER`: the driver bound (on `bind` and `add`) or let go (on `unbind`).
    pub driver: Option<String>,
    /// Every `KEY=VALUE` pair, the four above included.
    pub vars: BTreeMap<String, String>,
}

/// Why a datagram is not a kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Longer than the kernel ever sends.
    #[error("uevent of {len} bytes is longer than the kernel's {MAX_UEVENT_LEN}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// udev's re-broadcast (`libudev` magic), which carries no kernel header.
    #[error("a udev message, not a kernel uevent")]
    Udev,
    /// The first field is not `ACTION@DEVPATH`.
    #[error("header {header:?} is not ACTION@DEVPATH")]
    Header {
        /// What came instead (lossy UTF-8).
        header: String,
    },
    /// A field that is not `KEY=VALUE`, or not UTF-8.
    #[error("field {index} ({field:?}) is not KEY=VALUE")]
    Field {
        /// Its position after the header (0-based).
        index: usize,
        /// What it was (lossy UTF-8).
        field: String,
    },
    /// `ACTION` or `DEVPATH` among the pairs contradicts the header.
    #[error("{key}={value:?} contradicts the header's {header:?}")]
    Mismatch {
        /// The key.
        key: &'static str,
        /// Its value among the pairs.
        value: String,
        /// The header's.
        header: String,
    },
}

impl Uevent {
    /// Parses one datagram as the kernel's `kobject_uevent_env` writes it.
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        if buf.len() > MAX_UEVENT_LEN {
            return Err(ParseError::TooLong { len: buf.len() });
        }
        if buf.starts_with(b"libudev\0") {
            return Err(ParseError::Udev);
        }
        // A trailing NUL ends the last field; an empty field anywhere else is malformed.
        let body = buf.strip_suffix(b"\0").unwrap_or(buf);
        let mut fields = body.split(|b| *b == 0);
        let head = fields.next().unwrap_or_default();
        let bad_header = || ParseError::Header {
            header: String::from_utf8_lossy(head).into_owned(),
        };
        let head = std::str::from_utf8(head).map_err(|_| bad_header())?;
        let (action, devpath) = head.split_once('@').ok_or_else(bad_header)?;
        if action.is_empty() || !devpath.starts_with('/') {
            return Err(bad_header());
        }
        let mut vars = BTreeMap::new();
        for (index, field) in fields.enumerate() {
            let bad = || ParseError::Field {
                index,
                field: String::from_utf8_lossy(field).into_owned(),
            };
            let field = std::str::from_utf8(field).map_err(|_| bad())?;
            let (key, value) = field.split_once('=').ok_or_else(bad)?;
            if key.is_empty() {
                return Err(bad());
            }
            vars.insert(key.to_string(), value.to_string());
        }
        for (key, header) in [("ACTION", action), ("DEVPATH", devpath)] {
            if let Some(value) = vars.get(key)
                && value != header
            {
                return Err(ParseError::Mismatch {
                    key,
                    value: value.clone(),
                    header: header.to_string(),
                });
            }
        }
        Ok(Uevent {
            action: Action::from_kernel(action),
            devpath: devpath.to_string(),
            subsystem: vars.get("SUBSYSTEM").cloned(),
            driver: vars.get("DRIVER").cloned(),
            vars,
        })
    }

    /// The last component of `DEVPATH`: the PCI address for a PCI device, the interface
    /// name for a netdev (as it was when the event was sent).
    pub fn name(&self) -> &str {
        self.devpath.rsplit('/').next().unwrap_or_default()
    }

    /// `PCI_SLOT_NAME` (the PCI address) of a `pci` event.
    pub fn pci_slot(&self) -> Option<&str> {
        self.vars.get("PCI_SLOT_NAME").map(String::as_str)
    }

    /// `INTERFACE` of a `net` event.
    pub fn interface(&self) -> Option<&str> {
        self.vars.get("INTERFACE").map(String::as_str)
    }

    /// Whether this is about a PCI function.
    pub fn is_pci(&self) -> bool {
        self.subsystem.as_deref() == Some("pci")
    }

    /// Whether this is about a network interface.
    pub fn is_net(&self) -> bool {
        self.subsystem.as_deref() == Some("net")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(p.as_bytes());
            out.push(0);
        }
        out
    }

    /// Parts, then the action, subsystem and driver expected.
    type Case<'a> = (Vec<&'a str>, Action, Option<&'a str>, Option<&'a str>);

    const VF: &str = "/devices/pci0000:00/0000:00:03.0/0000:01:10.0";

    #[test]
    fn kernel_messages_parse_into_action_devpath_subsystem_and_driver() {
        let unbind = format!("unbind@{VF}");
        let devpath = format!("DEVPATH={VF}");
        let table: &[Case<'_>] = &[
            (
                vec![
                    &unbind,
                    "ACTION=unbind",
                    &devpath,
                    "SUBSYSTEM=pci",
                    "DRIVER=igbvf",
                    "PCI_SLOT_NAME=0000:01:10.0",
                    "SEQNUM=4242",
                ],
                Action::Unbind,
                Some("pci"),
                Some("igbvf"),
            ),
            (
                vec!["bind@/devices/x", "SUBSYSTEM=pci", "DRIVER=vfio-pci"],
                Action::Bind,
                Some("pci"),
                Some("vfio-pci"),
            ),
            (
                vec![
                    "remove@/devices/virtual/net/veth0",
                    "SUBSYSTEM=net",
                    "INTERFACE=veth0",
                    "IFINDEX=7",
                ],
                Action::Remove,
                Some("net"),
                None,
            ),
            (vec!["add@/module/igbvf"], Action::Add, None, None),
            (
                vec!["change@/devices/x", "A=", "B=c=d"],
                Action::Change,
                None,
                None,
            ),
            (vec!["move@/devices/x"], Action::Move, None, None),
            (
                vec!["online@/devices/system/cpu/cpu1"],
                Action::Online,
                None,
                None,
            ),
            (
                vec!["offline@/devices/system/cpu/cpu1"],
                Action::Offline,
                None,
                None,
            ),
            (
                vec!["frob@/devices/x"],
                Action::Other("frob".into()),
                None,
                None,
            ),
        ];
        for (parts, action, subsystem, driver) in table {
            let ev = Uevent::parse(&raw(parts)).unwrap();
            assert_eq!(&ev.action, action, "{parts:?}");
            assert_eq!(ev.subsystem.as_deref(), *subsystem, "{parts:?}");
            assert_eq!(ev.driver.as_deref(), *driver, "{parts:?}");
        }
        let ev = Uevent::parse(&raw(&[
            &unbind,
            "SUBSYSTEM=pci",
            "PCI_SLOT_NAME=0000:01:10.0",
        ]))
        .unwrap();
        assert_eq!(ev.devpath, VF);
        assert_eq!(ev.name(), "0000:01:10.0");
        assert_eq!(ev.pci_slot(), Some("0000:01:10.0"));
        assert!(ev.is_pci() && !ev.is_net());
        let ev = Uevent::parse(&raw(&[
            "add@/devices/virtual/net/d0",
            "SUBSYSTEM=net",
            "INTERFACE=d0",
        ]))
        .unwrap();
        assert_eq!(ev.interface(), Some("d0"));
        assert!(ev.is_net());
        let ev = Uevent::parse(&raw(&["change@/devices/x", "A=", "B=c=d"])).unwrap();
        assert_eq!(ev.vars.get("A").map(String::as_str), Some(""));
        assert_eq!(ev.vars.get("B").map(String::as_str), Some("c=d"));
        // Without the trailing NUL too.
        let ev = Uevent::parse(b"add@/devices/x\0SUBSYSTEM=pci").unwrap();
        assert_eq!(ev.subsystem.as_deref(), Some("pci"));
    }

    #[test]
    fn malformed_messages_are_refused_saying_what_is_wrong() {
        let long = vec![b'a'; MAX_UEVENT_LEN + 1];
        let table: Vec<(Vec<u8>, ParseError)> = vec![
            (
                long,
                ParseError::TooLong {
                    len: MAX_UEVENT_LEN + 1,
                },
            ),
            (b"libudev\0\xfe\xed\xca\xfe".to_vec(), ParseError::Udev),
            (
                Vec::new(),
                ParseError::Header {
                    header: String::new(),
                },
            ),
            (
                raw(&["add"]),
                ParseError::Header {
                    header: "add".into(),
                },
            ),
            (
                raw(&["@/devices/x"]),
                ParseError::Header {
                    header: "@/devices/x".into(),
                },
            ),
            (
                raw(&["add@devices"]),
                ParseError::Header {
                    header: "add@devices".into(),
                },
            ),
            (
                b"add@/d\xff\0".to_vec(),
                ParseError::Header {
                    header: "add@/d\u{fffd}".into(),
                },
            ),
            (
                raw(&["add@/d", "SUBSYSTEM"]),
                ParseError::Field {
                    index: 0,
                    field: "SUBSYSTEM".into(),
                },
            ),
            (
                raw(&["add@/d", "A=b", "=x"]),
                ParseError::Field {
                    index: 1,
                    field: "=x".into(),
                },
            ),
            (
                raw(&["add@/d", "", "A=b"]),
                ParseError::Field {
                    index: 0,
                    field: String::new(),
                },
            ),
            (
                b"add@/d\0A=\xff\0".to_vec(),
                ParseError::Field {
                    index: 0,
                    field: "A=\u{fffd}".into(),
                },
            ),
            (
                raw(&["add@/d", "ACTION=remove"]),
                ParseError::Mismatch {
                    key: "ACTION",
                    value: "remove".into(),
                    header: "add".into(),
                },
            ),
            (
                raw(&["add@/d", "DEVPATH=/e"]),
                ParseError::Mismatch {
                    key: "DEVPATH",
                    value: "/e".into(),
                    header: "/d".into(),
                },
            ),
        ];
        for (input, want) in table {
            assert_eq!(Uevent::parse(&input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn errors_name_the_offending_part() {
        let e = Uevent::parse(&raw(&["add@/d", "X"])).unwrap_err();
        assert_eq!(e.to_string(), r#"field 0 ("X") is not KEY=VALUE"#);
        let e = Uevent::parse(&raw(&["add"])).unwrap_err();
        assert_eq!(e.to_string(), r#"header "add" is not ACTION@DEVPATH"#);
    }
}
