#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Against the real kernel: every test runs in private network namespaces it creates, with veth
//! pairs standing in for VF netdevs. Without permission to create namespaces they print `SKIP`.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use sriov_netlink::netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
use sriov_netlink::netlink_packet_route::route::{RouteAddress, RouteAttribute};
use sriov_netlink::rtnetlink::{Handle, LinkUnspec};
use sriov_netlink::testing::{PrivateNetns, add_veth, in_private_netns};
use sriov_netlink::{
    BackOut, ClientLink, Error, IfName, LinkEvent, LinkRef, LinkStatus, MacAddr, MessageCounts,
    Netns, NetnsUrl, RtNetlink, VfConfig,
};

const VF_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// The fixture: a veth pair `vf0`/`peer0` in home (vf0 with a known MAC, peer0 up so carrier
/// follows vf0), and a client namespace.
async fn veth_and_client(nl: &RtNetlink) -> PrivateNetns {
    add_veth(nl.handle(), "vf0", "peer0").await.unwrap();
    let vf0 = nl.link(&"vf0".into()).await.unwrap().unwrap();
    let peer = nl.link(&"peer0".into()).await.unwrap().unwrap();
    nl.handle()
        .link()
        .change(
            LinkUnspec::new_with_index(vf0.index)
                .address(VF_MAC.to_vec())
                .build(),
        )
        .execute()
        .await
        .unwrap();
    nl.handle()
        .link()
        .change(LinkUnspec::new_with_index(peer.index).up().build())
        .execute()
        .await
        .unwrap();
    PrivateNetns::new().unwrap()
}

fn net(s: &str) -> sriov_netlink::IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn client_link(client: &Handle, name: &str) -> Option<LinkStatus> {
    client
        .link()
        .get()
        .execute()
        .map_ok(|m| LinkStatus::from_message(&m))
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.name == name)
}

async fn addresses(client: &Handle, index: u32) -> Vec<IpAddr> {
    use sriov_netlink::netlink_packet_route::address::AddressAttribute;
    client
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .flat_map(|m| m.attributes.iter())
        .filter_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
        .collect()
}

/// (destination, gateway) of the routes through `index`, both families.
async fn routes(client: &Handle, index: u32) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for msg in [
        sriov_netlink::rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        sriov_netlink::rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let found: Vec<_> = client
            .route()
            .get(msg)
            .execute()
            .try_collect()
            .await
            .unwrap();
        for r in found {
            let oif = r
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == index));
            if !oif {
                continue;
            }
            let addr = |a: &RouteAddress| match a {
                RouteAddress::Inet(v4) => v4.to_string(),
                RouteAddress::Inet6(v6) => v6.to_string(),
                other => format!("{other:?}"),
            };
            let dst = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(d) => Some(format!(
                    "{}/{}",
                    addr(d),
                    r.header.destination_prefix_length
                )),
                _ => None,
            });
            let gw = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(g) => Some(addr(g)),
                _ => None,
            });
            if let Some(dst) = dst {
                out.push((dst, gw));
            }
        }
    }
    out
}

async fn neighbours(client: &Handle, index: u32) -> Vec<IpAddr> {
    let found: Vec<_> = client
        .neighbours()
        .get()
        .execute()
        .try_collect()
        .await
        .unwrap();
    found
        .iter()
        .filter(|n| n.header.ifindex == index)
        .flat_map(|n| n.attributes.iter())
        .filter_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
            _ => None,
        })
        .collect()
}

fn full_request(client: &PrivateNetns) -> ClientLink {
    ClientLink::new("vf0", client.url().clone())
        .name(IfName::new("nsm-client-0").unwrap())
        .mtu(1400)
        .mac("02:00:00:00:00:99".parse().unwrap())
        .address(net("10.10.0.2/24"))
        .address(net("fd00:10::2/64"))
        .route(net("10.20.0.0/16"), None)
        .route(net("10.30.0.0/16"), Some(ip("10.10.0.1")))
        .route(net("fd00:20::/64"), Some(ip("fd00:10::1")))
        .route(net("fd00:30::/64"), None)
        .neighbour(ip("10.10.0.1"), "02:00:00:00:00:aa".parse().unwrap())
        .neighbour(ip("fd00:10::1"), "02:00:00:00:00:ab".parse().unwrap())
}

