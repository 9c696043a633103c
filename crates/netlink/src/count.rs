//! Counting the netlink requests this crate sends, at the socket: the figure the plumbing is
//! judged by (one kernel round trip per message) and the one its kernel tests pin down.

use std::sync::atomic::{AtomicU64, Ordering};

/// Netlink request messages sent, split by what they ask of the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCounts {
    /// Messages that change something (`RTM_NEW*`, `RTM_DEL*`, `RTM_SET*`).
    pub changes: u64,
    /// Messages that only read (`RTM_GET*`, dumps included).
    pub reads: u64,
}

impl MessageCounts {
    /// Reads and changes together.
    pub fn total(&self) -> u64 {
        self.changes + self.reads
    }

    /// What was sent between `earlier` and `self` (two readings of the same counter).
    pub fn since(&self, earlier: MessageCounts) -> MessageCounts {
        MessageCounts {
            changes: self.changes.saturating_sub(earlier.changes),
            reads: self.reads.saturating_sub(earlier.reads),
        }
    }
}

impl std::fmt::Display for MessageCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages ({} changes, {} reads)",
            self.total(),
            self.changes,
            self.reads
        )
    }
}

/// A counter the sockets of one [`RtNetlink`](crate::RtNetlink) add to; every count also goes
/// to the process-wide one. Relaxed atomics: a count is a tally, not a synchronisation point.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    changes: AtomicU64,
    reads: AtomicU64,
}

static PROCESS: Counter = Counter {
    changes: AtomicU64::new(0),
    reads: AtomicU64::new(0),
};

/// `nlmsghdr`: length (u32), type (u16), flags, sequence, port.
const HEADER_LEN: usize = 16;
/// rtnetlink message types come in fours from `RTM_BASE`: NEW, DEL, GET, SET.
const RTM_BASE: u16 = 16;

impl Counter {
    /// Counts the messages in one datagram as it leaves (netlink-proto sends one per datagram,
    /// but a batch is walked all the same).
    pub(crate) fn count(&self, datagram: &[u8]) {
        let mut rest = datagram;
        while let (Some(len), Some(kind)) = (
            rest.get(0..4).and_then(|b| <[u8; 4]>::try_from(b).ok()),
            rest.get(4..6).and_then(|b| <[u8; 2]>::try_from(b).ok()),
        ) {
            let len = u32::from_ne_bytes(len) as usize;
            let kind = u16::from_ne_bytes(kind);
            let read = kind >= RTM_BASE && (kind - RTM_BASE) % 4 == 2;
            for counter in [self, &PROCESS] {
                let slot = if read {
                    &counter.reads
                } else {
                    &counter.changes
                };
                slot.fetch_add(1, Ordering::Relaxed);
            }
            // Messages are padded to four bytes; a malformed length ends the walk.
            let step = (len.max(HEADER_LEN) + 3) & !3;
            rest = rest.get(step..).unwrap_or_default();
        }
    }

    pub(crate) fn snapshot(&self) -> MessageCounts {
        MessageCounts {
            changes: self.changes.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
        }
    }
}

/// Every netlink request this process has sent through this crate, for operators' metrics and
/// benchmarks that cannot reach the [`RtNetlink`](crate::RtNetlink) doing the work.
pub fn process_messages() -> MessageCounts {
    PROCESS.snapshot()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32, kind: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.resize(len as usize, 0);
        m
    }

    #[test]
    fn reads_and_changes_are_told_apart_in_a_batch() {
        let counter = Counter::default();
        // RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR with a 2-byte tail padded to 4, RTM_GETROUTE.
        let mut batch = header(32, 16);
        batch.extend(header(16, 18));
        let mut addr = header(18, 20);
        addr.resize(20, 0);
        batch.extend(addr);
        batch.extend(header(16, 26));
        counter.count(&batch);
        assert_eq!(
            counter.snapshot(),
            MessageCounts {
                changes: 2,
                reads: 2
            }
        );
        assert!(process_messages().total() >= 4);
    }

    #[test]
    fn a_truncated_datagram_counts_what_it_holds_and_stops() {
        let counter = Counter::default();
        let mut d = header(16, 17);
        d.extend_from_slice(&[1, 2, 3]);
        counter.count(&d);
        assert_eq!(counter.snapshot().total(), 1);
        assert_eq!(
            counter.snapshot().since(MessageCounts {
                changes: 5,
                reads: 0
            }),
            MessageCounts::default()
        );
    }
}
