//! Named crash points between two host changes, for the chaos campaign
//! (`cargo xtask chaos`).
//!
//! Every place where the forwarder has made one change to the host and is
//! about to make (or record) the next calls [`hit`] with the point's name.
//! In a normal build that call is empty and compiles away. Built with the
//! `failpoints` feature, a process whose `NSM_FAILPOINTS` names the point
//! (a comma-separated list; `name@N` fires on the N-th hit instead of the
//! first) kills itself with SIGKILL there, as an OOM kill or a node drain
//! would: no destructor, no flush, no chance to undo. The campaign then
//! restarts the daemon and audits what is left on the host.
//!
//! [`POINTS`] lists every point, so the campaign can arm each one and a
//! test can check that each listed name is really placed in the code.
//! `sriov-pci` places its two `pci.bind.*` points through a macro that
//! calls [`hit`] only with its own `failpoints` feature (turned on with this
//! one's through `sriov-chain`), so without it this crate is not even a
//! dependency of `sriov-pci`.
//!
//! ```
//! // Does nothing unless built with `failpoints` and armed by the environment.
//! sriov_failpoint::hit("pool.after-use-token");
//! assert!(sriov_failpoint::POINTS.iter().any(|p| p.name == "inject.after-move"));
//! ```

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

/// The environment variable naming the armed points.
pub const ENV: &str = "NSM_FAILPOINTS";

/// A crash point and the mechanism whose Request or Close reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The name [`hit`] is called with.
    pub name: &'static str,
    /// What reaches it: `"kernel"` or `"vfio"` (a Request of that
    /// mechanism), `"close"` (the Close of a KERNEL connection),
    /// `"reclaim"` (that Close sent to a restarted forwarder), `"start"`
    /// (the daemon's start), or `"vf-config"` (a VFIO Request asking for a
    /// MAC and VLAN: real VFs only, a veth has no VF settings).
    pub reached_by: &'static str,
    /// The two host changes (or change and record) it falls between.
    pub between: &'static str,
}

/// Every crash point placed in the forwarder.
pub const POINTS: &[Point] = &[
    Point {
        name: "store.before-rename",
        reached_by: "start",
        between: "the pool's snapshot written to its temp file at start / renamed over the old one",
    },
    Point {
        name: "store.after-append",
        reached_by: "kernel",
        between: "a change appended to the pool's journal / the journal synced",
    },
    Point {
        name: "pool.after-use-token",
        reached_by: "kernel",
        between: "the token recorded in use / the VF bound to its driver",
    },
    Point {
        name: "pci.bind.after-unbind",
        reached_by: "vfio",
        between: "the VF unbound from its kernel driver / driver_override written",
    },
    Point {
        name: "pci.bind.after-override",
        reached_by: "vfio",
        between: "driver_override written / drivers_probe",
    },
    Point {
        name: "bindvf.after-bind",
        reached_by: "vfio",
        between: "the VF on vfio-pci / the device rules granted",
    },
    Point {
        name: "inject.before-move",
        reached_by: "kernel",
        between: "the move recorded as intended / the netdev moved into the client",
    },
    Point {
        name: "inject.after-move",
        reached_by: "kernel",
        between: "the netdev moved and configured in the client / the move recorded as done",
    },
    Point {
        name: "vfconfig.after-set",
        reached_by: "vf-config",
        between: "the VF's MAC/VLAN set through its PF / the rest of the Request",
    },
    Point {
        name: "vfio.after-grant",
        reached_by: "vfio",
        between: "device rules written to devices.allow / the connection recorded as established",
    },
    Point {
        name: "bindvf.before-established",
        reached_by: "kernel",
        between: "every host change of the Request made / the connection recorded as established",
    },
    Point {
        name: "inject.close.after-back-out",
        reached_by: "close",
        between: "the netdev moved back home / the VF returned to the pool",
    },
    Point {
        name: "reclaim.before-free",
        reached_by: "reclaim",
        between: "a restarted forwarder's undo of a connection from its record / the VF freed",
    },
];

/// Crashes the process here if the point is armed (see the crate docs).
#[inline(always)]
pub fn hit(name: &'static str) {
    #[cfg(feature = "failpoints")]
    armed::hit(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::OnceLock;

    /// Armed points and how many hits each still lets pass.
    fn table() -> &'static Mutex<HashMap<String, u64>> {
        static TABLE: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
        TABLE.get_or_init(|| Mutex::new(parse(&std::env::var(super::ENV).unwrap_or_default())))
    }

    pub(super) fn parse(spec: &str) -> HashMap<String, u64> {
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once('@') {
                Some((name, n)) => (name.to_string(), n.parse::<u64>().unwrap_or(1).max(1) - 1),
                None => (s.to_string(), 0),
            })
            .collect()
    }

    pub(super) fn hit(name: &'static str) {
        let Ok(mut t) = table().lock() else { return };
        let Some(pass) = t.get_mut(name) else { return };
        if *pass > 0 {
            *pass -= 1;
            return;
        }
        eprintln!("failpoint {name}: SIGKILL");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn a_spec_names_points_and_the_hit_that_fires() {
            let t = super::parse("a, b@3,,c@0");
            assert_eq!(t.get("a"), Some(&0));
            assert_eq!(t.get("b"), Some(&2));
            assert_eq!(t.get("c"), Some(&0));
            assert_eq!(t.len(), 3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::POINTS;

    #[test]
    fn every_listed_point_is_placed_in_the_workspace_once() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut sources = String::new();
        for dir in ["crates", "bins"] {
            collect(&root.join(dir), &mut sources);
        }
        for p in POINTS {
            let call = format!("sriov_failpoint::hit(\"{}\")", p.name);
            // sriov-pci places its points through its `failpoint!` macro,
            // which calls `hit` only in a `failpoints` build.
            let own = format!("failpoint!(\"{}\")", p.name);
            assert_eq!(
                sources.matches(&call).count() + sources.matches(&own).count(),
                1,
                "{call} should appear exactly once in crates/ and bins/"
            );
        }
    }

    fn collect(dir: &std::path::Path, out: &mut String) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.ends_with("failpoint") || path.ends_with("target") {
                continue;
            }
            if path.is_dir() {
                collect(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
}