/// Home still has vf0 as it was before the move: original name, MAC, MTU, and down.
async fn assert_restored_at_home(nl: &RtNetlink) {
    let back = nl
        .link(&"vf0".into())
        .await
        .unwrap()
        .expect("vf0 is back home");
    assert_eq!(back.address, VF_MAC);
    assert_eq!(back.mtu, 1500);
    assert!(!back.up, "returned link is down");
}

#[test]
fn move_into_configures_the_link_in_the_client_and_back_out_restores_it() {
    in_private_netns(
        "move_into_configures_the_link_in_the_client_and_back_out_restores_it",
        |nl| async move {
            let client = veth_and_client(&nl).await;
            let record = nl.move_into(&full_request(&client)).await.unwrap();

            assert!(
                nl.link(&"vf0".into()).await.unwrap().is_none(),
                "vf0 left home"
            );
            let c = nl.connect(client.netns()).unwrap();
            let link = client_link(&c, "nsm-client-0")
                .await
                .expect("renamed link in client");
            assert_eq!(link.index, record.client_index);
            assert_eq!(link.mtu, 1400);
            assert_eq!(link.mac().unwrap().to_string(), "02:00:00:00:00:99");
            assert!(link.up);
            let addrs = addresses(&c, link.index).await;
            assert!(
                addrs.contains(&ip("10.10.0.2")) && addrs.contains(&ip("fd00:10::2")),
                "{addrs:?}"
            );
            let routes = routes(&c, link.index).await;
            for expected in [
                ("10.20.0.0/16".to_string(), None),
                ("10.30.0.0/16".to_string(), Some("10.10.0.1".to_string())),
                ("fd00:20::/64".to_string(), Some("fd00:10::1".to_string())),
            ] {
                assert!(
                    routes.contains(&expected),
                    "{expected:?} missing from {routes:?}"
                );
            }
            let neigh = neighbours(&c, link.index).await;
            assert!(
                neigh.contains(&ip("10.10.0.1")) && neigh.contains(&ip("fd00:10::1")),
                "{neigh:?}"
            );
            assert_eq!(record.original.name, "vf0");
            assert_eq!(record.client_name, "nsm-client-0");

            let outcome = nl.back_out(&record).await.unwrap();
            assert!(matches!(outcome, BackOut::Returned { .. }), "{outcome:?}");
            assert_restored_at_home(&nl).await;
            assert!(
                client_link(&c, "nsm-client-0").await.is_none(),
                "nothing left in client"
            );
        },
    );
}

/// The plumbing's kernel round trips, counted at the socket: the changes are exactly what the
/// fewest messages can do (move, rename, MTU, MAC and up in one `RTM_NEWLINK`; one per address,
/// route and neighbour; the move home with name, MTU and MAC in one), plus one read per phase:
/// the link as it was before the move (the record persisted first), and the link in the client
/// before moving it back (so a link of the client's own at that ifindex is never taken).
#[test]
fn request_and_close_send_the_fewest_messages() {
    in_private_netns(
        "request_and_close_send_the_fewest_messages",
        |nl| async move {
            let client = veth_and_client(&nl).await;
            let request = full_request(&client);
            let per_item =
                (request.addresses.len() + request.routes.len() + request.neighbours.len()) as u64;

            let before = nl.messages();
            let plan = nl.plan_move(&request).await.unwrap();
            let planned = nl.messages();
            assert_eq!(
                planned.since(before),
                MessageCounts {
                    changes: 0,
                    reads: 1
                }
            );
            let record = nl.move_planned(&request, &plan).await.unwrap();
            assert_eq!(
                nl.messages().since(planned),
                MessageCounts {
                    changes: 1 + per_item,
                    reads: 0
                },
                "the move sends one link message and one per address, route and neighbour"
            );

            let before = nl.messages();
            let outcome = nl.back_out(&record).await.unwrap();
            assert!(matches!(outcome, BackOut::Returned { .. }), "{outcome:?}");
            assert_eq!(
                nl.messages().since(before),
                MessageCounts {
                    changes: 1,
                    reads: 1
                }
            );
            assert_restored_at_home(&nl).await;

            // `move_into` is the plan and the move together: no second lookup.
            let before = nl.messages();
            let record = nl.move_into(&request).await.unwrap();
            assert_eq!(
                nl.messages().since(before),
                MessageCounts {
                    changes: 1 + per_item,
                    reads: 1
                }
            );
            nl.back_out(&record).await.unwrap();
            assert!(sriov_netlink::process_messages().total() >= nl.messages().total());
        },
    );
}

