//! PF-side settings of SR-IOV virtual functions: `RTM_SETLINK` on the PF with
//! `IFLA_VFINFO_LIST { IFLA_VF_INFO { IFLA_VF_MAC | IFLA_VF_VLAN | IFLA_VF_SPOOFCHK |
//! IFLA_VF_TRUST | IFLA_VF_RATE } }` (what `ip link set <pf> vf N ...` sends), and reading them
//! back with `RTM_GETLINK` + `IFLA_EXT_MASK = RTEXT_FILTER_VF`.
//!
//! Kernel facts: a link whose driver lacks the `ndo_set_vf_*` op answers `EOPNOTSUPP` (veth,
//! every virtual link); without `RTEXT_FILTER_VF` the kernel omits the VF list entirely. The
//! kernel reports spoofchk/trust as `-1` when the driver does not say; netlink-packet-route reads
//! that as `false`, so we only ever restore fields we changed ourselves (and a driver that let us
//! change a field supports it).

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkMessage, LinkVfInfo, VfInfo, VfInfoMac, VfInfoRate,
    VfInfoSpoofCheck, VfInfoTrust, VfInfoVlan,
};

use crate::client::{RtNetlink, require_link};
use crate::error::{Error, Result, netlink_errno};
use crate::types::{LinkRef, MacAddr};

const EOPNOTSUPP: i32 = nix::libc::EOPNOTSUPP;

/// An 802.1Q VLAN a VF's traffic is tagged with by the PF (`0` = untagged).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct VfVlan {
    /// VLAN id, 0..=4095.
    pub id: u16,
    /// 802.1p priority, 0..=7.
    pub qos: u8,
}

/// Transmit rate limits of a VF in Mbit/s (`0` = no limit).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct TxRate {
    /// Guaranteed minimum.
    pub min_mbps: u32,
    /// Maximum.
    pub max_mbps: u32,
}

/// VF settings to apply; `None` leaves a setting alone.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct VfConfig {
    /// Administrative MAC address.
    pub mac: Option<MacAddr>,
    /// VLAN and priority.
    pub vlan: Option<VfVlan>,
    /// MAC/VLAN anti-spoofing.
    pub spoof_check: Option<bool>,
    /// Trusted mode (promiscuous, MAC changes from the VF).
    pub trust: Option<bool>,
    /// Rate limits.
    pub tx_rate: Option<TxRate>,
}

impl VfConfig {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == VfConfig::default()
    }
}

/// One VF as the PF reports it.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct VfState {
    /// VF number on its PF.
    pub vf: u32,
    /// Administrative MAC (all zeroes when unset).
    pub mac: MacAddr,
    /// VLAN and priority.
    pub vlan: VfVlan,
    /// Anti-spoofing (false also when the driver does not report it).
    pub spoof_check: bool,
    /// Trusted mode (false also when the driver does not report it).
    pub trust: bool,
    /// Rate limits.
    pub tx_rate: TxRate,
}

impl VfState {
    /// The current values of exactly the fields `config` would change, to restore them later.
    pub fn previous_of(&self, config: &VfConfig) -> VfConfig {
        VfConfig {
            mac: config.mac.map(|_| self.mac),
            vlan: config.vlan.map(|_| self.vlan),
            spoof_check: config.spoof_check.map(|_| self.spoof_check),
            trust: config.trust.map(|_| self.trust),
            tx_rate: config.tx_rate.map(|_| self.tx_rate),
        }
    }
}

/// What [`RtNetlink::set_vf`] changed, to undo with [`RtNetlink::restore_vf`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VfRecord {
    /// The PF's ifindex.
    pub pf_index: u32,
    /// The PF's name (for messages).
    pub pf_name: String,
    /// The VF number.
    pub vf: u32,
    /// The values before the change, for the changed fields only.
    pub previous: VfConfig,
}

