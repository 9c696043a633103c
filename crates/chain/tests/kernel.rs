#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The KERNEL mechanism against the real kernel: the forwarder's "home" is
//! a private network namespace holding veth links named like the fixture's
//! VF netdevs, and the client is a second private namespace. Needs
//! CAP_SYS_ADMIN and CAP_NET_ADMIN; prints SKIP otherwise.

mod support;

use std::process::Command;
use std::sync::Arc;

use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_chain::params::{self, MECH_KERNEL};
use sriov_grpcfd::FdStream;
use sriov_netlink::testing::{PrivateNetns, add_veth, in_private_netns, private_netns_or_skip};
use sriov_netlink::{NetlinkOps, RtNetlink};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `ip` run inside a namespace, for checking what the kernel shows (the
/// code under test never runs `ip`).
fn ip_in(ns: &PrivateNetns, args: &[&str]) -> String {
    let sriov_netlink::NetnsUrl::File(path) = ns.url().clone() else {
        panic!("private namespaces have a file URL");
    };
    let out = Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .arg("ip")
        .args(args)
        .output()
        .expect("nsenter");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The client's namespace and its `inodeURL`, or `None` after a SKIP line.
fn client_ns(test: &str) -> Option<(PrivateNetns, String)> {
    let ns = private_netns_or_skip(test)?;
    let sriov_netlink::NetnsUrl::File(path) = ns.url().clone() else {
        panic!("private namespaces have a file URL");
    };
    let url = format!("file://{}", path.display());
    Some((ns, url))
}

/// A forwarder chain at home in `nl`'s namespace, with veth stand-ins for
/// `vfs` (VF netdev names of the fixture's PF 3b:00.0), an endpoint that
/// answers with `ip_context()`, and one allocated token.
async fn forwarder(nl: &RtNetlink, vfs: &[&str]) -> (Harness, String) {
    for vf in vfs {
        add_veth(nl.handle(), vf, &format!("{vf}p")).await.unwrap();
    }
    let netlink: Arc<dyn NetlinkOps> = Arc::new(nl.clone());
    let h = Harness::new(netlink);
    *h.next_hop.context.lock().unwrap() = Some(ip_context());
    let token = h.allocate(1).remove(0);
    (h, token)
}

/// A KERNEL request for `token` into the namespace at `url`, named `nsm-1`.
fn kernel_request(id: &str, token: &str, url: &str) -> NetworkServiceRequest {
    request(
        id,
        MECH_KERNEL,
        &[
            (params::TOKEN_ID, token),
            (params::INODE_URL, url),
            (params::NAME, "nsm-1"),
        ],
    )
}

#[test]
fn kernel_request_puts_the_vf_in_the_client_namespace_and_close_brings_it_back() {
    let test = "kernel_request_puts_the_vf_in_the_client_namespace";
    let Some((client, url)) = client_ns(test) else {
        return;
    };
    let checked = in_private_netns(test, |nl| async move {
        let (h, token) = forwarder(&nl, &["enp59s2", "enp59s2f1", "enp59s2f2", "enp59s2f3"]).await;
        let conn = h.request(kernel_request("k1", &token, &url)).await.unwrap();
        let home_after_request = nl
            .links()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect::<Vec<_>>();
        h.close(conn).await.unwrap();
        let home_after_close = nl
            .link(&sriov_netlink::LinkRef::Name("enp59s2".into()))
            .await
            .unwrap();
        (home_after_request, home_after_close, h.in_use())
    });
    let Some((home_after_request, home_after_close, in_use)) = checked else {
        return;
    };
    assert!(
        !home_after_request.contains(&"enp59s2".to_string()),
        "VF left our namespace: {home_after_request:?}"
    );
    let back = home_after_close.expect("VF netdev back home under its original name");
    assert!(!back.up, "returned down");
    assert_eq!(in_use, 0);
    // After Close the client namespace no longer has it.
    assert!(!ip_in(&client, &["-o", "link"]).contains("nsm-1"));
}

/// The flags `ip -o link` prints for a link, e.g. `BROADCAST,MULTICAST,UP,LOWER_UP`.
fn link_flags(line: &str) -> Vec<String> {
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(flags, _)| flags.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Close answers once the client's interface is unusable (down, its address gone) and before
/// the move home; the VF stays in use until it is home, and the same token asked for again at
/// once is served (it waits for the VF) rather than refused as in use.
#[test]
fn a_close_answers_before_the_move_home_and_the_vf_waits_for_it() {
    let test = "a_close_answers_before_the_move_home";
    let Some((client, url)) = client_ns(test) else {
        return;
    };
    let client = &client;
    let checked = in_private_netns(test, |nl| async move {
        let (h, token) = forwarder(&nl, &["enp59s2"]).await;
        let conn = h.request(kernel_request("k9", &token, &url)).await.unwrap();
        let up_before = link_flags(&ip_in(client, &["-o", "link", "show", "nsm-1"]));
        h.close_answered(conn).await.unwrap();
        // A current-thread runtime: nothing in the background ran since the answer.
        let link_at_answer = ip_in(client, &["-o", "link", "show", "nsm-1"]);
        let addrs_at_answer = ip_in(client, &["-o", "addr", "show", "dev", "nsm-1"]);
        let in_use_at_answer = h.in_use();
        let pending_at_answer = h.returns.pending();
        let again = h.request(kernel_request("k10", &token, &url)).await;
        let served_again = again.as_ref().map(|_| ()).map_err(|e| e.to_string());
        if let Ok(c) = again {
            h.close(c).await.unwrap();
        }
        let home = nl
            .link(&sriov_netlink::LinkRef::Name("enp59s2".into()))
            .await
            .unwrap();
        (
            up_before,
            link_at_answer,
            addrs_at_answer,
            in_use_at_answer,
            pending_at_answer,
            served_again,
            home,
            h.in_use(),
        )
    });
    let Some((up_before, link, addrs, in_use, pending, again, home, in_use_after)) = checked else {
        return;
    };
    assert!(up_before.contains(&"UP".to_string()), "{up_before:?}");
    assert!(
        link.contains("nsm-1"),
        "still in the client at the answer: {link:?}"
    );
    assert!(
        !link_flags(&link).contains(&"UP".to_string()),
        "down at the answer: {link:?}"
    );
    assert!(
        !addrs.contains("172.16.1.2"),
        "address gone at the answer: {addrs:?}"
    );
    assert_eq!(in_use, 1, "the VF is not free before it is home");
    assert_eq!(pending, 1);
    assert_eq!(
        again,
        Ok(()),
        "the same token asked again at once is served"
    );
    let home = home.expect("VF netdev home after the second Close");
    assert!(!home.up);
    assert_eq!(in_use_after, 0);
    assert!(!ip_in(client, &["-o", "link"]).contains("nsm-1"));
}

#[test]
fn the_client_sees_name_addresses_routes_and_mtu() {
    let test = "the_client_sees_name_addresses_routes_and_mtu";
    let Some((client, url)) = client_ns(test) else {
        return;
    };
    let done = in_private_netns(test, |nl| async move {
        let (h, token) = forwarder(&nl, &["enp59s2"]).await;
        let conn = h.request(kernel_request("k2", &token, &url)).await.unwrap();
        // Keep the connection open while the client namespace is inspected.
        (h, conn)
    });
    let Some((h, _conn)) = done else { return };
    let link = ip_in(&client, &["-o", "link", "show", "nsm-1"]);
    assert!(link.contains("mtu 1450"), "{link}");
    assert!(link.contains("UP") || link.contains("state"), "{link}");
    let addrs = ip_in(&client, &["-o", "addr", "show", "dev", "nsm-1"]);
    assert!(addrs.contains("inet 172.16.1.2/30"), "{addrs}");
    let routes = ip_in(&client, &["route", "show"]);
    assert!(
        routes.contains("10.60.0.0/16 via 172.16.1.1 dev nsm-1"),
        "{routes}"
    );
    assert!(routes.contains("172.16.1.0/30 dev nsm-1"), "{routes}");
    assert_eq!(h.in_use(), 1);
}

#[test]
fn a_refresh_with_a_new_address_shows_only_the_new_one_in_the_client() {
    let test = "a_refresh_with_a_new_address_shows_only_the_new_one";
    let Some((client, url)) = client_ns(test) else {
        return;
    };
    let done = in_private_netns(test, |nl| async move {
        let (h, token) = forwarder(&nl, &["enp59s2"]).await;
        let first = h.request(kernel_request("k3", &token, &url)).await.unwrap();
        let mut changed = first.clone();
        if let Some(ip) = changed.context.as_mut().and_then(|c| c.ip_context.as_mut()) {
            ip.src_ip_addrs = vec!["172.16.9.2/30".into()];
            ip.src_routes.clear();
        }
        let mut refresh = kernel_request("k3", &token, &url);
        refresh.connection = Some(changed);
        let conn = h.request(refresh).await.unwrap();
        (h, conn)
    });
    let Some((h, _conn)) = done else { return };
    let addrs = ip_in(&client, &["-o", "addr", "show", "dev", "nsm-1"]);
    assert!(addrs.contains("inet 172.16.9.2/30"), "{addrs}");
    assert!(!addrs.contains("172.16.1.2"), "{addrs}");
    assert_eq!(h.in_use(), 1);
}

/// [`forwarder`] as a secure forwarder runs: `inode://` namespaces only by fd.
async fn fd_only_forwarder(nl: &RtNetlink, vfs: &[&str]) -> (Harness, String) {
    for vf in vfs {
        add_veth(nl.handle(), vf, &format!("{vf}p")).await.unwrap();
    }
    let netlink: Arc<dyn NetlinkOps> = Arc::new(nl.clone());
    let h = Harness::with(
        netlink,
        Options {
            netns_proc_scan: false,
            ..Default::default()
        },
    );
    *h.next_hop.context.lock().unwrap() = Some(ip_context());
    let token = h.allocate(1).remove(0);
    (h, token)
}

/// A connection that sent `path` by fd, as the NSM manager's `sendfd` does:
/// both ends (the server's table lives as long as its end) and the
/// `inode://` URL naming it.
async fn sent_by_fd(path: &std::path::Path) -> (FdStream, FdStream, String) {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let (mut nsmgr, mut ours) = (FdStream::new(a), FdStream::new(b));
    let (dev, ino) = nsmgr.sender().send_file(path).unwrap();
    nsmgr.write_all(b"Request").await.unwrap();
    let mut got = [0u8; 7];
    ours.read_exact(&mut got).await.unwrap();
    (nsmgr, ours, sriov_grpcfd::inode_url(dev, ino))
}

#[test]
fn a_kernel_request_whose_netns_came_by_fd_is_plumbed_and_closes_after_the_sender_is_gone() {
    let test = "a_kernel_request_whose_netns_came_by_fd";
    let Some(client) = private_netns_or_skip(test) else {
        return;
    };
    let sriov_netlink::NetnsUrl::File(path) = client.url().clone() else {
        panic!("private namespaces have a file URL");
    };
    let checked = in_private_netns(test, |nl| async move {
        let (h, token) = fd_only_forwarder(&nl, &["enp59s2"]).await;
        let (nsmgr, ours, url) = sent_by_fd(&path).await;
        let table = ours.table();
        let conn = h
            .request_with_fds(&table, kernel_request("f1", &token, &url))
            .await
            .unwrap();
        let in_client = ip_in(&client, &["-o", "addr", "show", "dev", "nsm-1"]);
        // The connection ends, and so does every task in the client's
        // namespace: nothing but our record can reach it now.
        drop((nsmgr, ours));
        assert!(table.is_empty());
        drop(client);
        assert!(
            sriov_netlink::Netns::open(&sriov_netlink::NetnsUrl::parse(&url).unwrap()).is_err()
        );
        h.close(conn).await.unwrap();
        let home = nl
            .link(&sriov_netlink::LinkRef::Name("enp59s2".into()))
            .await
            .unwrap();
        (in_client, home, h.in_use())
    });
    let Some((in_client, home, in_use)) = checked else {
        return;
    };
    assert!(in_client.contains("inet 172.16.1.2/30"), "{in_client}");
    let back = home.expect("VF netdev back home after Close");
    assert!(!back.up, "returned down");
    assert_eq!(in_use, 0);
}

/// A forwarder restarted between Request and Close holds no handle on the
/// client's namespace, and without hostPID cannot find it in /proc: the
/// Close's own connection sends it again by fd, as nsmgr does on Close.
#[test]
fn a_close_after_a_restart_reaches_the_namespace_its_connection_sent() {
    let test = "a_close_after_a_restart_reaches_the_namespace";
    let Some(client) = private_netns_or_skip(test) else {
        return;
    };
    let sriov_netlink::NetnsUrl::File(path) = client.url().clone() else {
        panic!("private namespaces have a file URL");
    };
    let checked = in_private_netns(test, |nl| async move {
        let (h, token) = fd_only_forwarder(&nl, &["enp59s2"]).await;
        // What nsmgr keeps of the client's namespace: an open fd.
        let kept: std::os::fd::OwnedFd = std::fs::File::open(&path).unwrap().into();
        let (nsmgr, ours, url) = sent_by_fd(&path).await;
        let conn = h
            .request_with_fds(&ours.table(), kernel_request("f1", &token, &url))
            .await
            .unwrap();
        drop((nsmgr, ours));
        drop(client);
        let netlink: Arc<dyn NetlinkOps> = Arc::new(nl.clone());
        let h = h.restart_with(
            netlink,
            Options {
                netns_proc_scan: false,
                ..Default::default()
            },
        );
        // The Close's connection sends the namespace again.
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (mut nsmgr, mut ours) = (FdStream::new(a), FdStream::new(b));
        let (dev, ino) = nsmgr.sender().send(kept).unwrap();
        assert_eq!(sriov_grpcfd::inode_url(dev, ino), url);
        nsmgr.write_all(b"Close").await.unwrap();
        let mut got = [0u8; 5];
        ours.read_exact(&mut got).await.unwrap();
        let closed = h.close_with_fds(&ours.table(), conn).await;
        let home = nl
            .link(&sriov_netlink::LinkRef::Name("enp59s2".into()))
            .await
            .unwrap();
        (closed, home, h.in_use())
    });
    let Some((closed, home, in_use)) = checked else {
        return;
    };
    closed.expect("Close after the restart");
    assert!(home.is_some(), "VF netdev back home after Close");
    assert_eq!(in_use, 0);
}

#[test]
fn an_inode_not_sent_on_this_connection_is_refused_and_nothing_changes() {
    let test = "an_inode_not_sent_on_this_connection_is_refused";
    let Some(client) = private_netns_or_skip(test) else {
        return;
    };
    let sriov_netlink::NetnsUrl::File(path) = client.url().clone() else {
        panic!("private namespaces have a file URL");
    };
    // The namespace exists (a /proc scan would find it), but this
    // connection sent another file.
    let url = client.netns().id().to_string();
    let checked = in_private_netns(test, |nl| async move {
        let (h, token) = fd_only_forwarder(&nl, &["enp59s2"]).await;
        let (_nsmgr, ours, other) = sent_by_fd(std::path::Path::new("/dev/null")).await;
        assert_ne!(other, url);
        let before = nl.links().await.unwrap();
        let by_other_fd = h
            .request_with_fds(&ours.table(), kernel_request("r1", &token, &url))
            .await
            .unwrap_err();
        let without_fds = h
            .request(kernel_request("r2", &token, &url))
            .await
            .unwrap_err();
        let after = nl.links().await.unwrap();
        let names = |l: Vec<sriov_netlink::LinkStatus>| {
            l.into_iter()
                .map(|l| (l.index, l.name, l.up))
                .collect::<Vec<_>>()
        };
        (
            by_other_fd,
            without_fds,
            names(before),
            names(after),
            h.in_use(),
            path,
        )
    });
    let Some((by_other_fd, without_fds, before, after, in_use, _)) = checked else {
        return;
    };
    for refused in [by_other_fd, without_fds] {
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains(params::INODE_URL), "{refused:?}");
        assert!(
            refused.message().contains(params::RULE_NETNS_BY_FD),
            "{refused:?}"
        );
    }
    assert_eq!(before, after, "home links changed");
    assert_eq!(in_use, 0);
    assert!(!ip_in(&client, &["-o", "link"]).contains("nsm-1"));
}