/// A Close that answers before the move home: `disable` leaves the link in the client down,
/// without our addresses and with no route through it, in one message per change; the move
/// home then works as ever, and disabling a link that left is no error (a retried Close).
#[test]
fn disable_leaves_the_link_down_and_bare_in_the_client_until_back_out() {
    in_private_netns(
        "disable_leaves_the_link_down_and_bare_in_the_client_until_back_out",
        |nl| async move {
            let client = veth_and_client(&nl).await;
            let request = full_request(&client);
            let record = nl.move_into(&request).await.unwrap();
            let c = nl.connect(client.netns()).unwrap();

            let before = nl.messages();
            nl.disable(&record, Some(&request.addresses)).await.unwrap();
            assert_eq!(
                nl.messages().since(before),
                MessageCounts {
                    changes: 1 + request.addresses.len() as u64,
                    reads: 0
                },
                "down, then one delete per address"
            );
            let link = client_link(&c, "nsm-client-0")
                .await
                .expect("the link stays in the client until it is moved home");
            assert!(!link.up, "disabled link is down");
            let addrs = addresses(&c, link.index).await;
            assert!(
                !addrs.contains(&ip("10.10.0.2")) && !addrs.contains(&ip("fd00:10::2")),
                "{addrs:?}"
            );
            let left = routes(&c, link.index).await;
            assert!(
                left.iter().all(|(dst, _)| dst.starts_with("fe80:")),
                "routes left through the disabled link: {left:?}"
            );

            // Addresses read from the kernel (a connection adopted after a restart), none left.
            nl.disable(&record, None).await.unwrap();
            let outcome = nl.back_out(&record).await.unwrap();
            assert!(matches!(outcome, BackOut::Returned { .. }), "{outcome:?}");
            assert_restored_at_home(&nl).await;
            nl.disable(&record, None).await.unwrap();
            assert!(nl.link(&"vf0".into()).await.unwrap().is_some());
        },
    );
}

/// The move's one message fails after the kernel moved the link (an MTU the device refuses is
/// applied after the move): the link is found in the client and rolled back.
#[test]
fn a_refused_setting_in_the_move_message_rolls_the_move_back() {
    in_private_netns(
        "a_refused_setting_in_the_move_message_rolls_the_move_back",
        |nl| async move {
            let client = veth_and_client(&nl).await;
            let request = full_request(&client).mtu(1_000_000);
            let err = nl.move_into(&request).await.unwrap_err();
            assert!(matches!(err, Error::RolledBack { .. }), "{err}");
            assert_restored_at_home(&nl).await;
            let c = nl.connect(client.netns()).unwrap();
            assert!(client_link(&c, "nsm-client-0").await.is_none());
        },
    );
}