/// The `RTM_SETLINK` body that applies `config` to VF `vf` of the PF with ifindex `pf_index`.
pub fn vf_config_message(pf_index: u32, vf: u32, config: &VfConfig) -> LinkMessage {
    let mut infos = Vec::new();
    if let Some(mac) = config.mac {
        infos.push(VfInfo::Mac(VfInfoMac::new(vf, &mac.octets())));
    }
    if let Some(vlan) = config.vlan {
        infos.push(VfInfo::Vlan(VfInfoVlan::new(
            vf,
            vlan.id.into(),
            vlan.qos.into(),
        )));
    }
    if let Some(rate) = config.tx_rate {
        infos.push(VfInfo::Rate(VfInfoRate::new(
            vf,
            rate.min_mbps,
            rate.max_mbps,
        )));
    }
    if let Some(on) = config.spoof_check {
        infos.push(VfInfo::SpoofCheck(VfInfoSpoofCheck::new(vf, on)));
    }
    if let Some(on) = config.trust {
        infos.push(VfInfo::Trust(VfInfoTrust::new(vf, on)));
    }
    let mut msg = LinkMessage::default();
    msg.header.index = pf_index;
    msg.attributes
        .push(LinkAttribute::VfInfoList(vec![LinkVfInfo(infos)]));
    msg
}

/// The VFs in a link message (empty when it carries no `IFLA_VFINFO_LIST`).
pub fn vf_states(msg: &LinkMessage) -> Vec<VfState> {
    let mut states = Vec::new();
    for attr in &msg.attributes {
        let LinkAttribute::VfInfoList(list) = attr else {
            continue;
        };
        for LinkVfInfo(infos) in list {
            let mut state = VfState::default();
            for info in infos {
                match info {
                    VfInfo::Mac(m) => {
                        state.vf = m.vf_id;
                        state.mac = MacAddr::from_slice(&m.mac[..6]).unwrap_or_default();
                    }
                    VfInfo::Vlan(v) => {
                        state.vf = v.vf_id;
                        state.vlan = VfVlan {
                            id: u16::try_from(v.vlan_id).unwrap_or(u16::MAX),
                            qos: u8::try_from(v.qos).unwrap_or(u8::MAX),
                        };
                    }
                    VfInfo::Rate(r) => {
                        state.tx_rate = TxRate {
                            min_mbps: r.min_tx_rate,
                            max_mbps: r.max_tx_rate,
                        }
                    }
                    VfInfo::SpoofCheck(s) => state.spoof_check = s.enabled,
                    VfInfo::Trust(t) => state.trust = t.enabled,
                    _ => {}
                }
            }
            states.push(state);
        }
    }
    states
}

impl RtNetlink {
    /// The VFs of a PF in the home namespace; empty for a link without VFs.
    pub async fn vfs(&self, pf: &LinkRef) -> Result<Vec<VfState>> {
        let index = require_link(&self.handle, pf, &self.home_label())
            .await?
            .index;
        let msg = self
            .handle
            .link()
            .get()
            .match_index(index)
            .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::Vf])
            .execute()
            .try_next()
            .await
            .map_err(|source| Error::Netlink {
                op: "get vf info".into(),
                link: pf.to_string(),
                source,
            })?;
        Ok(msg.as_ref().map(vf_states).unwrap_or_default())
    }

    /// The current values of what `config` would change on VF `vf` of `pf`: the record
    /// [`RtNetlink::set_vf`] returns, read without changing anything, so a caller can persist it
    /// before the change.
    pub async fn vf_record(&self, pf: &LinkRef, vf: u32, config: &VfConfig) -> Result<VfRecord> {
        let link = require_link(&self.handle, pf, &self.home_label()).await?;
        let states = self.vfs(&LinkRef::Index(link.index)).await?;
        if states.is_empty() {
            return Err(Error::VfNotSupported {
                link: link.name,
                setting: "vf info",
            });
        }
        let state = states
            .iter()
            .find(|s| s.vf == vf)
            .ok_or_else(|| Error::NoSuchVf {
                link: link.name.clone(),
                vf,
            })?;
        let record = VfRecord {
            pf_index: link.index,
            pf_name: link.name,
            vf,
            previous: state.previous_of(config),
        };
        Ok(record)
    }

    /// Applies `config` to VF `vf` of `pf` and returns the previous values of what it changed.
    ///
    /// The kernel applies the settings one by one and stops at the first error; on failure the
    /// previous values are written back before the error is returned.
    pub async fn set_vf(&self, pf: &LinkRef, vf: u32, config: &VfConfig) -> Result<VfRecord> {
        let record = self.vf_record(pf, vf, config).await?;
        if let Err(e) = self
            .apply_vf_config(record.pf_index, &record.pf_name, vf, config)
            .await
        {
            return Err(
                match self
                    .apply_vf_config(record.pf_index, &record.pf_name, vf, &record.previous)
                    .await
                {
                    Ok(()) => Error::RolledBack {
                        op: "set vf",
                        link: record.pf_name.clone(),
                        source: Box::new(e),
                    },
                    Err(rollback) => Error::VfRollbackFailed {
                        link: record.pf_name.clone(),
                        vf,
                        cause: Box::new(e),
                        rollback: Box::new(rollback),
                        record: Box::new(record.clone()),
                    },
                },
            );
        }
        Ok(record)
    }

    /// Puts back what [`RtNetlink::set_vf`] changed.
    pub async fn restore_vf(&self, record: &VfRecord) -> Result<()> {
        self.apply_vf_config(
            record.pf_index,
            &record.pf_name,
            record.vf,
            &record.previous,
        )
        .await
    }

    /// Sends one VF settings request without reading or recording anything.
    pub async fn apply_vf_config(
        &self,
        pf_index: u32,
        pf_name: &str,
        vf: u32,
        config: &VfConfig,
    ) -> Result<()> {
        if config.is_empty() {
            return Ok(());
        }
        self.handle
            .link()
            .set(vf_config_message(pf_index, vf, config))
            .execute()
            .await
            .map_err(|source| {
                if netlink_errno(&source) == Some(EOPNOTSUPP) {
                    Error::VfNotSupported {
                        link: pf_name.to_owned(),
                        setting: first_setting(config),
                    }
                } else {
                    Error::Netlink {
                        op: format!("set vf {vf} {config:?}"),
                        link: pf_name.to_owned(),
                        source,
                    }
                }
            })
    }
}

