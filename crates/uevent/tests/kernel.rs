//! The real socket: a dummy link created in a private network namespace is announced as a
//! `net` uevent to sockets in that namespace. Prints SKIP where namespaces cannot be made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sriov_netlink::testing::in_private_netns;
use sriov_uevent::{Action, Notice, UeventSocket};

async fn until(socket: &mut UeventSocket, action: Action, name: &str) {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match socket.recv().await.unwrap() {
                Notice::Event(ev)
                    if ev.is_net() && ev.action == action && ev.interface() == Some(name) =>
                {
                    return ev;
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {action} uevent for {name}"));
    assert!(found.devpath.ends_with(name), "{found:?}");
}

#[test]
fn link_add_and_delete_in_our_namespace_arrive_as_uevents() {
    in_private_netns(
        "link_add_and_delete_in_our_namespace_arrive_as_uevents",
        |nl| async move {
            let mut socket = UeventSocket::open().unwrap();
            sriov_netlink::testing::add_veth(nl.handle(), "uev0", "uev1")
                .await
                .unwrap();
            until(&mut socket, Action::Add, "uev0").await;
            let link = nl.link(&"uev0".into()).await.unwrap().unwrap();
            nl.handle().link().del(link.index).execute().await.unwrap();
            until(&mut socket, Action::Remove, "uev0").await;
        },
    );
}