/// A client that already has a link at our ifindex: the move cannot keep it, so the kernel picks
/// another and the record says which.
#[test]
fn a_move_into_a_namespace_using_the_links_ifindex_records_the_new_one() {
    in_private_netns(
        "a_move_into_a_namespace_using_the_links_ifindex_records_the_new_one",
        |nl| async move {
            let client = veth_and_client(&nl).await;
            let index = nl.link(&"vf0".into()).await.unwrap().unwrap().index;
            // Fill the client's ifindexes up to ours with dummy-free veth pairs made there.
            let c = nl.connect(client.netns()).unwrap();
            let mut n = 0;
            while client_link_by_index(&c, index).await.is_none() {
                add_veth(&c, &format!("x{n}"), &format!("y{n}"))
                    .await
                    .unwrap();
                n += 1;
                assert!(n < 64, "the client never reached ifindex {index}");
            }
            let record = nl.move_into(&full_request(&client)).await.unwrap();
            assert_ne!(record.client_index, index);
            let link = client_link(&c, "nsm-client-0").await.unwrap();
            assert_eq!(link.index, record.client_index);
            assert!(link.up);
            assert_eq!(link.mtu, 1400);
            assert!(addresses(&c, link.index).await.contains(&ip("10.10.0.2")));
            nl.back_out(&record).await.unwrap();
            assert_restored_at_home(&nl).await;
        },
    );
}

async fn client_link_by_index(client: &Handle, index: u32) -> Option<LinkStatus> {
    client
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .ok()
        .flatten()
        .map(|m| LinkStatus::from_message(&m))
}

#[test]
fn a_planned_move_backs_out_whether_or_not_the_move_happened() {
    // The forwarder records `plan_move` before moving, so a kill at any
    // instant leaves the plan: backing it out must work both ways.
    in_private_netns(
        "a_planned_move_backs_out_whether_or_not_the_move_happened",
        |nl| async move {
            let client = veth_and_client(&nl).await;
            let request = full_request(&client);
            let plan = nl.plan_move(&request).await.unwrap();
            assert_eq!(plan.original.name, "vf0");
            assert_eq!(plan.client_name, "nsm-client-0");
            assert!(
                nl.link(&"vf0".into()).await.unwrap().is_some(),
                "planning moves nothing"
            );
            // Killed before the move: the link is found at home and left as it was.
            let outcome = nl.back_out(&plan).await.unwrap();
            assert!(matches!(outcome, BackOut::Recovered { .. }), "{outcome:?}");
            assert_restored_at_home(&nl).await;
            // Killed after it: the plan finds the link in the client.
            nl.move_into(&request).await.unwrap();
            let outcome = nl.back_out(&plan).await.unwrap();
            assert!(matches!(outcome, BackOut::Returned { .. }), "{outcome:?}");
            assert_restored_at_home(&nl).await;
            let c = nl.connect(client.netns()).unwrap();
            assert!(client_link(&c, "nsm-client-0").await.is_none());
            // The plan refuses what the move refuses.
            let own = ClientLink::new("vf0", NetnsUrl::File("/proc/self/ns/net".into()));
            assert!(nl.plan_move(&own).await.is_err());
        },
    );
}

#[test]
fn move_into_finds_the_link_by_index_and_keeps_its_name_without_rename() {
    in_private_netns(
        "move_into_finds_the_link_by_index_and_keeps_its_name_without_rename",
        |nl| async move {
            let client = veth_and_client(&nl).await;
            let index = nl.link(&"vf0".into()).await.unwrap().unwrap().index;
            let record = nl
                .move_into(&ClientLink::new(index, client.url().clone()))
                .await
                .unwrap();
            assert_eq!(record.client_name, "vf0");
            let c = nl.connect(client.netns()).unwrap();
            assert!(client_link(&c, "vf0").await.unwrap().up);
            nl.back_out(&record).await.unwrap();
            assert_restored_at_home(&nl).await;
        },
    );
}

#[test]
fn move_into_an_inode_url_reaches_the_same_namespace() {
    in_private_netns(
        "move_into_an_inode_url_reaches_the_same_namespace",
        |nl| async move {
            let client = veth_and_client(&nl).await;
            let url = client.netns().id().url();
            assert!(url.to_string().starts_with("inode://"));
            let record = nl.move_into(&ClientLink::new("vf0", url)).await.unwrap();
            assert_eq!(record.netns_id, client.netns().id());
            let c = nl.connect(client.netns()).unwrap();
            assert!(client_link(&c, "vf0").await.is_some());
            nl.back_out(&record).await.unwrap();
            assert_restored_at_home(&nl).await;
        },
    );
}

