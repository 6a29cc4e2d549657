use serde_json::json;

use super::{
    access::{HISTORY_FLOOR, HistoryRules, HistoryVisibility, point_token, stream_point},
    filter::{self, RoomEventFilter, type_matches},
    members::membership_wanted,
    messages::{Direction, page_range},
};

#[test]
fn pagination_tokens_are_points_of_the_events_stream() {
    assert_eq!(stream_point("p0"), Some(0));
    assert_eq!(stream_point("p42"), Some(42));
    assert_eq!(stream_point(&point_token(1234)), Some(1234));
    assert_eq!(stream_point("s1_17_2_3_4_1700000000000"), Some(17));
    for bad in ["", "p", "p-1", "p+1", "p1x", "q12", "42", "s1_1_2", "s2_1_2_3_4_5"] {
        assert_eq!(stream_point(bad), None, "{bad}");
    }
    // History fetched from other servers sits below 0.
    assert_eq!(point_token(-5), "n5");
    assert_eq!(stream_point("n5"), Some(-5));
    assert_eq!(stream_point("n"), None);
}

#[test]
fn page_range_reads_back_from_or_forward_after_the_point() {
    // Backwards from p10 reads positions <= 10; forwards from p10 reads > 10.
    assert_eq!(page_range(Direction::Backwards, Some(10), None, 100), (HISTORY_FLOOR, 10));
    assert_eq!(page_range(Direction::Forwards, Some(10), None, 100), (10, 100));
    // Without `from`, the edge of the visible history; `to` bounds the other side.
    assert_eq!(page_range(Direction::Backwards, None, Some(3), 100), (3, 100));
    assert_eq!(page_range(Direction::Forwards, None, Some(50), 100), (HISTORY_FLOOR, 50));
    // Nothing past the ceiling (the head, or a former member's leave).
    assert_eq!(page_range(Direction::Backwards, Some(500), None, 100), (HISTORY_FLOOR, 100));
    assert_eq!(page_range(Direction::Forwards, Some(5), Some(500), 100), (5, 100));
}

#[test]
fn consecutive_pages_cover_every_position_once() {
    // Simulates backward pages of 3 over positions 1..=10: each page's end is the point below
    // its last event, which is where the next page starts.
    let mut seen: Vec<i64> = Vec::new();
    let mut from = None;
    loop {
        let (after, up_to) = page_range(Direction::Backwards, from, None, 10);
        // The stream holds events at 1..=10 only.
        let page: Vec<i64> = (after.max(0) + 1..=up_to).rev().take(3).collect();
        seen.extend(&page);
        match page.last() {
            Some(last) if *last > 1 => from = Some(last - 1),
            _ => break,
        }
    }
    assert_eq!(seen, (1..=10).rev().collect::<Vec<_>>());
}

#[test]
fn type_patterns_match_with_wildcards() {
    assert!(type_matches("m.room.message", "m.room.message"));
    assert!(!type_matches("m.room.message", "m.room.message.feedback"));
    assert!(type_matches("m.room.*", "m.room.message"));
    assert!(type_matches("m.*", "m.room.member"));
    assert!(type_matches("*", "anything"));
    assert!(type_matches("*.member", "m.room.member"));
    assert!(type_matches("m.*.mem*", "m.room.member"));
    assert!(!type_matches("m.room.*", "m.call.invite"));
    assert!(!type_matches("*.member", "m.room.members"));
    assert!(!type_matches("a*a", "a"));
}

