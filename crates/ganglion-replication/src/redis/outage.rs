//! One loss of Redis, from the first failure to the first success after it: logged once when it
//! starts and once, with a summary, when it ends, with reconnects backing off in between. A
//! Redis outage can last hours; a line per retry would bury everything else in the log.

use std::{
    fmt::Display,
    time::{Duration, Instant},
};

/// The first retry comes this soon after a failure; each failure doubles the wait up to
/// [`MAX_BACKOFF`]. Workers read the database meanwhile, so a slower retry costs only latency
/// once Redis is back, never data.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(crate) struct Outage {
    /// Who is talking to Redis, for the log lines (`publisher`, `follower`).
    role: &'static str,
    started: Option<Instant>,
    failures: u64,
    /// Entries the publisher could not send while Redis was down.
    dropped: u64,
    backoff: Duration,
    next_attempt: Instant,
}

impl Outage {
    pub(crate) fn new(role: &'static str) -> Outage {
        Outage {
            role,
            started: None,
            failures: 0,
            dropped: 0,
            backoff: FIRST_BACKOFF,
            next_attempt: Instant::now(),
        }
    }

    /// Whether the backoff allows another attempt at `now`.
    pub(crate) fn may_retry(&self, now: Instant) -> bool {
        now >= self.next_attempt
    }

    /// Records a failed attempt. Only the first failure of an outage is logged.
    pub(crate) fn failed(&mut self, now: Instant, what: &str, error: &dyn Display) {
        if self.started.is_none() {
            self.started = Some(now);
            self.failures = 0;
            self.dropped = 0;
            self.backoff = FIRST_BACKOFF;
            tracing::warn!(
                component = self.role,
                %error,
                "{what}; workers read the database until Redis is back (retrying with backoff, \
                 logged again when it recovers)"
            );
        } else {
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
        self.failures += 1;
        self.next_attempt = now + self.backoff;
    }

    /// Counts stream entries that could not be published during the outage.
    pub(crate) fn dropped(&mut self, entries: u64) {
        self.dropped += entries;
    }

    /// Records a success; ends the outage (and logs its summary) if there was one. Returns how
    /// long it lasted.
    pub(crate) fn recovered(&mut self, now: Instant) -> Option<Duration> {
        let started = self.started.take()?;
        let down_for = now.saturating_duration_since(started);
        tracing::info!(
            component = self.role,
            down_for_ms = down_for.as_millis() as u64,
            failed_attempts = self.failures,
            unpublished_entries = self.dropped,
            "Redis is reachable again after {:.1} s and {} failed attempts",
            down_for.as_secs_f64(),
            self.failures
        );
        self.backoff = FIRST_BACKOFF;
        self.next_attempt = now;
        Some(down_for)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_up_to_the_cap_and_resets_on_recovery() {
        let mut outage = Outage::new("test");
        let start = Instant::now();
        assert!(outage.started.is_none());
        assert!(outage.may_retry(start));
        outage.failed(start, "cannot reach Redis", &"refused");
        assert!(outage.started.is_some());
        assert!(!outage.may_retry(start + Duration::from_millis(100)));
        assert!(outage.may_retry(start + FIRST_BACKOFF));
        let mut now = start;
        for _ in 0..20 {
            now += Duration::from_secs(1);
            outage.failed(now, "cannot reach Redis", &"refused");
        }
        assert_eq!(outage.failures, 21);
        assert!(!outage.may_retry(now + MAX_BACKOFF - Duration::from_millis(1)));
        assert!(outage.may_retry(now + MAX_BACKOFF));
        let down_for = outage.recovered(now + Duration::from_secs(1)).unwrap();
        assert_eq!(down_for, Duration::from_secs(21));
        assert!(outage.started.is_none());
        assert!(outage.recovered(now + Duration::from_secs(2)).is_none());
        // The next outage starts from the short backoff again.
        outage.failed(now, "cannot reach Redis", &"refused");
        assert!(outage.may_retry(now + FIRST_BACKOFF));
    }
}
