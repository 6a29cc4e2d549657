use reqwest::StatusCode;

use super::{ErrorCounts, encode_component};

#[test]
fn room_ids_and_tokens_are_encoded() {
    assert_eq!(encode_component("!abc:example.org"), "%21abc%3Aexample.org");
    assert_eq!(encode_component("s72_4 5/x"), "s72_4%205%2Fx");
    assert_eq!(encode_component("run.0.17"), "run.0.17");
}

#[test]
fn error_counts_keep_every_failure_and_the_first_message() {
    let mut counts = ErrorCounts::default();
    counts.failed(StatusCode::INTERNAL_SERVER_ERROR, "boom");
    counts.failed(StatusCode::FORBIDDEN, "no");
    let mut other = ErrorCounts::default();
    other.failed(StatusCode::INTERNAL_SERVER_ERROR, "again");
    other.rate_limited = 3;
    counts.merge(other);
    assert_eq!(counts.by_status.get(&500), Some(&2));
    assert_eq!(counts.by_status.get(&403), Some(&1));
    assert_eq!(counts.rate_limited, 3);
    assert_eq!(counts.failures(), 3);
    assert_eq!(counts.first.as_deref(), Some("500 Internal Server Error: boom"));
}