#[test]
fn event_filter_excludes_before_it_includes() {
    let filter = filter::parse(
        &json!({
            "types": ["m.room.*"],
            "not_types": ["m.room.member"],
            "senders": ["@alice:test", "@bob:test"],
            "not_senders": ["@bob:test"],
        })
        .to_string(),
    )
    .unwrap();
    assert!(filter.allows_event("m.room.message", Some("@alice:test"), false));
    assert!(!filter.allows_event("m.room.member", Some("@alice:test"), false));
    assert!(!filter.allows_event("m.reaction", Some("@alice:test"), false));
    assert!(!filter.allows_event("m.room.message", Some("@bob:test"), false));
    assert!(!filter.allows_event("m.room.message", Some("@carol:test"), false));
    assert!(!filter.lazy_load_members);

    let urls = filter::parse(r#"{"contains_url": true, "lazy_load_members": true}"#).unwrap();
    assert!(urls.needs_content() && urls.lazy_load_members);
    assert!(urls.allows_event("m.room.message", Some("@carol:test"), true));
    assert!(!urls.allows_event("m.room.message", Some("@carol:test"), false));

    let everything = RoomEventFilter::default();
    assert!(everything.allows_event("x", Some("@anyone:test"), false) && !everything.needs_content());
    assert!(filter::parse("not json").is_err());
    assert!(filter::parse(r#"{"types": "m.room.message"}"#).is_err());
}

#[test]
fn room_filter_lists() {
    let filter = filter::parse(r#"{"rooms": ["!a:test", "!b:test"], "not_rooms": ["!b:test"]}"#).unwrap();
    assert!(filter.allows_room("!a:test"));
    assert!(!filter.allows_room("!b:test"));
    assert!(!filter.allows_room("!c:test"));
}

fn rules(memberships: &[(i64, &str)], visibilities: &[(i64, HistoryVisibility)]) -> HistoryRules {
    HistoryRules::new(memberships.iter().map(|(at, m)| (*at, m.to_string())).collect(), visibilities.to_vec())
}

#[test]
fn shared_history_is_visible_to_later_joiners_until_they_leave() {
    // Joined at 10, left at 20, in a `shared` room.
    let rules = rules(&[(10, "join"), (20, "leave")], &[(2, HistoryVisibility::Shared)]);
    assert!(rules.can_see(5, false), "history before the join");
    assert!(rules.can_see(10, true), "their own join");
    assert!(rules.can_see(15, false));
    assert!(rules.can_see(20, true), "their own leave");
    assert!(!rules.can_see(21, false), "nothing after the leave");
    assert_eq!(rules.visible_up_to(), Some(20));
}

#[test]
fn joined_visibility_hides_what_came_before_the_join() {
    let rules = rules(&[(10, "join")], &[(2, HistoryVisibility::Joined)]);
    assert!(!rules.can_see(5, false));
    assert!(rules.can_see(10, true), "their own join, by the state after it");
    assert!(!rules.can_see(10, false));
    assert!(rules.can_see(11, false));
    assert_eq!(rules.visible_up_to(), None, "joined users see new events");
}

#[test]
fn invited_visibility_shows_events_from_the_invite() {
    let rules = rules(&[(10, "invite")], &[(2, HistoryVisibility::Invited)]);
    assert!(!rules.can_see(9, false));
    assert!(rules.can_see(11, false));
    assert_eq!(rules.visible_up_to(), None);
}

#[test]
fn world_readable_periods_are_visible_to_anyone() {
    let rules = rules(&[], &[(2, HistoryVisibility::WorldReadable), (8, HistoryVisibility::Joined)]);
    assert!(rules.can_see(5, false));
    assert!(rules.can_see(8, false), "the change itself, by the state before it");
    assert!(!rules.can_see(9, false));
    // Positions are only skipped wholesale when nothing after them can be visible.
    assert_eq!(rules.visible_up_to(), None);

    let readable_later = rules_with_leave_then_world_readable();
    assert!(readable_later.can_see(31, false));
    assert_eq!(readable_later.visible_up_to(), None, "a world-readable room stays readable after a leave");
}

fn rules_with_leave_then_world_readable() -> HistoryRules {
    rules(
        &[(10, "join"), (20, "leave")],
        &[(2, HistoryVisibility::Shared), (30, HistoryVisibility::WorldReadable)],
    )
}

#[test]
fn rejoining_reveals_shared_history_of_the_gap() {
    let rules = rules(&[(10, "join"), (20, "leave"), (40, "join")], &[(2, HistoryVisibility::Shared)]);
    assert!(rules.can_see(30, false));
    assert_eq!(rules.visible_up_to(), None);
}

#[test]
fn unknown_history_visibility_counts_as_shared() {
    assert_eq!(HistoryVisibility::parse(None), HistoryVisibility::Shared);
    assert_eq!(HistoryVisibility::parse(Some("sometimes")), HistoryVisibility::Shared);
    assert_eq!(HistoryVisibility::parse(Some("world_readable")), HistoryVisibility::WorldReadable);
}

#[test]
fn membership_filters_of_members() {
    assert!(membership_wanted("join", None, None));
    assert!(membership_wanted("join", Some("join"), None));
    assert!(!membership_wanted("leave", Some("join"), None));
    assert!(!membership_wanted("join", None, Some("join")));
    assert!(membership_wanted("ban", None, Some("join")));
    // Both given: an "or", as the spec says.
    assert!(membership_wanted("invite", Some("join"), Some("leave")));
    assert!(!membership_wanted("leave", Some("join"), Some("leave")));
}

#[test]
fn directory_tokens_are_offsets() {
    assert_eq!(ganglion_state::directory::directory_offset("o0"), Some(0));
    assert_eq!(ganglion_state::directory::directory_offset("o25"), Some(25));
    for bad in ["", "o", "o-1", "25", "p25"] {
        assert_eq!(ganglion_state::directory::directory_offset(bad), None, "{bad}");
    }
}

#[test]
fn plain_topic_prefers_the_text_plain_entry() {
    let rich = json!({ "topic": "old", "m.topic": [
        { "body": "<b>hi</b>", "mimetype": "text/html" },
        { "body": "hi" },
    ]});
    assert_eq!(ganglion_state::directory::plain_topic(&rich).as_deref(), Some("hi"));
    assert_eq!(
        ganglion_state::directory::plain_topic(&json!({ "topic": "plain" })).as_deref(),
        Some("plain")
    );
    assert_eq!(ganglion_state::directory::plain_topic(&json!({})), None);
}