#[test]
fn a_namespace_received_by_fd_is_used_and_held_until_back_out() {
    in_private_netns(
        "a_namespace_received_by_fd_is_used_and_held_until_back_out",
        |nl| async move {
            let client = veth_and_client(&nl).await;
            let id = client.netns().id();
            let NetnsUrl::File(path) = client.url().clone() else {
                panic!("a private namespace is named by path");
            };
            let fd = std::os::fd::OwnedFd::from(std::fs::File::open(&path).unwrap());
            let ns = Arc::new(Netns::from_received(fd, &id.url()).unwrap());
            let record = nl
                .move_into(&ClientLink::new("vf0", id.url()).in_opened(ns.clone()))
                .await
                .unwrap();
            assert_eq!(record.netns_id, id);
            let c = nl.connect(&ns).unwrap();
            assert!(client_link(&c, "vf0").await.is_some());
            drop((c, ns, client));
            // No task is in it any more: only the record's handle keeps it (and the veth) alive,
            // and no /proc scan can find it.
            assert!(Netns::open(&id.url()).is_err());
            let outcome = nl.back_out(&record).await.unwrap();
            assert!(matches!(outcome, BackOut::Returned { .. }), "{outcome:?}");
            assert_restored_at_home(&nl).await;
        },
    );
}

#[test]
fn a_received_namespace_is_refused_when_it_is_home() {
    in_private_netns(
        "a_received_namespace_is_refused_when_it_is_home",
        |nl| async move {
            let _client = veth_and_client(&nl).await;
            let home = nl.home().id();
            let fd = std::os::fd::OwnedFd::from(
                std::fs::File::open(format!("/proc/self/fd/{}", nl.home().as_raw_fd())).unwrap(),
            );
            let ns = Arc::new(Netns::from_received(fd, &home.url()).unwrap());
            let err = nl
                .move_into(&ClientLink::new("vf0", home.url()).in_opened(ns))
                .await
                .unwrap_err();
            assert!(matches!(err, Error::ForbiddenNetns { .. }), "{err}");
            assert!(
                nl.link(&"vf0".into()).await.unwrap().is_some(),
                "vf0 stayed home"
            );
        },
    );
}

#[test]
fn a_route_with_an_unreachable_gateway_rolls_the_whole_move_back() {
    in_private_netns(
        "a_route_with_an_unreachable_gateway_rolls_the_whole_move_back",
        |nl| async move {
            let client = veth_and_client(&nl).await;
            let request = full_request(&client).route(net("10.40.0.0/16"), Some(ip("192.0.2.1")));
            let err = nl.move_into(&request).await.unwrap_err();
            match &err {
                Error::RolledBack { source, .. } => {
                    assert!(source.to_string().contains("192.0.2.1"), "{source}");
                    assert_eq!(err.errno(), Some(nix::libc::ENETUNREACH), "{err}");
                }
                other => panic!("expected RolledBack, got {other}"),
            }
            assert_restored_at_home(&nl).await;
            let c = nl.connect(client.netns()).unwrap();
            assert!(client_link(&c, "nsm-client-0").await.is_none());
        },
    );
}

#[test]
fn a_conflicting_address_rolls_the_move_back() {
    in_private_netns(
        "a_conflicting_address_rolls_the_move_back",
        |nl| async move {
            let client = veth_and_client(&nl).await;
            // The same address twice: the kernel answers EEXIST for the second.
            let request = ClientLink::new("vf0", client.url().clone())
                .name(IfName::new("nsm0").unwrap())
                .mtu(1300)
                .address(net("10.10.0.2/24"))
                .address(net("10.10.0.2/24"));
            let err = nl.move_into(&request).await.unwrap_err();
            assert!(matches!(err, Error::RolledBack { .. }), "{err}");
            assert_eq!(err.errno(), Some(nix::libc::EEXIST));
            assert_restored_at_home(&nl).await;
        },
    );
}

