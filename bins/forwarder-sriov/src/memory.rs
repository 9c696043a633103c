//! Handing the heap's free pages back to the kernel.
//!
//! glibc's heap shrinks only from its top, so memory freed below a live
//! allocation stays resident. Start-up's transients (the inventory, the
//! state snapshot's parse, the device lists sent to kubelet) peak at 7.3 MiB
//! of heap with 4096 VFs against 1.6 MiB live once they are freed (heaptrack),
//! and that difference stayed in the daemon's RSS for its whole life; a burst
//! of Requests did the same. `malloc_trim(0)` gives back every whole free page
//! of every arena (`MADV_DONTNEED`). The daemon looks once a second at its
//! anonymous resident memory (`/proc/self/statm`) and trims when that grew by
//! [`SLACK`] since the last trim: after start-up, after kubelet read a device
//! list (a 4096-device list is a few hundred KiB of transients), after a
//! burst of Requests. malloc's own count of free bytes cannot tell: a block
//! carved from pages a trim gave back makes them resident again, and once
//! freed it is counted free as before. A fixed timer left such garbage
//! resident until its next tick, for up to 30 s. Each trim walks the free
//! lists under the arena locks, which on a heap this size is well under a
//! millisecond.

use std::time::Duration;

/// When the first look is taken: start-up and both registrations (tens of
/// milliseconds) are over.
const FIRST: Duration = Duration::from_secs(1);

/// Then at this interval.
const EVERY: Duration = Duration::from_secs(1);

/// How much anonymous memory more than right after the last trim is worth a
/// trim.
const SLACK: u64 = 256 << 10;

/// Looks after [`FIRST`], then every [`EVERY`], for as long as the runtime
/// runs, and trims when [`worth_trimming`] says so.
pub(crate) async fn keep_trimmed() {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FIRST, EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut after_last: Option<u64> = None;
    loop {
        tick.tick().await;
        let before = anon_resident_bytes();
        if !worth_trimming(after_last, before) {
            // What was freed counts from the lowest mark since.
            after_last = after_last.map(|a| a.min(before));
            continue;
        }
        let released = trim();
        let after = anon_resident_bytes();
        after_last = Some(after);
        tracing::debug!(
            released,
            before,
            after,
            "free heap pages handed back to the kernel"
        );
    }
}

/// Whether `resident` bytes of anonymous memory, against `after_last` right
/// after the last trim (none yet: `None`), are worth a trim.
fn worth_trimming(after_last: Option<u64>, resident: u64) -> bool {
    after_last.is_none_or(|a| resident >= a.saturating_add(SLACK))
}

/// This process's resident pages that no file backs (heap, stacks), from
/// `/proc/self/statm` (resident minus shared); 0 when it cannot be read.
fn anon_resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let mut pages = statm
        .split_whitespace()
        .skip(1)
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (resident, shared) = (pages.next().unwrap_or(0), pages.next().unwrap_or(0));
    resident.saturating_sub(shared) * page_size()
}

#[allow(unsafe_code)]
fn page_size() -> u64 {
    // SAFETY: `sysconf` only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Below this, blocks come from the heap; from it up, each is a mapping of
/// its own, unmapped when freed (glibc's default, kept fixed by [`tune`]).
const MMAP_THRESHOLD: usize = 128 << 10;

/// Keeps large blocks out of the heap. glibc raises its mmap threshold to
/// the size of each mapped block freed, up to 32 MiB: after start-up freed
/// the state snapshot's text, every later block below that size (a device
/// list's encoding, the next snapshot) was carved from the heap, and what it
/// left between live blocks stayed resident until a trim. A threshold set
/// explicitly stays put. Runs before any thread; an operator's own
/// `MALLOC_MMAP_THRESHOLD_` or `GLIBC_TUNABLES` wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn tune() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    let threshold = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` only sets a malloc parameter; it is called before
    // the daemon starts its threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn tune() {}

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

    #[test]
    fn trims_first_then_only_once_anonymous_memory_grew_by_the_slack() {
        assert!(worth_trimming(None, 0), "the first look always trims");
        assert!(!worth_trimming(Some(1 << 20), 1 << 20));
        assert!(!worth_trimming(Some(1 << 20), (1 << 20) + SLACK - 1));
        assert!(worth_trimming(Some(1 << 20), (1 << 20) + SLACK));
    }

    /// The heap is the process's: the tests that measure it take turns.
    static HEAP: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_trim_is_due_once_blocks_freed_below_a_live_one_were_resident() {
        let _turn = HEAP.lock();
        let after_last = anon_resident_bytes();
        let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 1024]).collect();
        // Their size, so it comes from the top, above them, not from a hole.
        let pin = vec![1u8; 1024];
        drop(blocks);
        let now = anon_resident_bytes();
        assert!(
            worth_trimming(Some(after_last), now),
            "anonymous RSS {after_last} -> {now} bytes with 4 MiB freed below a live block"
        );
        assert!(trim());
        assert_eq!(pin[0], 1);
    }

    #[allow(unsafe_code)]
    fn mapped_blocks() -> usize {
        // SAFETY: `mallinfo2` has no preconditions and returns a plain struct.
        unsafe { libc::mallinfo2() }.hblks
    }

    #[test]
    fn large_blocks_stay_mapped_after_a_larger_one_was_freed() {
        let _turn = HEAP.lock();
        tune();
        // Freeing a mapped 8 MiB block would raise glibc's threshold above 1 MiB.
        drop(std::hint::black_box(vec![1u8; 8 << 20]));
        let before = mapped_blocks();
        let large = std::hint::black_box(vec![1u8; 1 << 20]);
        assert_eq!(
            mapped_blocks(),
            before + 1,
            "a 1 MiB block came from the heap: the mmap threshold moved"
        );
        drop(large);
    }

    #[test]
    fn freed_memory_below_a_live_allocation_leaves_the_rss_once_trimmed() {
        let _turn = HEAP.lock();
        const CHUNK: usize = 2048;
        const TOTAL: usize = 64 << 20;
        // Small blocks come from the heap, not mmap; written, so resident.
        let blocks: Vec<Vec<u8>> = (0..TOTAL / CHUNK).map(|i| vec![i as u8; CHUNK]).collect();
        // A live block above them: the heap cannot shrink from its top.
        let pin = vec![1u8; CHUNK];
        drop(blocks);
        let before = anon_resident_bytes();
        assert!(trim(), "the freed blocks were free pages to give back");
        let after = anon_resident_bytes();
        assert!(
            before.saturating_sub(after) >= (TOTAL / 2) as u64,
            "RSS {before} -> {after} bytes: the freed {TOTAL} bytes stayed resident"
        );
        assert_eq!(pin[0], 1);
    }
}
