use ganglion_storage::streams::ReceiptRow;
use ganglion_types::{ErrorClass, StreamPosition, SyncToken};
use serde_json::json;

use crate::{
    compute::next_token,
    ephemeral::receipt_event,
    filter::{DEFAULT_TIMELINE_LIMIT, EventFormat, Filter, MAX_TIMELINE_LIMIT, type_matches},
};

#[test]
fn empty_filter_allows_everything() {
    let filter = Filter::parse("{}").unwrap();
    assert!(filter.allows_room("!a:x"));
    assert_eq!(filter.timeline_limit(), DEFAULT_TIMELINE_LIMIT);
    assert!(!filter.room.timeline.filters_events());
    assert!(filter.room.timeline.allows_event("m.room.message", Some("@a:x"), false));
    assert!(!filter.room.include_leave);
    assert_eq!(filter.event_format, EventFormat::Client);
}

#[test]
fn filter_parses_every_section() {
    let filter = Filter::parse(
        &json!({
            "event_format": "federation",
            "event_fields": ["content.body"],
            "account_data": { "types": ["m.push_rules"] },
            "presence": { "not_types": ["*"] },
            "room": {
                "rooms": ["!a:x"],
                "not_rooms": ["!b:x"],
                "include_leave": true,
                "timeline": { "limit": 3, "types": ["m.room.*"], "not_senders": ["@spam:x"] },
                "state": { "lazy_load_members": true, "include_redundant_members": true },
                "ephemeral": { "not_types": ["m.receipt"] },
                "account_data": { "types": ["m.tag"] },
            },
        })
        .to_string(),
    )
    .unwrap();
    assert_eq!(filter.event_format, EventFormat::Federation);
    assert!(filter.room.include_leave);
    assert_eq!(filter.timeline_limit(), 3);
    assert!(filter.room.state.lazy_load_members && filter.room.state.include_redundant_members);
    assert!(filter.allows_room("!a:x"));
    assert!(!filter.allows_room("!b:x"), "not_rooms");
    assert!(!filter.allows_room("!c:x"), "not in rooms");
    assert!(filter.account_data.allows("m.push_rules", None));
    assert!(!filter.account_data.allows("m.direct", None));
    assert!(filter.room.ephemeral.allows_type("m.typing"));
    assert!(!filter.room.ephemeral.allows_type("m.receipt"));
    assert!(filter.room.account_data.allows_type("m.tag"));
}

#[test]
fn timeline_filter_matches_types_and_senders() {
    let filter = Filter::parse(
        r#"{"room":{"timeline":{"types":["m.room.*"],"not_types":["m.room.member"],"senders":["@a:x","@b:x"],"not_senders":["@b:x"]}}}"#,
    )
    .unwrap();
    let timeline = &filter.room.timeline;
    assert!(timeline.filters_events());
    assert!(timeline.allows_event("m.room.message", Some("@a:x"), false));
    assert!(!timeline.allows_event("m.room.member", Some("@a:x"), false), "not_types wins over types");
    assert!(!timeline.allows_event("m.room.message", Some("@b:x"), false), "not_senders wins over senders");
    assert!(!timeline.allows_event("m.room.message", Some("@c:x"), false), "not in senders");
    assert!(!timeline.allows_event("m.reaction", Some("@a:x"), false), "not in types");
    assert!(timeline.allows_event("m.room.name", None, false), "events without sender pass sender lists");
}

