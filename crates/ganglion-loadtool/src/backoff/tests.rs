use std::time::Duration;

use super::{Backoff, FIRST, MAX, after_rate_limit};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[test]
fn without_a_hint_the_wait_doubles_from_100_ms_up_to_5_s() {
    let waits: Vec<Duration> = (1..=8).map(|n| after_rate_limit(n, None)).collect();
    assert_eq!(waits, [ms(100), ms(200), ms(400), ms(800), ms(1600), ms(3200), MAX, MAX]);
    assert_eq!(after_rate_limit(0, None), FIRST);
    assert_eq!(after_rate_limit(u32::MAX, None), MAX);
}

#[test]
fn the_servers_hint_is_a_minimum_and_never_a_license_to_spin() {
    // A longer wait than ours is honoured, even beyond our own cap.
    assert_eq!(after_rate_limit(1, Some(ms(750))), ms(750));
    assert_eq!(after_rate_limit(1, Some(Duration::from_secs(30))), Duration::from_secs(30));
    // `retry_after_ms: 0` or a tiny hint still waits the back-off.
    assert_eq!(after_rate_limit(1, Some(Duration::ZERO)), FIRST);
    assert_eq!(after_rate_limit(3, Some(ms(5))), ms(400));
}

#[test]
fn a_series_of_429s_backs_off_and_any_other_answer_ends_it() {
    let mut backoff = Backoff::default();
    assert_eq!(backoff.rate_limited(None), ms(100));
    assert_eq!(backoff.rate_limited(Some(ms(1))), ms(200));
    assert_eq!(backoff.rate_limited(None), ms(400));
    backoff.reset();
    assert_eq!(backoff.rate_limited(None), ms(100));
}
