#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The whole plumbing sequence into a client namespace and back (move, rename, address, route,
//! up; then move home under the original name, which also takes the link down), through this crate and through `ip`
//! commands, in private namespaces. Prints the median per sequence of each and their ratio.
//!
//! `cargo bench -p sriov-netlink --bench plumbing [-- <iterations>]` (default 50). Needs root;
//! prints `SKIP` otherwise.

use std::process::Command;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use std::net::Ipv4Addr;

use sriov_netlink::rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
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

/// The kernel's share: the same five changes as bare requests on ready sockets with the ifindex
/// known (no lookups, no checks, no record). Everything above this floor is the tool's own cost.
async fn raw_sequence(nl: &RtNetlink, client_nl: &Handle, client: &PrivateNetns, index: u32) {
    let there = LinkUnspec::new_with_index(index)
        .setns_by_fd(client.netns().as_raw_fd())
        .name("nsm0")
        .build();
    nl.handle()
        .link()
        .change(there)
        .execute()
        .await
        .expect("move");
    let up = LinkUnspec::new_with_index(index).up().build();
    client_nl.link().change(up).execute().await.expect("up");
    let addr = "10.0.0.2".parse().expect("ip");
    client_nl
        .address()
        .add(index, addr, 24)
        .execute()
        .await
        .expect("address");
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::new(10, 1, 0, 0), 16)
        .gateway(Ipv4Addr::new(10, 0, 0, 1))
        .output_interface(index)
        .build();
    client_nl.route().add(route).execute().await.expect("route");
    let back = LinkUnspec::new_with_index(index)
        .setns_by_fd(nl.home().as_raw_fd())
        .name("vf0")
        .build();
    client_nl
        .link()
        .change(back)
        .execute()
        .await
        .expect("move back");
}

/// The same steps as `ip` commands. Client-side ones are spawned from a thread inside the
/// client namespace (a child inherits its thread's namespace): one exec per step, like `ip -n`.
fn ip_sequence(client: &PrivateNetns, client_tid: &str, home_tid: &str) {
    let in_client = |args: &[&str]| {
        client
            .netns()
            .run(|| ip(args))
            .expect("enter client namespace");
    };
    ip(&[
        "link", "set", "dev", "vf0", "netns", client_tid, "name", "nsm0",
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
    in_client(&[
        "link", "set", "dev", "nsm0", "netns", home_tid, "name", "vf0",
    ]);
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

    let (ours, floor, theirs) = home
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

            let client_nl = nl.connect(client.netns()).expect("client socket");
            let index = nl
                .link(&"vf0".into())
                .await
                .expect("get")
                .expect("vf0")
                .index;
            let client_tid = client.tid().to_string();
            let home_tid = home.tid().to_string();

            // The three ways take turns within each iteration, so drift in the kernel's
            // namespace-move cost (RCU grace periods, other load) hits all of them alike. The
            // first iteration only warms up.
            let (mut ours, mut floor, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..=iterations {
                let start = Instant::now();
                let record = nl.move_into(&request).await.expect("move_into");
                nl.back_out(&record).await.expect("back_out");
                let ours_took = start.elapsed();

                let start = Instant::now();
                raw_sequence(&nl, &client_nl, &client, index).await;
                let floor_took = start.elapsed();

                let ip_took = have_ip.then(|| {
                    let start = Instant::now();
                    ip_sequence(&client, &client_tid, &home_tid);
                    start.elapsed()
                });
                if i > 0 {
                    ours.push(ours_took);
                    floor.push(floor_took);
                    theirs.extend(ip_took);
                }
            }
            (ours, floor, theirs)
        })
        .expect("run in private namespace");

    let ours = median(ours);
    let floor = median(floor);
    println!(
        "plumbing into a namespace and back (move+rename, address, up, route; move home+rename), {iterations} iterations"
    );
    println!(
        "  sriov-netlink : median {:>9.1} µs per sequence",
        ours.as_secs_f64() * 1e6
    );
    println!(
        "  raw requests  : median {:>9.1} µs for the same five changes as bare requests (kernel floor)",
        floor.as_secs_f64() * 1e6
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
    // Both sequences make the same kernel changes, dominated by the two namespace moves (RCU
    // grace periods while the device is unlisted); what remains above the floor is each tool's.
    // Measured on a 6.18 VM kernel: entering a namespace at all (setns on a thread that then
    // exits) adds several ms of kernel time to the following moves; the library pays it once per
    // operation (the socket it opens in the client), `ip` once per client-side command.
    let beyond = |d: Duration| d.saturating_sub(floor).as_secs_f64() * 1e6;
    println!(
        "  above floor   : sriov-netlink {:.1} µs, ip {:.1} µs, ratio {:.1}x",
        beyond(ours),
        beyond(theirs),
        beyond(theirs) / beyond(ours).max(1.0)
    );
}
