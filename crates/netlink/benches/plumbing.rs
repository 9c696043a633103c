#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The whole plumbing sequence into a client namespace and back (move, rename, address, route,
//! up; then down, move home under the original name), through this crate and through `ip`
//! commands, in private namespaces. Prints the median per sequence of each and their ratio.
//!
//! `cargo bench -p sriov-netlink --bench plumbing [-- <iterations>]` (default 50). Needs root;
//! prints `SKIP` otherwise.

use std::process::Command;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use sriov_netlink::rtnetlink::LinkUnspec;
use sriov_netlink::testing::{PrivateNetns, add_veth, private_netns_or_skip};
use sriov_netlink::{ClientLink, IfName, RtNetlink};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Runs `ip <args>` on the calling thread's namespace; panics with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50)
        .max(1);
    let Some(home) = private_netns_or_skip("plumbing benchmark") else {
        return;
    };
    let client = PrivateNetns::new().expect("client namespace");
    let have_ip = Command::new("ip").arg("-V").output().is_ok();

    let (ours, moves, theirs) = home
        .block_on(|| async {
            let nl = RtNetlink::new().expect("netlink in home namespace");
            add_veth(nl.handle(), "vf0", "peer0").await.expect("veth");
            let request = ClientLink::new("vf0", client.url().clone())
                .name(IfName::new("nsm0").expect("name"))
                .address("10.0.0.2/24".parse().expect("address"))
                .route(
                    "10.1.0.0/16".parse().expect("route"),
                    "10.0.0.1".parse().ok(),
                );

            // One untimed round first, so both sides start warm.
            let record = nl.move_into(&request).await.expect("move_into");
            nl.back_out(&record).await.expect("back_out");
            let mut ours = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                let start = Instant::now();
                let record = nl.move_into(&request).await.expect("move_into");
                nl.back_out(&record).await.expect("back_out");
                ours.push(start.elapsed());
            }

            // The kernel's share: the two namespace moves alone, as bare requests.
            let mut moves = Vec::with_capacity(iterations);
            let client_nl = nl.connect(client.netns()).expect("client socket");
            for _ in 0..iterations {
                let index = nl
                    .link(&"vf0".into())
                    .await
                    .expect("get")
                    .expect("vf0")
                    .index;
                let start = Instant::now();
                let there = LinkUnspec::new_with_index(index)
                    .setns_by_fd(client.netns().as_raw_fd())
                    .build();
                nl.handle()
                    .link()
                    .change(there)
                    .execute()
                    .await
                    .expect("move");
                let back = LinkUnspec::new_with_index(index)
                    .setns_by_fd(nl.home().as_raw_fd())
                    .build();
                client_nl
                    .link()
                    .change(back)
                    .execute()
                    .await
                    .expect("move back");
                moves.push(start.elapsed());
            }

            let mut theirs = Vec::with_capacity(iterations);
            if have_ip {
                let client_tid = client.tid().to_string();
                let home_tid = home.tid().to_string();
                // Client-side commands are spawned from a thread inside the client namespace
                // (a child inherits its thread's namespace): one exec per step, like `ip -n`.
                let in_client = |args: &[&str]| {
                    client
                        .netns()
                        .run(|| ip(args))
                        .expect("enter client namespace");
                };
                for i in 0..=iterations {
                    let start = Instant::now();
                    ip(&[
                        "link",
                        "set",
                        "dev",
                        "vf0",
                        "netns",
                        &client_tid,
                        "name",
                        "nsm0",
                    ]);
                    in_client(&["addr", "add", "10.0.0.2/24", "dev", "nsm0"]);
                    in_client(&["link", "set", "dev", "nsm0", "up"]);
                    in_client(&[
                        "route",
                        "add",
                        "10.1.0.0/16",
                        "via",
                        "10.0.0.1",
                        "dev",
                        "nsm0",
                    ]);
                    in_client(&["link", "set", "dev", "nsm0", "down"]);
                    in_client(&[
                        "link", "set", "dev", "nsm0", "netns", &home_tid, "name", "vf0",
                    ]);
                    if i > 0 {
                        theirs.push(start.elapsed());
                    }
                }
            }
            (ours, moves, theirs)
        })
        .expect("run in private namespace");

    let ours = median(ours);
    let moves = median(moves);
    println!(
        "plumbing into a namespace and back (move+rename, address, up, route; down, move home), {iterations} iterations"
    );
    println!(
        "  sriov-netlink : median {:>9.1} µs per sequence",
        ours.as_secs_f64() * 1e6
    );
    println!(
        "  kernel moves  : median {:>9.1} µs for the sequence's two namespace moves as bare requests",
        moves.as_secs_f64() * 1e6
    );
    if theirs.is_empty() {
        println!("  ip commands   : not measured (no `ip` binary)");
        return;
    }
    let theirs = median(theirs);
    println!(
        "  ip commands   : median {:>9.1} µs per sequence",
        theirs.as_secs_f64() * 1e6
    );
    println!(
        "  ratio         : ip / sriov-netlink = {:.1}x",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
    // Both sequences contain the same two namespace moves, whose cost is the kernel's
    // (RCU grace periods while the device is unlisted); what remains is each tool's own.
    let beyond = |d: Duration| d.saturating_sub(moves).as_secs_f64() * 1e6;
    println!(
        "  beyond moves  : sriov-netlink {:.1} µs, ip {:.1} µs, ratio {:.1}x",
        beyond(ours),
        beyond(theirs),
        beyond(theirs) / beyond(ours).max(1.0)
    );
}
