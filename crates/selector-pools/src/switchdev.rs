//! Switchdev: a PF whose e-switch is in switchdev mode lists, beside its own
//! interface (the uplink representor), one representor netdev per VF and
//! sub-function under its `net/`. Representors are the host's end of the
//! e-switch ports, for OVS or TC to steer traffic; handing one to a pod, or
//! matching `pfNames` or following link health by one, would be wrong.
//!
//! Told apart as sriovnet (which SRDP uses) tells them: a netdev of the
//! e-switch has a non-empty `phys_switch_id`, and its `phys_port_name` says
//! which port it is: `p<N>` the uplink; `pf<N>vf<M>`, `pf<N>sf<M>` and, on a
//! DPU, `pf<N>` and `c<C>pf<N>...` representors.

use std::path::Path;

/// `names` (interfaces under the PCI function at `device_dir`) without
/// representors, order kept.
pub(crate) fn without_representors(device_dir: &Path, names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| !is_representor(&device_dir.join("net").join(n)))
        .collect()
}

/// Whether the netdev at `netdev_dir` is an e-switch representor.
pub(crate) fn is_representor(netdev_dir: &Path) -> bool {
    let read = |attr: &str| {
        std::fs::read_to_string(netdev_dir.join(attr))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    // Reading phys_switch_id fails (EOPNOTSUPP) on netdevs of no e-switch.
    if read("phys_switch_id").is_none() {
        return false;
    }
    read("phys_port_name").is_some_and(|p| representor_port_name(&p))
}

/// `(c<C>)?pf<N>` optionally followed by `vf<M>` or `sf<M>`.
fn representor_port_name(name: &str) -> bool {
    let digits = |s: &str| -> usize { s.bytes().take_while(u8::is_ascii_digit).count() };
    let mut rest = name;
    if let Some(after) = rest.strip_prefix('c') {
        let n = digits(after);
        if n == 0 {
            return false;
        }
        rest = &after[n..];
    }
    let Some(after) = rest.strip_prefix("pf") else {
        return false;
    };
    let n = digits(after);
    if n == 0 {
        return false;
    }
    rest = &after[n..];
    if rest.is_empty() {
        return true;
    }
    match rest.strip_prefix("vf").or_else(|| rest.strip_prefix("sf")) {
        Some(index) => !index.is_empty() && digits(index) == index.len(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn port_names_of_representors_and_of_the_uplink() {
        for rep in [
            "pf0vf0", "pf1vf15", "pf0sf88", "pf0", "c1pf0vf2", "c1pf0sf3", "c2pf1",
        ] {
            assert!(representor_port_name(rep), "{rep}");
        }
        for not in [
            "p0", "p12", "", "pf", "pfvf1", "pf0vf", "pf0x1", "c", "cpf0", "vf0", "pf0vf1a",
        ] {
            assert!(!representor_port_name(not), "{not}");
        }
    }

    #[test]
    fn a_netdev_without_switch_id_is_no_representor_whatever_its_port_name() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("net");
        for (name, port, switch) in [
            ("rep", "pf0vf1", "aabb"),
            ("legacy", "pf0vf1", ""),
            ("uplink", "p0", "aabb"),
        ] {
            std::fs::create_dir_all(net.join(name)).unwrap();
            std::fs::write(net.join(name).join("phys_port_name"), port).unwrap();
            std::fs::write(net.join(name).join("phys_switch_id"), switch).unwrap();
        }
        let names = ["legacy", "rep", "uplink", "absent"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            without_representors(dir.path(), names),
            ["legacy", "uplink", "absent"]
        );
    }
}