#[test]
fn a_name_taken_in_the_client_fails_without_leaving_the_link_there() {
    in_private_netns(
        "a_name_taken_in_the_client_fails_without_leaving_the_link_there",
        |nl| async move {
            let client = veth_and_client(&nl).await;
            let c = nl.connect(client.netns()).unwrap();
            add_veth(&c, "taken", "taken-peer").await.unwrap();
            let request =
                ClientLink::new("vf0", client.url().clone()).name(IfName::new("taken").unwrap());
            let err = nl.move_into(&request).await.unwrap_err();
            // The kernel moves first and fails the rename after: a rollback, not a plain failure.
            assert!(matches!(err, Error::RolledBack { .. }), "{err}");
            assert_eq!(err.errno(), Some(nix::libc::EEXIST));
            assert_restored_at_home(&nl).await;
            let theirs = client_link(&c, "taken")
                .await
                .expect("the client's own link stays");
            assert_ne!(theirs.address, VF_MAC);
        },
    );
}

#[test]
fn invalid_names_are_refused_before_anything_moves() {
    for name in ["", "sixteen-bytes-xx", "a/b", "a b", ".", ".."] {
        assert!(
            matches!(IfName::new(name), Err(Error::InvalidInterfaceName { .. })),
            "{name:?}"
        );
    }
}

#[test]
fn moving_a_missing_link_names_it_and_the_namespace() {
    in_private_netns(
        "moving_a_missing_link_names_it_and_the_namespace",
        |nl| async move {
            let client = PrivateNetns::new().unwrap();
            let err = nl
                .move_into(&ClientLink::new("ghost0", client.url().clone()))
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::LinkNotFound { ref link, .. } if link == "ghost0"),
                "{err}"
            );
        },
    );
}

#[test]
fn moving_into_a_namespace_that_does_not_exist_is_refused() {
    in_private_netns(
        "moving_into_a_namespace_that_does_not_exist_is_refused",
        |nl| async move {
            add_veth(nl.handle(), "vf0", "peer0").await.unwrap();
            let url = NetnsUrl::parse("file:///var/run/netns/sriov-netlink-test-absent").unwrap();
            let err = nl
                .move_into(&ClientLink::new("vf0", url))
                .await
                .unwrap_err();
            assert!(matches!(err, Error::NetnsOpen { .. }), "{err}");
            assert!(nl.link(&"vf0".into()).await.unwrap().is_some());
        },
    );
}

/// veth cannot show the kernel returning a physical netdev to init_net (veth is destroyed with
/// its namespace instead), so the kernel's hand-back is reproduced: the link is moved home under
/// a `dev<N>`-style name before the client namespace dies, as `default_device_exit_net` does.
#[test]
fn back_out_after_the_namespace_died_recovers_the_returned_link() {
    in_private_netns(
        "back_out_after_the_namespace_died_recovers_the_returned_link",
        |nl| async move {
            let client = veth_and_client(&nl).await;
            let record = nl.move_into(&full_request(&client)).await.unwrap();
            {
                let c = nl.connect(client.netns()).unwrap();
                let moved = LinkUnspec::new_with_index(record.client_index)
                    .setns_by_fd(std::os::fd::AsRawFd::as_raw_fd(nl.home()))
                    .name("dev7")
                    .build();
                c.link().change(moved).execute().await.unwrap();
            }
            drop(client);
            let outcome = nl.back_out(&record).await.unwrap();
            assert!(matches!(outcome, BackOut::Recovered { .. }), "{outcome:?}");
            assert_restored_at_home(&nl).await;
            assert!(nl.link(&"dev7".into()).await.unwrap().is_none());
        },
    );
}

