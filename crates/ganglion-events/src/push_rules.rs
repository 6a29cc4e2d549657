//! The server-default push rules (spec "Predefined Rules"), built for a user. Clients read
//! them from `/pushrules/` and from `m.push_rules` account data in `/sync`.

use ruma::UserId;
use serde_json::{Value, json};

/// A server-default rule: `default` is true and every rule starts enabled but the master rule.
fn rule(rule_id: &str, conditions: Value, actions: Value) -> Value {
    json!({
        "rule_id": rule_id,
        "default": true,
        "enabled": rule_id != ".m.rule.master",
        "conditions": conditions,
        "actions": actions,
    })
}

fn event_match(key: &str, pattern: &str) -> Value {
    json!({ "kind": "event_match", "key": key, "pattern": pattern })
}

/// The server-default ruleset for `user_id`.
pub fn default_ruleset(user_id: &UserId) -> Value {
    let sound = |sound: &str| json!({ "set_tweak": "sound", "value": sound });
    let highlight = json!({ "set_tweak": "highlight" });
    let room_notification_permission = json!({ "kind": "sender_notification_permission", "key": "room" });
    let override_rules = vec![
        rule(".m.rule.master", json!([]), json!([])),
        rule(".m.rule.suppress_notices", json!([event_match("content.msgtype", "m.notice")]), json!([])),
        rule(
            ".m.rule.invite_for_me",
            json!([
                event_match("type", "m.room.member"),
                event_match("content.membership", "invite"),
                event_match("state_key", user_id.as_str()),
            ]),
            json!(["notify", sound("default")]),
        ),
        rule(".m.rule.member_event", json!([event_match("type", "m.room.member")]), json!([])),
        rule(
            ".m.rule.is_user_mention",
            json!([{ "kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": user_id }]),
            json!(["notify", sound("default"), highlight]),
        ),
        rule(
            ".m.rule.contains_display_name",
            json!([{ "kind": "contains_display_name" }]),
            json!(["notify", sound("default"), highlight]),
        ),
        rule(
            ".m.rule.is_room_mention",
            json!([
                { "kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true },
                room_notification_permission,
            ]),
            json!(["notify", highlight]),
        ),
        rule(
            ".m.rule.roomnotif",
            json!([event_match("content.body", "@room"), room_notification_permission]),
            json!(["notify", highlight]),
        ),
        rule(
            ".m.rule.tombstone",
            json!([event_match("type", "m.room.tombstone"), event_match("state_key", "")]),
            json!(["notify", highlight]),
        ),
        rule(".m.rule.reaction", json!([event_match("type", "m.reaction")]), json!([])),
        rule(
            ".m.rule.room.server_acl",
            json!([event_match("type", "m.room.server_acl"), event_match("state_key", "")]),
            json!([]),
        ),
        rule(
            ".m.rule.suppress_edits",
            json!([{ "kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace" }]),
            json!([]),
        ),
    ];
    let content_rules = vec![json!({
        "rule_id": ".m.rule.contains_user_name",
        "default": true,
        "enabled": true,
        "pattern": user_id.localpart(),
        "actions": ["notify", sound("default"), highlight],
    })];
    let two_members = json!({ "kind": "room_member_count", "is": "2" });
    let underride_rules = vec![
        rule(".m.rule.call", json!([event_match("type", "m.call.invite")]), json!(["notify", sound("ring")])),
        rule(
            ".m.rule.encrypted_room_one_to_one",
            json!([two_members, event_match("type", "m.room.encrypted")]),
            json!(["notify", sound("default")]),
        ),
        rule(
            ".m.rule.room_one_to_one",
            json!([two_members, event_match("type", "m.room.message")]),
            json!(["notify", sound("default")]),
        ),
        rule(".m.rule.message", json!([event_match("type", "m.room.message")]), json!(["notify"])),
        rule(".m.rule.encrypted", json!([event_match("type", "m.room.encrypted")]), json!(["notify"])),
    ];
    json!({
        "override": override_rules,
        "content": content_rules,
        "room": [],
        "sender": [],
        "underride": underride_rules,
    })
}