fn first_setting(config: &VfConfig) -> &'static str {
    if config.mac.is_some() {
        "mac"
    } else if config.vlan.is_some() {
        "vlan"
    } else if config.tx_rate.is_some() {
        "rate"
    } else if config.spoof_check.is_some() {
        "spoofchk"
    } else {
        "trust"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rtnetlink::packet_core::{Emitable, Parseable};

    const IFLA_VFINFO_LIST: u16 = 22;
    const IFLA_VF_INFO: u16 = 1;
    const IFLA_VF_MAC: u16 = 1;
    const IFLA_VF_VLAN: u16 = 2;
    const IFLA_VF_SPOOFCHK: u16 = 4;
    const IFLA_VF_RATE: u16 = 6;
    const IFLA_VF_TRUST: u16 = 9;

    fn full_config() -> VfConfig {
        VfConfig {
            mac: Some("02:00:00:00:00:2a".parse().unwrap()),
            vlan: Some(VfVlan { id: 100, qos: 3 }),
            spoof_check: Some(false),
            trust: Some(true),
            tx_rate: Some(TxRate {
                min_mbps: 10,
                max_mbps: 1000,
            }),
        }
    }

    /// Walks netlink attributes (len u16, type u16, value, padded to 4) in `buf`.
    fn nlas(mut buf: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        while buf.len() >= 4 {
            let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
            let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
            out.push((kind, buf[4..len].to_vec()));
            buf = &buf[((len + 3) & !3).min(buf.len())..];
        }
        out
    }

    fn u32_at(v: &[u8], i: usize) -> u32 {
        u32::from_ne_bytes(v[i * 4..i * 4 + 4].try_into().unwrap())
    }

    #[test]
    fn vf_settings_encode_as_the_kernel_expects() {
        let msg = vf_config_message(7, 3, &full_config());
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        assert_eq!(
            u32::from_ne_bytes(buf[4..8].try_into().unwrap()),
            7,
            "ifi_index"
        );
        // ifinfomsg is 16 bytes; the attributes follow.
        let attrs = nlas(&buf[16..]);
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs[0].0, IFLA_VFINFO_LIST);
        let infos = nlas(&attrs[0].1);
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].0, IFLA_VF_INFO);
        let settings = nlas(&infos[0].1);
        let kinds: Vec<u16> = settings.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                IFLA_VF_MAC,
                IFLA_VF_VLAN,
                IFLA_VF_RATE,
                IFLA_VF_SPOOFCHK,
                IFLA_VF_TRUST
            ]
        );
        for (_, value) in &settings {
            assert_eq!(u32_at(value, 0), 3, "every setting names the VF first");
        }
        // struct ifla_vf_mac { u32 vf; u8 mac[32]; }
        assert_eq!(settings[0].1.len(), 36);
        assert_eq!(&settings[0].1[4..10], &[2, 0, 0, 0, 0, 0x2a]);
        // struct ifla_vf_vlan { u32 vf, vlan, qos; }
        assert_eq!(
            (u32_at(&settings[1].1, 1), u32_at(&settings[1].1, 2)),
            (100, 3)
        );
        // struct ifla_vf_rate { u32 vf, min_tx_rate, max_tx_rate; }
        assert_eq!(
            (u32_at(&settings[2].1, 1), u32_at(&settings[2].1, 2)),
            (10, 1000)
        );
        // struct ifla_vf_spoofchk / ifla_vf_trust { u32 vf, setting; }
        assert_eq!(u32_at(&settings[3].1, 1), 0);
        assert_eq!(u32_at(&settings[4].1, 1), 1);
    }

    #[test]
    fn only_the_requested_settings_are_sent() {
        let config = VfConfig {
            trust: Some(false),
            ..VfConfig::default()
        };
        let msg = vf_config_message(2, 0, &config);
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        let attrs = nlas(&buf[16..]);
        let settings = nlas(&nlas(&attrs[0].1)[0].1);
        assert_eq!(settings.len(), 1);
        assert_eq!(settings[0].0, IFLA_VF_TRUST);
    }

    #[test]
    fn a_kernel_vf_list_decodes_to_states() {
        // What the kernel sends for a PF with two VFs, built and serialised, then parsed back.
        let mut reply = LinkMessage::default();
        reply.header.index = 7;
        let vf = |n: u32, mac: [u8; 6], vlan: u32, spoof: bool| {
            LinkVfInfo(vec![
                VfInfo::Mac(VfInfoMac::new(n, &mac)),
                VfInfo::Vlan(VfInfoVlan::new(n, vlan, 0)),
                VfInfo::Rate(VfInfoRate::new(n, 0, 500)),
                VfInfo::SpoofCheck(VfInfoSpoofCheck::new(n, spoof)),
                VfInfo::Trust(VfInfoTrust::new(n, false)),
            ])
        };
        reply.attributes.push(LinkAttribute::VfInfoList(vec![
            vf(0, [2, 0, 0, 0, 0, 1], 0, true),
            vf(1, [2, 0, 0, 0, 0, 2], 42, false),
        ]));
        let mut buf = vec![0; reply.buffer_len()];
        reply.emit(&mut buf);
        let parsed = LinkMessage::parse(&buf[..]).unwrap();
        let states = vf_states(&parsed);
        assert_eq!(states.len(), 2);
        assert_eq!(states[1].vf, 1);
        assert_eq!(states[1].mac.to_string(), "02:00:00:00:00:02");
        assert_eq!(states[1].vlan, VfVlan { id: 42, qos: 0 });
        assert_eq!(states[1].tx_rate.max_mbps, 500);
        assert!(states[0].spoof_check && !states[1].spoof_check);
    }

    #[test]
    fn a_link_without_vf_list_has_no_vfs() {
        assert!(vf_states(&LinkMessage::default()).is_empty());
    }

    #[test]
    fn previous_values_cover_exactly_the_changed_fields() {
        let state = VfState {
            vf: 1,
            mac: "02:00:00:00:00:01".parse().unwrap(),
            vlan: VfVlan { id: 5, qos: 1 },
            spoof_check: true,
            trust: false,
            tx_rate: TxRate::default(),
        };
        let change = VfConfig {
            vlan: Some(VfVlan { id: 100, qos: 0 }),
            trust: Some(true),
            ..VfConfig::default()
        };
        assert_eq!(
            state.previous_of(&change),
            VfConfig {
                vlan: Some(VfVlan { id: 5, qos: 1 }),
                trust: Some(false),
                ..VfConfig::default()
            }
        );
    }
}
