//! Crash points between the sysfs writes of a bind, for crash-testing the
//! recovery of a caller (feature `failpoints`).
//!
//! `Sysfs::bind` makes up to three writes: the old driver's `unbind`,
//! `driver_override`, `drivers_probe`. A process killed between two of them
//! leaves the device half-moved, which its restart has to put right. Built
//! with the `failpoints` feature, a process whose `NSM_FAILPOINTS` names a
//! point (a comma-separated list; `name@N` fires on the N-th hit instead of
//! the first) kills itself there with SIGKILL, as an OOM kill would:
//!
//! - `pci.bind.after-unbind`: unbound from the old driver, no override yet;
//! - `pci.bind.after-override`: `driver_override` written, no probe yet.
//!
//! That is the contract of the workspace's `sriov-failpoint` crate, which
//! lists these two points with all the others and whose test checks that
//! each is placed once. It is implemented again here, in a few lines, so
//! that this published crate depends on nothing unpublished. Without the
//! feature a point expands to nothing.

/// Places a crash point; an empty statement without the `failpoints` feature.
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($name);
    };
}
pub(crate) use failpoint;

#[cfg(feature = "failpoints")]
pub(crate) use armed::hit;

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    /// The environment variable naming the armed points (as `sriov-failpoint`'s).
    const ENV: &str = "NSM_FAILPOINTS";

    /// Armed points and how many hits each still lets pass.
    fn table() -> &'static Mutex<HashMap<String, u64>> {
        static TABLE: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
        TABLE.get_or_init(|| Mutex::new(parse(&std::env::var(ENV).unwrap_or_default())))
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

    /// Kills the process with SIGKILL if `name` is armed and its hit has come.
    pub(crate) fn hit(name: &'static str) {
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

        #[test]
        fn a_point_not_armed_lets_the_process_go_on() {
            // The test process's environment arms nothing under this name.
            super::hit("pci.test.not-armed");
        }
    }
}
