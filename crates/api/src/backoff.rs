//! Exponential backoff between attempts to reach a gRPC peer: kubelet for
//! the device plugins, the NSM registry for the forwarder. One type, so both
//! clients retry the same way.

use std::time::Duration;

/// Waits that start at `initial` and double up to `max`; [`Backoff::reset`]
/// after a success starts again from `initial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Backoff from `initial` doubling up to `max` (`max` below `initial`
    /// is taken as `initial`).
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            // Ord::max is not const.
            max: if max.as_nanos() < initial.as_nanos() {
                initial
            } else {
                max
            },
            current: initial,
        }
    }

    /// The first wait, also the floor the callers use for other pauses.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The wait before the next attempt; the one after it is doubled.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let waits: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
        assert_eq!(Backoff::new(ms(100), ms(10)).next_delay(), ms(100));
        assert_eq!(Backoff::new(ms(100), ms(10)).max, ms(100));
    }
}
