//! Handing the heap's free pages back to the kernel.
//!
//! glibc's heap shrinks only from its top, so memory freed below a live
//! allocation stays resident. Start-up's transients (the inventory, the
//! state snapshot's parse, the device lists sent to kubelet) peak at 7.3 MiB
//! of heap with 4096 VFs against 1.6 MiB live once they are freed (heaptrack),
//! and that difference stayed in the daemon's RSS for its whole life; a burst
//! of Requests did the same. `malloc_trim(0)` gives back every whole free page
//! of every arena (`MADV_DONTNEED`): the daemon calls it once start-up has
//! settled and then at a low rate, so an idle forwarder keeps only what it
//! uses. Each call walks the free lists under the arena locks, which on a heap
//! this size is well under a millisecond.

use std::time::Duration;

/// When the first trim runs: start-up and both registrations (tens of
/// milliseconds) are over, and kubelet has read the first device lists.
const FIRST: Duration = Duration::from_secs(1);

/// Then at this interval, for what bursts of Requests and reloads freed.
const EVERY: Duration = Duration::from_secs(30);

/// Trims after [`FIRST`], then every [`EVERY`], for as long as the runtime runs.
pub(crate) async fn keep_trimmed() {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FIRST, EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let released = trim();
        tracing::debug!(released, "free heap pages handed back to the kernel");
    }
}

/// Gives every whole free page of the heap back to the kernel; whether any
/// was.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn trim() -> bool {
    // SAFETY: `malloc_trim` has no preconditions: it takes each arena's lock
    // itself and only releases pages no allocation holds.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators (musl's) return free pages themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn trim() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Resident pages of this process, from `/proc/self/statm`.
    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    #[test]
    fn freed_memory_below_a_live_allocation_leaves_the_rss_once_trimmed() {
        const CHUNK: usize = 2048;
        const TOTAL: usize = 64 << 20;
        // Small blocks come from the heap, not mmap; written, so resident.
        let blocks: Vec<Vec<u8>> = (0..TOTAL / CHUNK).map(|i| vec![i as u8; CHUNK]).collect();
        // A live block above them: the heap cannot shrink from its top.
        let pin = vec![1u8; CHUNK];
        drop(blocks);
        let before = resident_bytes();
        assert!(trim(), "the freed blocks were free pages to give back");
        let after = resident_bytes();
        assert!(
            before.saturating_sub(after) >= (TOTAL / 2) as u64,
            "RSS {before} -> {after} bytes: the freed {TOTAL} bytes stayed resident"
        );
        assert_eq!(pin[0], 1);
    }
}