/// What the kernel really does with a veth whose namespace dies: it destroys it, and its peer
/// with it. Back-out reports that rather than failing.
#[test]
fn back_out_after_the_namespace_died_reports_a_destroyed_veth_as_vanished() {
    in_private_netns(
        "back_out_after_the_namespace_died_reports_a_destroyed_veth_as_vanished",
        |nl| async move {
            let nl = nl.with_recovery_wait(Duration::from_millis(500));
            let client = veth_and_client(&nl).await;
            let record = nl.move_into(&full_request(&client)).await.unwrap();
            drop(client);
            let outcome = nl.back_out(&record).await.unwrap();
            assert_eq!(outcome, BackOut::Vanished);
            // Namespace teardown runs in a kernel workqueue; give it a bounded while.
            let mut gone = false;
            for _ in 0..100 {
                if nl.link(&"peer0".into()).await.unwrap().is_none() {
                    gone = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(gone, "the veth peer at home was destroyed with the pair");
        },
    );
}

#[test]
fn back_out_refuses_to_follow_a_url_that_now_names_another_namespace() {
    in_private_netns(
        "back_out_refuses_to_follow_a_url_that_now_names_another_namespace",
        |nl| async move {
            let nl = nl.with_recovery_wait(Duration::from_millis(200));
            let client = veth_and_client(&nl).await;
            let other = PrivateNetns::new().unwrap();
            let mut record = nl
                .move_into(&ClientLink::new("vf0", client.url().clone()))
                .await
                .unwrap();
            // As if the PID in the URL had been reused by a process in another namespace.
            record.netns = other.url().clone();
            assert_eq!(nl.back_out(&record).await.unwrap(), BackOut::Vanished);
            let c = nl.connect(client.netns()).unwrap();
            assert!(
                client_link(&c, "vf0").await.is_some(),
                "the link was not touched"
            );
            record.netns = client.url().clone();
            assert!(matches!(
                nl.back_out(&record).await.unwrap(),
                BackOut::Returned { .. }
            ));
        },
    );
}

#[test]
fn vf_settings_on_a_link_without_vfs_fail_clearly() {
    in_private_netns(
        "vf_settings_on_a_link_without_vfs_fail_clearly",
        |nl| async move {
            add_veth(nl.handle(), "vf0", "peer0").await.unwrap();
            assert!(nl.vfs(&"vf0".into()).await.unwrap().is_empty());
            let config = VfConfig {
                mac: Some(MacAddr(VF_MAC)),
                ..VfConfig::default()
            };
            let err = nl.set_vf(&"vf0".into(), 0, &config).await.unwrap_err();
            assert!(
                matches!(err, Error::VfNotSupported { ref link, .. } if link == "vf0"),
                "{err}"
            );
            // The raw request reaches the kernel, which refuses it for a driver without VF ops.
            let index = nl.link(&"vf0".into()).await.unwrap().unwrap().index;
            let err = nl
                .apply_vf_config(index, "vf0", 0, &config)
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::VfNotSupported { setting: "mac", .. }),
                "{err}"
            );
        },
    );
}

#[test]
fn link_health_reports_existence_carrier_and_operstate() {
    in_private_netns(
        "link_health_reports_existence_carrier_and_operstate",
        |nl| async move {
            add_veth(nl.handle(), "vf0", "peer0").await.unwrap();
            assert!(
                nl.link_health(&LinkRef::Name("nope".into()))
                    .await
                    .unwrap()
                    .is_none()
            );
            let down = nl.link_health(&"vf0".into()).await.unwrap().unwrap();
            assert!(!down.up && !down.is_healthy());
            for name in ["peer0", "vf0"] {
                let i = nl.link(&name.into()).await.unwrap().unwrap().index;
                nl.handle()
                    .link()
                    .change(LinkUnspec::new_with_index(i).up().build())
                    .execute()
                    .await
                    .unwrap();
            }
            let up = nl.link_health(&"vf0".into()).await.unwrap().unwrap();
            assert!(up.up);
            assert_eq!(up.carrier, Some(true));
            assert!(up.is_healthy(), "{up:?}");
        },
    );
}

