//! How long to wait after a 429 before trying again. Pure arithmetic, so that the rule is tested
//! on its own: the loops that use it (`/sync`, sends, to-device sends, the keys clients and
//! setup) only count the 429s and sleep.
//!
//! The rule: never sooner than the server asked (`retry_after_ms` in the body, or `Retry-After`),
//! and never sooner than an exponential back-off over the 429s in a row: 100 ms after the first,
//! doubling up to 5 s. A server that answers `retry_after_ms: 0` (or nothing) is therefore never
//! spun on, and one that keeps refusing is asked less and less often.

use std::time::Duration;

/// The wait after the first 429 of a series.
pub const FIRST: Duration = Duration::from_millis(100);
/// The longest back-off of our own; a longer wait asked for by the server is still honoured.
pub const MAX: Duration = Duration::from_secs(5);

/// The wait after the `consecutive`-th 429 in a row (1 for the first; 0 is taken as 1), given
/// what the server asked for, if anything.
pub fn after_rate_limit(consecutive: u32, asked: Option<Duration>) -> Duration {
    let doublings = consecutive.saturating_sub(1).min(16);
    let own = FIRST.saturating_mul(1_u32 << doublings).min(MAX);
    asked.map_or(own, |asked| asked.max(own))
}

/// Counts the 429s in a row of one loop and says how long to wait after each.
#[derive(Debug, Default, Clone, Copy)]
pub struct Backoff {
    consecutive: u32,
}

impl Backoff {
    /// Another 429: the wait before the next attempt.
    pub fn rate_limited(&mut self, asked: Option<Duration>) -> Duration {
        self.consecutive = self.consecutive.saturating_add(1);
        after_rate_limit(self.consecutive, asked)
    }

    /// Any answer but a 429 ends the series.
    pub fn reset(&mut self) {
        self.consecutive = 0;
    }
}

#[cfg(test)]
mod tests;
