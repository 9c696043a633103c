#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The KERNEL mechanism against the real kernel: the forwarder's "home" is
//! a private network namespace holding veth links named like the fixture's
//! VF netdevs, and the client is a second private namespace. Needs
//! CAP_SYS_ADMIN and CAP_NET_ADMIN; prints SKIP otherwise.

mod support;

use std::process::Command;
use std::sync::Arc;

use sriov_chain::params::{self, MECH_KERNEL};
use sriov_netlink::NetlinkOps;
use sriov_netlink::testing::{PrivateNetns, add_veth, in_private_netns, private_netns_or_skip};
use support::*;

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

#[test]
fn kernel_request_puts_the_vf_in_the_client_namespace_and_close_brings_it_back() {
    let Some(client) = private_netns_or_skip("kernel_request_puts_the_vf_in_the_client_namespace")
    else {
        return;
    };
    let sriov_netlink::NetnsUrl::File(client_path) = client.url().clone() else {
        unreachable!()
    };
    let client_url = format!("file://{}", client_path.display());
    let checked = in_private_netns(
        "kernel_request_puts_the_vf_in_the_client_namespace",
        |nl| async move {
            // veth stand-ins for the fixture's VF netdevs of PF 3b:00.0.
            for vf in ["enp59s2", "enp59s2f1", "enp59s2f2", "enp59s2f3"] {
                add_veth(nl.handle(), vf, &format!("{vf}p")).await.unwrap();
            }
            let netlink: Arc<dyn NetlinkOps> = Arc::new(nl.clone());
            let h = Harness::new(netlink);
            *h.next_hop.context.lock().unwrap() = Some(ip_context());
            let token = h.allocate(1).remove(0);
            let conn = h
                .request(request(
                    "k1",
                    MECH_KERNEL,
                    &[
                        (params::TOKEN_ID, &token),
                        (params::INODE_URL, &client_url),
                        (params::NAME, "nsm-1"),
                    ],
                ))
                .await
                .unwrap();
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
        },
    );
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

#[test]
fn the_client_sees_name_addresses_routes_and_mtu() {
    let Some(client) = private_netns_or_skip("the_client_sees_name_addresses_routes_and_mtu")
    else {
        return;
    };
    let sriov_netlink::NetnsUrl::File(client_path) = client.url().clone() else {
        unreachable!()
    };
    let client_url = format!("file://{}", client_path.display());
    let done = in_private_netns(
        "the_client_sees_name_addresses_routes_and_mtu",
        |nl| async move {
            add_veth(nl.handle(), "enp59s2", "enp59s2p").await.unwrap();
            let h = Harness::new(Arc::new(nl.clone()));
            *h.next_hop.context.lock().unwrap() = Some(ip_context());
            let token = h.allocate(1).remove(0);
            let conn = h
                .request(request(
                    "k2",
                    MECH_KERNEL,
                    &[
                        (params::TOKEN_ID, &token),
                        (params::INODE_URL, &client_url),
                        (params::NAME, "nsm-1"),
                    ],
                ))
                .await
                .unwrap();
            // Keep the connection open while the client namespace is inspected.
            (h, conn)
        },
    );
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
    let Some(client) = private_netns_or_skip("a_refresh_with_a_new_address_shows_only_the_new_one")
    else {
        return;
    };
    let sriov_netlink::NetnsUrl::File(client_path) = client.url().clone() else {
        unreachable!()
    };
    let client_url = format!("file://{}", client_path.display());
    let done = in_private_netns(
        "a_refresh_with_a_new_address_shows_only_the_new_one",
        |nl| async move {
            add_veth(nl.handle(), "enp59s2", "enp59s2p").await.unwrap();
            let h = Harness::new(Arc::new(nl.clone()));
            *h.next_hop.context.lock().unwrap() = Some(ip_context());
            let token = h.allocate(1).remove(0);
            let params = [
                (params::TOKEN_ID, token.as_str()),
                (params::INODE_URL, client_url.as_str()),
                (params::NAME, "nsm-1"),
            ];
            let first = h
                .request(request("k3", MECH_KERNEL, &params))
                .await
                .unwrap();
            let mut changed = first.clone();
            if let Some(ip) = changed.context.as_mut().and_then(|c| c.ip_context.as_mut()) {
                ip.src_ip_addrs = vec!["172.16.9.2/30".into()];
                ip.src_routes.clear();
            }
            let mut refresh = request("k3", MECH_KERNEL, &params);
            refresh.connection = Some(changed);
            let conn = h.request(refresh).await.unwrap();
            (h, conn)
        },
    );
    let Some((h, _conn)) = done else { return };
    let addrs = ip_in(&client, &["-o", "addr", "show", "dev", "nsm-1"]);
    assert!(addrs.contains("inet 172.16.9.2/30"), "{addrs}");
    assert!(!addrs.contains("172.16.1.2"), "{addrs}");
    assert_eq!(h.in_use(), 1);
}