#[test]
fn link_event_stream_sees_carrier_and_up_changes_and_removal() {
    in_private_netns(
        "link_event_stream_sees_carrier_and_up_changes_and_removal",
        |nl| async move {
            add_veth(nl.handle(), "vf0", "peer0").await.unwrap();
            let mut events = nl.link_events().unwrap();
            let vf0 = nl.link(&"vf0".into()).await.unwrap().unwrap().index;
            let peer0 = nl.link(&"peer0".into()).await.unwrap().unwrap().index;
            for i in [vf0, peer0] {
                nl.handle()
                    .link()
                    .change(LinkUnspec::new_with_index(i).up().build())
                    .execute()
                    .await
                    .unwrap();
            }
            let mut saw_healthy = false;
            while let Some(event) = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .unwrap()
            {
                if let LinkEvent::Changed(status) = &event
                    && status.index == vf0
                    && status.carrier == Some(true)
                    && status.up
                {
                    saw_healthy = true;
                    break;
                }
            }
            assert!(saw_healthy, "an up-with-carrier event for vf0");
            // Taking the peer down drops vf0's carrier.
            nl.handle()
                .link()
                .change(LinkUnspec::new_with_index(peer0).down().build())
                .execute()
                .await
                .unwrap();
            loop {
                let event = tokio::time::timeout(Duration::from_secs(10), events.next())
                    .await
                    .unwrap()
                    .unwrap();
                if let LinkEvent::Changed(status) = &event
                    && status.index == vf0
                    && status.carrier == Some(false)
                {
                    assert!(!status.is_healthy());
                    break;
                }
            }
            nl.handle().link().del(vf0).execute().await.unwrap();
            loop {
                let event = tokio::time::timeout(Duration::from_secs(10), events.next())
                    .await
                    .unwrap()
                    .unwrap();
                if matches!(event, LinkEvent::Removed { index, .. } if index == vf0) {
                    assert_eq!(event.name(), Some("vf0"));
                    break;
                }
            }
        },
    );
}

#[test]
fn netns_run_enters_the_namespace_on_its_own_thread_only() {
    let Some(ns) = sriov_netlink::testing::private_netns_or_skip(
        "netns_run_enters_the_namespace_on_its_own_thread_only",
    ) else {
        return;
    };
    let before = Netns::current().unwrap().id();
    let inside = ns.netns().run(|| Netns::current().unwrap().id()).unwrap();
    assert_eq!(inside, ns.netns().id());
    assert_ne!(inside, before);
    assert_eq!(
        Netns::current().unwrap().id(),
        before,
        "the caller's thread did not move"
    );
}

#[test]
fn a_private_namespace_url_stops_resolving_once_dropped() {
    let Some(ns) = sriov_netlink::testing::private_netns_or_skip(
        "a_private_namespace_url_stops_resolving_once_dropped",
    ) else {
        return;
    };
    let url = ns.url().clone();
    let id = ns.netns().id();
    assert_eq!(Netns::open(&url).unwrap().id(), id);
    drop(ns);
    // The URL names the keeper thread's task; once it is gone the kernel may hand its tid to
    // another thread of this test process (tests run side by side), and the path then
    // resolves to that thread's namespace: never again to the dropped one.
    match Netns::open(&url) {
        Err(_) => {}
        Ok(other) => assert_ne!(
            other.id(),
            id,
            "{url} still resolves to the dropped namespace"
        ),
    }
}

/// The forwarder runs a multi-thread runtime and holds the trait object; the futures must be
/// `Send` and work from any worker. Runtime threads started inside the private namespace
/// inherit it, so "home" is still the private namespace.
#[test]
fn the_trait_object_works_from_a_multi_thread_runtime() {
    let test = "the_trait_object_works_from_a_multi_thread_runtime";
    let Some(home) = sriov_netlink::testing::private_netns_or_skip(test) else {
        return;
    };
    home.netns()
        .run(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let nl = RtNetlink::new().unwrap();
                let client = veth_and_client(&nl).await;
                let ops: std::sync::Arc<dyn sriov_netlink::NetlinkOps> =
                    std::sync::Arc::new(nl.clone());
                let request =
                    ClientLink::new("vf0", client.url().clone()).name(IfName::new("nsm0").unwrap());
                let record = tokio::spawn(ops.move_into(request)).await.unwrap().unwrap();
                assert_eq!(record.client_name, "nsm0");
                let status = tokio::spawn(ops.link_status("vf0".into()))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(status.is_none(), "vf0 is in the client now");
                let outcome = tokio::spawn(ops.back_out(record)).await.unwrap().unwrap();
                assert!(matches!(outcome, BackOut::Returned { .. }));
                assert_restored_at_home(&nl).await;
            });
        })
        .unwrap();
}
