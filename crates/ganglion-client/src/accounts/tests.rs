use std::time::{Duration, Instant};

use ganglion_config::Config;
use ganglion_events::ruma::{OwnedUserId, UserId};
use ganglion_rpc::ProfileField;
use ganglion_types::ErrorClass;
use serde_json::{Map, Value, json};

use ganglion_events::push_rules::default_ruleset;

use super::{
    discovery::{base_url, capabilities_of},
    filters::check_filter_shape,
    login::{UserIdentifier, identified_user},
    profile::new_field_value,
    register::new_user_id,
    uia::{DUMMY, Flow, PASSWORD, UiaSessions, challenge, flow_is_complete, stage_is_next},
};

fn user(id: &str) -> OwnedUserId {
    UserId::parse(id).unwrap()
}

fn class_of<T: std::fmt::Debug>(result: Result<T, ganglion_http::MatrixError>) -> ErrorClass {
    result.unwrap_err().class
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

// Usernames.

#[test]
fn usernames_map_to_lowercase_user_ids() {
    assert_eq!(new_user_id("alice", "localhost").unwrap(), "@alice:localhost");
    assert_eq!(new_user_id("Alice", "localhost").unwrap(), "@alice:localhost");
    assert_eq!(
        new_user_id("a.b_c=d-e/f+g9", "example.org:8448").unwrap(),
        "@a.b_c=d-e/f+g9:example.org:8448"
    );
}

#[test]
fn usernames_outside_the_grammar_are_invalid() {
    for username in ["", "Not Valid!", "al ice", "alice:localhost", "@alice", "ålice", "a#b", "a\u{0}b"] {
        assert_eq!(class_of(new_user_id(username, "localhost")), ErrorClass::InvalidUsername, "{username:?}");
    }
    let longest = "a".repeat(255 - "@:localhost".len());
    assert!(new_user_id(&longest, "localhost").is_ok());
    assert_eq!(class_of(new_user_id(&format!("{longest}a"), "localhost")), ErrorClass::InvalidUsername);
}

// Login identifiers.

fn identifier(kind: &str, user: Option<&str>) -> UserIdentifier {
    UserIdentifier { kind: kind.to_owned(), user: user.map(str::to_owned) }
}

#[test]
fn m_id_user_takes_a_localpart_or_a_full_id_in_any_case() {
    for name in ["alice", "@alice:localhost", "ALICE", "@Alice:localhost"] {
        let id = identifier("m.id.user", Some(name));
        assert_eq!(
            identified_user(Some(&id), None, false, "localhost").unwrap(),
            "@alice:localhost",
            "{name}"
        );
    }
}

#[test]
fn the_deprecated_user_field_still_works_and_identifier_wins() {
    assert_eq!(identified_user(None, Some("bob"), false, "localhost").unwrap(), "@bob:localhost");
    let id = identifier("m.id.user", Some("alice"));
    assert_eq!(identified_user(Some(&id), Some("bob"), false, "localhost").unwrap(), "@alice:localhost");
}

#[test]
fn identifiers_we_cannot_resolve_are_refused() {
    let forbidden = [
        identified_user(
            Some(&identifier("m.id.user", Some("@alice:elsewhere.org"))),
            None,
            false,
            "localhost",
        ),
        identified_user(Some(&identifier("m.id.user", Some("bad:name"))), None, false, "localhost"),
        identified_user(Some(&identifier("m.id.thirdparty", None)), None, false, "localhost"),
        identified_user(Some(&identifier("m.id.phone", None)), None, false, "localhost"),
        identified_user(None, None, true, "localhost"),
    ];
    for result in forbidden {
        assert_eq!(class_of(result), ErrorClass::Forbidden);
    }
    let unknown = identified_user(Some(&identifier("m.id.carrier_pigeon", None)), None, false, "localhost");
    assert_eq!(class_of(unknown), ErrorClass::Unknown);
    let no_user = identified_user(Some(&identifier("m.id.user", None)), None, false, "localhost");
    assert_eq!(class_of(no_user), ErrorClass::MissingParam);
    assert_eq!(class_of(identified_user(None, None, false, "localhost")), ErrorClass::MissingParam);
}

#[test]
fn a_non_object_identifier_does_not_deserialize() {
    assert!(serde_json::from_value::<UserIdentifier>(json!("alice")).is_err());
    assert!(serde_json::from_value::<UserIdentifier>(json!({ "user": "alice" })).is_err());
}

// User-interactive auth.

const DUMMY_FLOWS: &[Flow] = &[&[DUMMY]];
const TWO_FLOWS: &[Flow] = &[&[PASSWORD, DUMMY], &[DUMMY]];

fn stages(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[test]
fn stages_must_follow_a_flow_in_order() {
    assert!(stage_is_next(TWO_FLOWS, &[], PASSWORD));
    assert!(stage_is_next(TWO_FLOWS, &[], DUMMY));
    assert!(stage_is_next(TWO_FLOWS, &stages(&[PASSWORD]), DUMMY));
    assert!(!stage_is_next(TWO_FLOWS, &stages(&[DUMMY]), PASSWORD));
    assert!(!stage_is_next(TWO_FLOWS, &[], "m.login.recaptcha"));
    assert!(!stage_is_next(DUMMY_FLOWS, &stages(&[DUMMY]), DUMMY));
}

#[test]
fn a_flow_is_complete_when_all_its_stages_are() {
    assert!(!flow_is_complete(TWO_FLOWS, &[]));
    assert!(!flow_is_complete(TWO_FLOWS, &stages(&[PASSWORD])));
    assert!(flow_is_complete(TWO_FLOWS, &stages(&[PASSWORD, DUMMY])));
    assert!(flow_is_complete(TWO_FLOWS, &stages(&[DUMMY])));
    assert!(!flow_is_complete(DUMMY_FLOWS, &stages(&[PASSWORD])));
}

#[test]
fn a_session_remembers_its_stages_and_user_for_its_own_operation_only() {
    let sessions = UiaSessions::default();
    let now = Instant::now();
    let id = sessions.open("DELETE /devices/A @alice:localhost", now);
    assert_eq!(id.len(), 24);
    let progress = sessions.progress(&id, "DELETE /devices/A @alice:localhost", now).unwrap();
    assert!(progress.completed.is_empty() && progress.user_id.is_none());

    let alice = user("@alice:localhost");
    let done = sessions.complete_stage(
        &id,
        "DELETE /devices/A @alice:localhost",
        PASSWORD,
        Some(alice.clone()),
        now,
    );
    let done = done.unwrap();
    assert_eq!(done.completed, stages(&[PASSWORD]));
    assert_eq!(done.user_id, Some(alice));
    // Completing a stage twice records it once.
    let again =
        sessions.complete_stage(&id, "DELETE /devices/A @alice:localhost", PASSWORD, None, now).unwrap();
    assert_eq!(again, done);

    assert!(sessions.progress(&id, "DELETE /devices/B @alice:localhost", now).is_none());
    assert!(
        sessions.complete_stage(&id, "POST /delete_devices @alice:localhost", DUMMY, None, now).is_none()
    );
    assert!(sessions.progress("no-such-session", "DELETE /devices/A @alice:localhost", now).is_none());

    sessions.close(&id);
    assert!(sessions.progress(&id, "DELETE /devices/A @alice:localhost", now).is_none());
}

#[test]
fn sessions_expire() {
    let sessions = UiaSessions::new(10, Duration::from_secs(60));
    let start = Instant::now();
    let id = sessions.open("POST /register", start);
    assert!(sessions.progress(&id, "POST /register", start + Duration::from_secs(59)).is_some());
    let later = start + Duration::from_secs(60);
    assert!(sessions.progress(&id, "POST /register", later).is_none());
    assert!(sessions.complete_stage(&id, "POST /register", DUMMY, None, later).is_none());
}

#[test]
fn sessions_are_bounded_dropping_expired_then_oldest() {
    let sessions = UiaSessions::new(3, Duration::from_secs(60));
    let start = Instant::now();
    let first = sessions.open("POST /register", start);
    let second = sessions.open("POST /register", start + Duration::from_secs(1));
    let third = sessions.open("POST /register", start + Duration::from_secs(2));
    let fourth = sessions.open("POST /register", start + Duration::from_secs(3));
    assert_eq!(sessions.len(), 3);
    let now = start + Duration::from_secs(3);
    assert!(sessions.progress(&first, "POST /register", now).is_none(), "the oldest session goes");
    for id in [&second, &third, &fourth] {
        assert!(sessions.progress(id, "POST /register", now).is_some());
    }
    // Once sessions have expired, they make room before any live one is dropped.
    let much_later = start + Duration::from_secs(62);
    let fifth = sessions.open("POST /register", much_later);
    assert!(sessions.len() <= 3);
    assert!(sessions.progress(&fifth, "POST /register", much_later).is_some());
    assert!(sessions.progress(&fourth, "POST /register", much_later).is_some());
}

#[test]
fn the_challenge_is_a_bare_flows_object_until_a_stage_fails() {
    let bare = challenge(DUMMY_FLOWS, "abc", &[], None);
    assert_eq!(bare.class, ErrorClass::UserInteractiveAuth);
    assert!(bare.message.is_empty());
    assert_eq!(
        Value::Object(bare.extra),
        json!({ "flows": [{ "stages": ["m.login.dummy"] }], "params": {}, "session": "abc" })
    );
    let failed = challenge(TWO_FLOWS, "abc", &stages(&[PASSWORD]), Some("Invalid password"));
    assert_eq!(failed.message, "Invalid password");
    assert_eq!(failed.extra["completed"], json!(["m.login.password"]));
}

// Profiles.

#[test]
fn profile_values_are_strings_or_null() {
    let name = |body: Value| new_field_value(ProfileField::Displayname, &object(body));
    assert_eq!(name(json!({ "displayname": "Alice" })).unwrap().as_deref(), Some("Alice"));
    assert_eq!(name(json!({ "displayname": null })).unwrap(), None);
    assert_eq!(name(json!({ "displayname": "" })).unwrap(), None);
    assert_eq!(class_of(name(json!({}))), ErrorClass::MissingParam);
    assert_eq!(class_of(name(json!({ "displayname": 5 }))), ErrorClass::BadJson);
    assert_eq!(
        name(json!({ "displayname": "é".repeat(256) })).unwrap().map(|n| n.chars().count()),
        Some(256)
    );
    assert_eq!(class_of(name(json!({ "displayname": "x".repeat(257) }))), ErrorClass::TooLarge);

    let avatar = |body: Value| new_field_value(ProfileField::AvatarUrl, &object(body));
    assert_eq!(
        avatar(json!({ "avatar_url": "mxc://localhost/abc" })).unwrap().as_deref(),
        Some("mxc://localhost/abc")
    );
    assert_eq!(
        class_of(avatar(json!({ "avatar_url": "https://example.org/a.png" }))),
        ErrorClass::InvalidParam
    );
    let long_avatar = format!("mxc://localhost/{}", "a".repeat(1000));
    assert_eq!(class_of(avatar(json!({ "avatar_url": long_avatar }))), ErrorClass::TooLarge);
}

// Filters.

#[test]
fn filters_must_have_the_spec_shape() {
    let good = json!({
        "event_fields": ["type", "content.body"],
        "event_format": "client",
        "presence": { "types": ["m.presence"], "limit": 5 },
        "room": {
            "rooms": ["!a:localhost"],
            "include_leave": true,
            "timeline": { "limit": 10, "lazy_load_members": true, "not_types": ["m.reaction"] },
            "state": { "lazy_load_members": true },
        },
        "org.example.custom": 1,
    });
    check_filter_shape(&object(good)).unwrap();
    check_filter_shape(&Map::new()).unwrap();
    for bad in [
        json!({ "room": { "timeline": { "limit": -1 } } }),
        json!({ "room": { "rooms": "!a:localhost" } }),
        json!({ "room": [] }),
        json!({ "event_format": "xml" }),
        json!({ "presence": { "types": [1] } }),
        json!({ "room": { "include_leave": "yes" } }),
    ] {
        assert_eq!(class_of(check_filter_shape(&object(bad.clone()))), ErrorClass::BadJson, "{bad}");
    }
}

// Discovery and push rules.

#[test]
fn capabilities_name_the_configured_default_room_version() {
    let config = Config::embedded_default();
    let capabilities = capabilities_of(&config);
    let versions = &capabilities["capabilities"]["m.room_versions"];
    assert_eq!(versions["default"], json!(config.rooms.default_version));
    for version in ["3", "4", "5", "6", "7", "8", "9", "10", "11", "12"] {
        assert_eq!(versions["available"][version], "stable");
    }
    assert_eq!(capabilities["capabilities"]["m.change_password"]["enabled"], true);
    assert_eq!(capabilities["capabilities"]["m.3pid_changes"]["enabled"], false);
}

#[test]
fn base_url_prefers_the_public_one() {
    let mut config = Config::embedded_default();
    assert_eq!(base_url(&config), "http://127.0.0.1:8008");
    config.http.public_baseurl = Some("https://matrix.example.org/".into());
    assert_eq!(base_url(&config), "https://matrix.example.org");
}

#[test]
fn default_push_rules_are_built_for_the_user() {
    let rules = default_ruleset(&user("@alice:localhost"));
    let ids = |kind: &str| -> Vec<String> {
        rules[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|rule| rule["rule_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("override")[0], ".m.rule.master");
    assert_eq!(rules["override"][0]["enabled"], false);
    assert_eq!(ids("content"), [".m.rule.contains_user_name"]);
    assert_eq!(rules["content"][0]["pattern"], "alice");
    assert_eq!(ids("underride").last().map(String::as_str), Some(".m.rule.encrypted"));
    assert_eq!(rules["room"], json!([]));
    assert_eq!(rules["sender"], json!([]));
    let mention = rules["override"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rule| rule["rule_id"] == ".m.rule.is_user_mention");
    assert_eq!(mention.unwrap()["conditions"][0]["value"], "@alice:localhost");
    let invite =
        rules["override"].as_array().unwrap().iter().find(|rule| rule["rule_id"] == ".m.rule.invite_for_me");
    assert_eq!(invite.unwrap()["conditions"][2]["pattern"], "@alice:localhost");
    for kind in ["override", "content", "underride"] {
        for rule in rules[kind].as_array().unwrap() {
            assert_eq!(rule["default"], true, "{rule}");
            assert!(rule["rule_id"].as_str().unwrap().starts_with(".m.rule."), "{rule}");
        }
    }
}