#[test]
fn contains_url_filters_on_the_content() {
    let with = Filter::parse(r#"{"room":{"timeline":{"contains_url":true}}}"#).unwrap();
    assert!(with.room.timeline.filters_events());
    assert!(with.room.timeline.allows_event("m.room.message", Some("@a:x"), true));
    assert!(!with.room.timeline.allows_event("m.room.message", Some("@a:x"), false));
    let without = Filter::parse(r#"{"room":{"timeline":{"contains_url":false}}}"#).unwrap();
    assert!(without.room.timeline.allows_event("m.room.message", Some("@a:x"), false));
    assert!(!without.room.timeline.allows_event("m.room.message", Some("@a:x"), true));
}

#[test]
fn section_room_lists_apply_per_section() {
    let filter =
        Filter::parse(r#"{"room":{"timeline":{"rooms":["!a:x"]},"state":{"not_rooms":["!a:x"]}}}"#).unwrap();
    assert!(filter.allows_room("!b:x"), "the top-level list is absent");
    assert!(filter.room.timeline.allows_room("!a:x"));
    assert!(!filter.room.timeline.allows_room("!b:x"));
    assert!(!filter.room.state.allows_room("!a:x"));
    assert!(filter.room.state.allows_room("!b:x"));
}

#[test]
fn null_fields_mean_absent() {
    let filter = Filter::parse(
        r#"{"room":{"timeline":{"limit":null,"types":null,"not_types":null},"state":null,"rooms":null},"presence":null}"#,
    )
    .unwrap();
    assert_eq!(filter.timeline_limit(), DEFAULT_TIMELINE_LIMIT);
    assert!(!filter.room.timeline.filters_events());
    assert!(filter.allows_room("!a:x"));
}

#[test]
fn timeline_limit_is_capped() {
    let filter = Filter::parse(r#"{"room":{"timeline":{"limit":1000000}}}"#).unwrap();
    assert_eq!(filter.timeline_limit(), MAX_TIMELINE_LIMIT);
    let filter = Filter::parse(r#"{"room":{"timeline":{"limit":0}}}"#).unwrap();
    assert_eq!(filter.timeline_limit(), 0);
}

#[test]
fn bad_filters_are_rejected_with_the_right_errcode() {
    for text in ["{", "{not json}", "{\"room\": }"] {
        assert_eq!(Filter::parse(text).unwrap_err().class, ErrorClass::InvalidParam, "{text}");
    }
    for text in [
        "[]",
        "\"room\"",
        r#"{"room":[]}"#,
        r#"{"room":{"timeline":{"limit":-1}}}"#,
        r#"{"room":{"timeline":{"limit":"ten"}}}"#,
        r#"{"room":{"timeline":{"types":"m.room.message"}}}"#,
        r#"{"room":{"include_leave":"yes"}}"#,
        r#"{"event_format":"xml"}"#,
    ] {
        assert_eq!(Filter::parse(text).unwrap_err().class, ErrorClass::BadJson, "{text}");
    }
}

#[test]
fn type_patterns_use_star_as_wildcard() {
    assert!(type_matches("m.room.message", "m.room.message"));
    assert!(!type_matches("m.room.message", "m.room.message.extra"));
    assert!(!type_matches("m.room", "m.room.message"));
    assert!(type_matches("m.room.*", "m.room.message"));
    assert!(type_matches("m.room.*", "m.room."));
    assert!(!type_matches("m.room.*", "m.roomx"));
    assert!(type_matches("*", "anything"));
    assert!(type_matches("*.message", "m.room.message"));
    assert!(type_matches("m.*.message", "m.room.message"));
    assert!(!type_matches("m.*.message", "m.room.member"));
    assert!(type_matches("m.*a*e", "m.room.message"));
    assert!(!type_matches("m.*e*e*e*e", "m.room.message"));
}

fn token(events: i64, typing: i64, epoch: u64) -> SyncToken {
    SyncToken {
        events: StreamPosition(events),
        receipts: StreamPosition(1),
        typing: StreamPosition(typing),
        account_data: StreamPosition(1),
        typing_epoch: epoch,
        ..SyncToken::default()
    }
}

#[test]
fn next_token_never_goes_behind_since() {
    let current = token(10, 5, 7);
    assert_eq!(next_token(current, None), current);
    assert_eq!(next_token(current, Some(&token(4, 2, 7))), current);
    assert_eq!(next_token(current, Some(&token(12, 6, 7))), token(12, 6, 7), "a token from further ahead");
    assert_eq!(
        next_token(current, Some(&token(4, 9, 6))),
        current,
        "typing positions of another epoch are not comparable"
    );
}

fn receipt(user: &str, kind: &str, event: &str, thread: &str) -> ReceiptRow {
    ReceiptRow {
        room_id: "!r:x".into(),
        user_id: user.into(),
        receipt_type: kind.into(),
        thread_id: thread.into(),
        event_id: event.into(),
        ts: 42,
        stream_pos: 1,
    }
}

#[test]
fn receipts_are_aggregated_and_private_ones_kept_for_their_owner() {
    let rows = [
        receipt("@a:x", "m.read", "$1", ""),
        receipt("@b:x", "m.read", "$1", "main"),
        receipt("@b:x", "m.read.private", "$2", ""),
    ];
    let seen_by_a = receipt_event(&rows, "@a:x").unwrap();
    assert_eq!(
        seen_by_a,
        json!({ "type": "m.receipt", "content": { "$1": { "m.read": {
            "@a:x": { "ts": 42 },
            "@b:x": { "ts": 42, "thread_id": "main" },
        } } } })
    );
    let seen_by_b = receipt_event(&rows, "@b:x").unwrap();
    assert_eq!(seen_by_b["content"]["$2"]["m.read.private"]["@b:x"]["ts"], 42);
    assert!(receipt_event(&rows[2..], "@a:x").is_none(), "only a private receipt of someone else");
}
