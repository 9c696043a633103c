#![allow(clippy::unwrap_used, clippy::expect_used)]
//! With netlink requests on a thread of their own, a Close starts the move home before it
//! answers. The switch is process-wide, hence a test binary of its own (`elements.rs` checks
//! the other way round).

mod support;

use std::time::Duration;

use sriov_netlink::testing::{Call, RecordingOps};
use support::*;

#[tokio::test]
async fn with_netlink_on_its_own_thread_a_close_answers_with_the_move_home_under_way() {
    sriov_netlink::drive_requests_on_own_thread();
    let ops = RecordingOps::new();
    let (h, _, conn) = kernel_connection(&ops).await;
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
