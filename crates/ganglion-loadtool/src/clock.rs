//! The process-wide monotonic clock. Senders stamp `ts_ns` into message content with it and
//! receivers compare against it; both run in this process, so one `Instant` origin serves both
//! and no wall clock is involved.

use std::sync::OnceLock;
use std::time::Instant;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Fixes the origin; call first thing in `main` so that every later reading is positive.
pub fn init() {
    ORIGIN.get_or_init(Instant::now);
}

/// Nanoseconds since the origin.
pub fn now_ns() -> u64 {
    let elapsed = ORIGIN.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}
