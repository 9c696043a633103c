#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Opening namespaces through `file://` URLs: the process's own `/proc/<pid>/ns/net`, a
//! bind-mounted namespace file (what `ip netns add` leaves in /var/run/netns), and hostile files
//! that must be refused without side effects.

use std::os::unix::fs::symlink;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;
use sriov_netlink::testing::private_netns_or_skip;
use sriov_netlink::{Error, Netns, NetnsUrl};

fn file_url(path: &Path) -> NetnsUrl {
    NetnsUrl::parse(&format!("file://{}", path.display())).unwrap()
}

#[test]
fn proc_pid_ns_net_url_opens_the_process_namespace() {
    let url = NetnsUrl::parse(&format!("file:///proc/{}/ns/net", std::process::id())).unwrap();
    let opened = Netns::open(&url).unwrap();
    assert_eq!(opened.id(), Netns::current().unwrap().id());
}

#[test]
fn a_bind_mounted_namespace_file_opens_like_var_run_netns() {
    let test = "a_bind_mounted_namespace_file_opens_like_var_run_netns";
    let Some(ns) = private_netns_or_skip(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("blue");
    std::fs::write(&target, b"").unwrap();
    let uts = dir.path().join("uts");
    std::fs::write(&uts, b"").unwrap();
    let source = match ns.url() {
        NetnsUrl::File(path) => path.clone(),
        other => panic!("unexpected {other}"),
    };
    // The mount lives in a mount namespace private to this thread, so it vanishes with the
    // thread and never shows on the host.
    let target_for_thread = target.clone();
    let uts_for_thread = uts.clone();
    let opened = std::thread::spawn(move || {
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
            return Err(format!("unshare(CLONE_NEWNS): {e}"));
        }
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("make / private: {e}"))?;
        mount(
            Some(&source),
            &target_for_thread,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind mount: {e}"))?;
        mount(
            Some("/proc/self/ns/uts"),
            &uts_for_thread,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind mount uts: {e}"))?;
        let uts = Netns::open(&file_url(&uts_for_thread)).map(|n| n.id());
        Ok((
            Netns::open(&file_url(&target_for_thread)).map(|n| n.id()),
            uts,
        ))
    })
    .join()
    .unwrap();
    match opened {
        Ok((net, uts)) => {
            assert_eq!(net.unwrap(), ns.netns().id());
            let err = uts.unwrap_err();
            assert!(
                matches!(err, Error::NotANetns { .. }),
                "a bind-mounted UTS namespace: {err}"
            );
        }
        Err(reason) => eprintln!("SKIP {test}: {reason}"),
    }
    // Outside that mount namespace the file is the plain empty file it was.
    let err = Netns::open(&file_url(&target)).unwrap_err();
    assert!(matches!(err, Error::NotANetns { .. }), "{err}");
}

#[test]
fn a_fifo_behind_a_file_url_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    let err = Netns::open(&file_url(&fifo)).unwrap_err();
    assert!(matches!(err, Error::NotANetns { .. }), "{err}");
}

#[test]
fn a_symlink_to_an_ordinary_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"net:[4026531992]").unwrap();
    let link = dir.path().join("link");
    symlink(&plain, &link).unwrap();
    let err = Netns::open(&file_url(&link)).unwrap_err();
    assert!(matches!(err, Error::NotANetns { .. }), "{err}");
}

/// A client that can plant a symlink (in its own container root, reached through
/// `/proc/<pid>/root`) must not redirect us to a namespace it does not own, such as the
/// host's.
#[test]
fn a_symlink_to_a_namespace_file_is_refused_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ns");
    symlink(format!("/proc/{}/ns/net", std::process::id()), &link).unwrap();
    let err = Netns::open(&file_url(&link)).unwrap_err();
    assert!(
        matches!(&err, Error::NotANetns { reason, .. } if reason.contains("symlink")),
        "{err}"
    );
}
