#![allow(clippy::unwrap_used, clippy::expect_used)]
//! With netlink requests on a thread of their own, a Close starts the move home before it
//! answers. The switch is process-wide, hence a test binary of its own (`elements.rs` checks
//! the other way round).

mod support;

use std::sync::Arc;
use std::time::Duration;

use sriov_chain::params::{self, MECH_KERNEL};
use sriov_netlink::testing::{Call, RecordingOps};
use support::*;

#[tokio::test]
async fn with_netlink_on_its_own_thread_a_close_answers_with_the_move_home_under_way() {
    sriov_netlink::drive_requests_on_own_thread();
    let ops = RecordingOps::new();
    let h = Harness::new(Arc::new(ops.clone()));
    let token = h.allocate(1).remove(0);
    let p = [
        (params::TOKEN_ID, token.as_str()),
        (params::INODE_URL, "inode://4/4026532999"),
        (params::NAME, "nsm-1"),
    ];
    let conn = h.request(request("c1", MECH_KERNEL, &p)).await.unwrap();
    let gate = ops.hold_back_out();
    // The Close waits for its next hop: time the background could use (a current-thread
    // runtime runs the spawned move home only when the Close yields).
    *h.next_hop.delay.lock().unwrap() = Duration::from_millis(500);
    h.close_answered(conn).await.unwrap();
    let calls = ops.calls();
    let down = calls.iter().position(|c| matches!(c, Call::Disable(..)));
    let home = calls.iter().position(|c| matches!(c, Call::BackOut(_)));
    assert!(
        matches!((down, home), (Some(d), Some(b)) if d < b),
        "down, then the move home began, before the answer: {calls:?}"
    );
    assert_eq!(h.in_use(), 1, "the VF waits for its netdev");
    gate.add_permits(1);
    h.returns.settled().await;
    assert_eq!(h.in_use(), 0);
}
