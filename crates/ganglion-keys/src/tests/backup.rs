use ruma::{RoomId, UInt};

use super::*;

fn session(is_verified: bool, first_message_index: u32, forwarded_count: u32) -> BackupSession {
    BackupSession {
        is_verified,
        first_message_index: UInt::from(first_message_index),
        forwarded_count: UInt::from(forwarded_count),
    }
}

#[test]
fn the_spec_replacement_rule_orders_verified_then_index_then_forwards() {
    // (existing, candidate, candidate replaces existing)
    let cases = [
        (session(false, 0, 0), session(true, 9, 9), true),
        (session(true, 9, 9), session(false, 0, 0), false),
        (session(true, 5, 0), session(true, 4, 9), true),
        (session(true, 4, 0), session(true, 5, 0), false),
        (session(false, 4, 3), session(false, 4, 2), true),
        (session(false, 4, 2), session(false, 4, 3), false),
        (session(true, 4, 2), session(true, 4, 2), false),
    ];
    for (existing, candidate, replaces) in cases {
        assert_eq!(better_session(&existing, &candidate), replaces, "{existing:?} vs {candidate:?}");
    }
}

fn key_data() -> Value {
    json!({
        "first_message_index": 1,
        "forwarded_count": 0,
        "is_verified": true,
        "session_data": { "ephemeral": "e", "ciphertext": "c", "mac": "m" },
    })
}

#[test]
fn key_backup_data_is_parsed() {
    let key = check_key_backup_data(&key_data()).unwrap();
    assert_eq!(key.session, session(true, 1, 0));
    assert_eq!(key.session_data, r#"{"ciphertext":"c","ephemeral":"e","mac":"m"}"#);
}

#[test]
fn malformed_key_backup_data_is_bad_json() {
    let mutations: [Mutation; 6] = [
        ("no index", |value| drop(value.as_object_mut().unwrap().remove("first_message_index"))),
        ("negative index", |value| value["first_message_index"] = json!(-1)),
        ("string count", |value| value["forwarded_count"] = json!("0")),
        ("is_verified not a boolean", |value| value["is_verified"] = json!(1)),
        ("no session data", |value| drop(value.as_object_mut().unwrap().remove("session_data"))),
        ("session data not an object", |value| value["session_data"] = json!("c")),
    ];
    for (name, mutate) in mutations {
        let mut value = key_data();
        mutate(&mut value);
        assert_eq!(class(check_key_backup_data(&value)), ErrorClass::BadJson, "{name}");
    }
}

#[test]
fn room_key_bodies_list_every_session() {
    let body = json!({
        "rooms": {
            "!a:example.org": { "sessions": { "s1": key_data(), "s2": key_data() } },
            "!b:example.org": { "sessions": {} },
        }
    });
    let keys = check_room_keys(&body).unwrap();
    let ids: Vec<(&str, &str)> =
        keys.iter().map(|key| (key.room_id.as_str(), key.session_id.as_str())).collect();
    assert_eq!(ids, [("!a:example.org", "s1"), ("!a:example.org", "s2")]);

    let room_id = RoomId::parse("!c:example.org").unwrap();
    let keys = check_room_sessions(&room_id, &json!({ "sessions": { "s3": key_data() } })).unwrap();
    assert_eq!((keys[0].room_id.as_str(), keys[0].session_id.as_str()), ("!c:example.org", "s3"));

    let bad_room = json!({ "rooms": { "not a room": { "sessions": {} } } });
    assert_eq!(class(check_room_keys(&bad_room)), ErrorClass::InvalidParam);
    let bad_session =
        json!({ "rooms": { "!a:example.org": { "sessions": { "s1": { "is_verified": true } } } } });
    let error = check_room_keys(&bad_session).unwrap_err();
    assert_eq!(error.to_string(), "rooms.!a:example.org.sessions.s1.first_message_index: is required");
    assert_eq!(class(check_room_keys(&json!({}))), ErrorClass::BadJson);

    // Ids beyond the bound are refused wherever they are.
    let long_session = "s".repeat(MAX_BACKUP_ID_BYTES + 1);
    let body = json!({ "sessions": { long_session.clone(): key_data() } });
    assert_eq!(class(check_room_sessions(&room_id, &body)), ErrorClass::InvalidParam);
    let long_room = format!("!{}:example.org", "r".repeat(MAX_BACKUP_ID_BYTES));
    let body = json!({ "rooms": { long_room: { "sessions": {} } } });
    assert_eq!(class(check_room_keys(&body)), ErrorClass::InvalidParam);
    assert!(check_id_length("session", &long_session[1..]).is_ok());
}

#[test]
fn backup_versions_need_an_algorithm_and_auth_data() {
    let body = json!({
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": { "public_key": "abcdefg" },
    });
    let version = check_backup_version(&body).unwrap();
    assert_eq!(version.algorithm, "m.megolm_backup.v1.curve25519-aes-sha2");
    assert_eq!(version.auth_data, r#"{"public_key":"abcdefg"}"#);
    assert_eq!(class(check_backup_version(&json!({ "algorithm": "x" }))), ErrorClass::BadJson);
    let empty = json!({ "algorithm": "", "auth_data": {} });
    assert_eq!(class(check_backup_version(&empty)), ErrorClass::InvalidParam);
}
