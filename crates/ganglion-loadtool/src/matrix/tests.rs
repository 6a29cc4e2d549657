use std::time::Duration;

use reqwest::StatusCode;

use super::{ErrorCounts, InteractiveAuth, encode_component, rate_limit_hint};

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

#[test]
fn a_429_names_its_wait_in_the_body_or_the_header() {
    let body = br#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":1234}"#;
    assert_eq!(rate_limit_hint(body, Some("9")), Some(Duration::from_millis(1234)));
    let bare = br#"{"errcode":"M_LIMIT_EXCEEDED"}"#;
    assert_eq!(rate_limit_hint(bare, Some(" 2 ")), Some(Duration::from_secs(2)));
    assert_eq!(rate_limit_hint(bare, None), None);
    assert_eq!(rate_limit_hint(b"not json", Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    assert_eq!(rate_limit_hint(br#"{"retry_after_ms":0}"#, None), Some(Duration::ZERO));
}

fn challenge(body: serde_json::Value) -> Result<String, String> {
    serde_json::from_value::<InteractiveAuth>(body).unwrap().dummy_session()
}

#[test]
fn registration_completes_the_dummy_stage_when_a_flow_offers_it_alone() {
    // Synapse with registration open and no verification, and Ganglion.
    let synapse = serde_json::json!({
        "session": "abc",
        "flows": [{ "stages": ["m.login.dummy"] }],
        "params": {},
    });
    assert_eq!(challenge(synapse), Ok("abc".to_owned()));
    assert_eq!(challenge(serde_json::json!({ "session": "s" })), Ok("s".to_owned()));
    let mixed = serde_json::json!({
        "session": "t",
        "flows": [{ "stages": ["m.login.recaptcha"] }, { "stages": ["m.login.dummy"] }],
    });
    assert_eq!(challenge(mixed), Ok("t".to_owned()));

    let verified = serde_json::json!({
        "session": "u",
        "flows": [{ "stages": ["m.login.email.identity"] }, { "stages": ["m.login.recaptcha", "m.login.dummy"] }],
    });
    let error = challenge(verified).unwrap_err();
    assert!(
        error.contains("m.login.email.identity")
            && error.contains("enable_registration_without_verification")
    );
    assert!(challenge(serde_json::json!({ "flows": [] })).is_err());
}
