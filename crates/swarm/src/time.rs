//! The engine's own clock type: milliseconds on the host's monotonic clock.

use std::ops::{Add, Sub};

/// A point on the host's monotonic clock, in milliseconds since an epoch the host
/// chooses (a browser's `performance.now()`, a tokio `Instant` offset, or the
/// simulator's virtual time). The engine only compares and subtracts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    pub const ZERO: Millis = Millis(0);
    pub const NEVER: Millis = Millis(u64::MAX);

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<u64> for Millis {
    type Output = Millis;
    fn add(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}

impl Sub<u64> for Millis {
    type Output = Millis;
    fn sub(self, ms: u64) -> Millis {
        Millis(self.0.saturating_sub(ms))
    }
}
