use std::collections::HashMap;

use ganglion_types::{ErrorClass, HasErrorClass};
use ruma::{
    OwnedEventId, RoomId, UserId, events::StateEventType, room_version_rules::RoomVersionRules,
    signatures::Ed25519KeyPair,
};
use serde_json::json;

use super::*;

fn key() -> ServerKey {
    ServerKey::ephemeral("example.org")
}

/// Builds a tiny room (create, creator join, power levels, join rules) and returns its events.
fn room(key: &ServerKey, version: &ruma::RoomVersionId) -> Vec<Pdu> {
    let rules = version.rules().unwrap();
    let alice = UserId::parse("@alice:example.org").unwrap();
    let mut create_content = json!({ "room_version": version.as_str() });
    if !rules.authorization.use_room_create_sender {
        create_content["creator"] = json!(alice.as_str());
    }
    let create_room_id = if rules.authorization.room_create_event_id_as_room_id {
        None
    } else {
        Some(RoomId::parse("!room:example.org").unwrap())
    };
    let create = build_pdu(
        key,
        &rules,
        create_room_id.as_deref(),
        &alice,
        &EventTemplate::state("m.room.create", "", create_content),
        &[],
        &[],
        1,
        1_000,
    )
    .unwrap();
    let room_id = create.room_id.clone();
    let mut events = vec![create];
    // Since v12 creators have infinite power and must not be listed in `users`.
    let users = if rules.authorization.explicitly_privilege_room_creators {
        json!({})
    } else {
        json!({ alice.as_str(): 100 })
    };
    let templates = [
        EventTemplate::state("m.room.member", alice.as_str(), json!({ "membership": "join" })),
        EventTemplate::state("m.room.power_levels", "", json!({ "users": users })),
        EventTemplate::state("m.room.join_rules", "", json!({ "join_rule": "invite" })),
    ];
    for template in templates {
        let pdu = next(key, &rules, &room_id, &alice, &events, template).unwrap();
        events.push(pdu);
    }
    events
}

/// Builds the next event on top of `events` with auth events from their state, and checks it.
fn next(
    key: &ServerKey,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    sender: &UserId,
    events: &[Pdu],
    template: EventTemplate,
) -> Result<Pdu, AuthError> {
    let state: HashMap<(String, String), &Pdu> =
        events.iter().filter_map(|e| e.state_key.clone().map(|k| ((e.kind.to_string(), k), e))).collect();
    let content = serde_json::value::to_raw_value(&template.content).unwrap();
    let types = auth_event_types(
        &rules.authorization,
        &template.kind,
        sender,
        template.state_key.as_deref(),
        &content,
    )?;
    let auth_events: Vec<OwnedEventId> = types
        .iter()
        .filter_map(|(kind, key)| state.get(&(kind.to_string(), key.clone())).map(|e| e.event_id.clone()))
        .collect();
    let last = events.last().unwrap();
    let pdu = build_pdu(
        key,
        rules,
        Some(room_id),
        sender,
        &template,
        std::slice::from_ref(&last.event_id),
        &auth_events,
        u64::from(last.depth) + 1,
        2_000,
    )
    .unwrap();
    let by_id: HashMap<OwnedEventId, &Pdu> = events.iter().map(|e| (e.event_id.clone(), e)).collect();
    check_auth(&rules.authorization, &pdu, &by_id, |kind: &StateEventType, key: &str| {
        state.get(&(kind.to_string(), key.to_owned())).copied()
    })?;
    Ok(pdu)
}

#[test]
fn event_ids_follow_the_room_version_and_signatures_verify() {
    let key = key();
    for version in SUPPORTED_ROOM_VERSIONS {
        let rules = version.rules().unwrap();
        let events = room(&key, &version);
        for pdu in &events {
            let object: ruma::CanonicalJsonObject = serde_json::from_str(&pdu.json).unwrap();
            if version == ruma::RoomVersionId::V2 {
                // Version 2 events carry an id of their server's making, and list references as
                // `[id, hashes]` pairs.
                assert_eq!(object.get("event_id").and_then(|id| id.as_str()), Some(pdu.event_id.as_str()));
                assert!(pdu.event_id.as_str().ends_with(":example.org"), "{}", pdu.event_id);
                if let Some(first) = pdu.prev_events.first() {
                    assert!(
                        pdu.json.contains(&format!("\"prev_events\":[[\"{first}\",{{}}]")),
                        "{}",
                        pdu.json
                    );
                }
                let parsed = Pdu::from_json(pdu.event_id.clone(), pdu.json.clone()).unwrap();
                assert_eq!(
                    (parsed.prev_events, parsed.auth_events),
                    (pdu.prev_events.clone(), pdu.auth_events.clone())
                );
            } else {
                let hash = ruma::signatures::reference_hash(&object, &rules).unwrap();
                assert_eq!(pdu.event_id.as_str(), format!("${hash}"));
            }
            assert!(object.contains_key("hashes"));
            let public_key = key.key_pair.public_key();
            let mut keys = std::collections::BTreeMap::new();
            let mut server_keys = std::collections::BTreeMap::new();
            server_keys.insert(
                format!("ed25519:{}", key.key_pair.version()),
                ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::new(public_key.to_vec()),
            );
            keys.insert("example.org".to_owned(), server_keys);
            let verified = ruma::signatures::verify_event(&keys, &object, &rules).unwrap();
            assert_eq!(verified, ruma::signatures::Verified::All, "{version}");
        }
    }
}

#[test]
fn v12_room_id_is_the_create_event_hash() {
    let key = key();
    let events = room(&key, &ruma::RoomVersionId::V12);
    let create = &events[0];
    assert_eq!(create.room_id.as_str(), format!("!{}", &create.event_id.as_str()[1..]));
    assert!(!create.json.contains("room_id"));
    // The create event is never among auth_events in v12.
    for pdu in &events[1..] {
        assert!(!pdu.auth_events.contains(&create.event_id));
        assert!(pdu.json.contains(create.room_id.as_str()));
    }
}

#[test]
fn v11_and_v10_events_reference_the_create_event() {
    let key = key();
    for version in [ruma::RoomVersionId::V10, ruma::RoomVersionId::V11] {
        let events = room(&key, &version);
        for pdu in &events[1..] {
            assert!(pdu.auth_events.contains(&events[0].event_id), "{version}");
        }
    }
}

#[test]
fn stranger_cannot_send_and_member_without_power_cannot_rename() {
    let key = key();
    for version in SUPPORTED_ROOM_VERSIONS {
        let rules = version.rules().unwrap();
        let mut events = room(&key, &version);
        let room_id = events[0].room_id.clone();
        let bob = UserId::parse("@bob:example.org").unwrap();
        let alice = UserId::parse("@alice:example.org").unwrap();
        // Not joined: rejected.
        let error = next(
            &key,
            &rules,
            &room_id,
            &bob,
            &events,
            EventTemplate::message("m.room.message", json!({"body": "hi"})),
        )
        .unwrap_err();
        assert!(error.0.contains("not joined") || error.0.contains("member"), "{version}: {error}");
        // Invite-only: bob cannot join uninvited.
        let join = EventTemplate::state("m.room.member", bob.as_str(), json!({"membership": "join"}));
        assert!(next(&key, &rules, &room_id, &bob, &events, join.clone()).is_err());
        let invite = EventTemplate::state("m.room.member", bob.as_str(), json!({"membership": "invite"}));
        events.push(next(&key, &rules, &room_id, &alice, &events, invite).unwrap());
        events.push(next(&key, &rules, &room_id, &bob, &events, join).unwrap());
        // Joined but powerless: cannot set the name (state_default 50).
        let name = EventTemplate::state("m.room.name", "", json!({"name": "nope"}));
        let error = next(&key, &rules, &room_id, &bob, &events, name.clone()).unwrap_err();
        assert!(error.0.contains("power"), "{version}: {error}");
        // Alice can.
        next(&key, &rules, &room_id, &alice, &events, name).unwrap();
        // Bob can talk.
        next(
            &key,
            &rules,
            &room_id,
            &bob,
            &events,
            EventTemplate::message("m.room.message", json!({"body": "hi"})),
        )
        .unwrap();
    }
}

#[test]
fn redaction_strips_content_per_room_version() {
    let key = key();
    let rules = ruma::RoomVersionId::V11.rules().unwrap();
    let events = room(&key, &ruma::RoomVersionId::V11);
    let alice = UserId::parse("@alice:example.org").unwrap();
    let message = next(
        &key,
        &rules,
        &events[0].room_id,
        &alice,
        &events,
        EventTemplate::message("m.room.message", json!({"body": "secret", "msgtype": "m.text"})),
    )
    .unwrap();
    assert_eq!(redacted_json(&message, &rules.redaction), json!({}));
    // Power levels keep their `users` map through a redaction.
    let power_levels = &events[2];
    let redacted = redacted_json(power_levels, &rules.redaction);
    assert_eq!(redacted["users"]["@alice:example.org"], json!(100));
    assert!(redacted_json(&events[3], &rules.redaction).get("join_rule").is_some());
}

#[test]
fn floats_are_not_canonical_json() {
    let key = key();
    let rules = ruma::RoomVersionId::V12.rules().unwrap();
    let alice = UserId::parse("@alice:example.org").unwrap();
    let room_id = RoomId::parse("!abc:example.org").unwrap();
    let error = build_pdu(
        &key,
        &rules,
        Some(&room_id),
        &alice,
        &EventTemplate::message("m.room.message", json!({"n": 1.5})),
        &[],
        &[],
        1,
        1,
    )
    .unwrap_err();
    assert!(matches!(error, BuildError::NotCanonical(_)));
}

/// A message whose `body` is `len` bytes, built on an empty room head.
fn message_of(key: &ServerKey, rules: &RoomVersionRules, len: usize) -> Result<Pdu, BuildError> {
    let alice = UserId::parse("@alice:example.org").unwrap();
    let room_id = RoomId::parse("!abc:example.org").unwrap();
    let template = EventTemplate::message("m.room.message", json!({ "body": "x".repeat(len) }));
    build_pdu(key, rules, Some(&room_id), &alice, &template, &[], &[], 1, 1_700_000_000_000)
}

#[test]
fn oversized_event_is_too_large_not_a_signing_failure() {
    let key = key();
    for version in SUPPORTED_ROOM_VERSIONS {
        let rules = version.rules().unwrap();
        let error = message_of(&key, &rules, 100_000).unwrap_err();
        assert!(matches!(error, BuildError::TooLarge), "{version}: {error:?}");
        assert_eq!(error.class(), ErrorClass::TooLarge);
        assert!(error.to_string().contains("65535 bytes"), "{error}");
    }
}

#[test]
fn the_largest_event_that_builds_is_within_the_limit_and_one_byte_more_is_too_large() {
    let key = key();
    for version in SUPPORTED_ROOM_VERSIONS {
        let rules = version.rules().unwrap();
        // Bisect the longest body that still builds: hashes and signatures count too.
        let (mut fits, mut too_long) = (60_000, 70_000);
        while too_long - fits > 1 {
            let middle = (fits + too_long) / 2;
            match message_of(&key, &rules, middle) {
                Ok(_) => fits = middle,
                Err(BuildError::TooLarge) => too_long = middle,
                Err(other) => panic!("{version}: {other:?}"),
            }
        }
        let largest = message_of(&key, &rules, fits).unwrap();
        assert!(largest.json.len() <= MAX_PDU_BYTES, "{version}: {}", largest.json.len());
        // Within a signature's length of the limit: the final check, not only ruma's content
        // hash (which does not count signatures), decides.
        assert!(largest.json.len() > MAX_PDU_BYTES - 200, "{version}: {}", largest.json.len());
    }
}

#[test]
fn template_checks_refuse_what_the_builder_would_refuse() {
    let key = key();
    let alice = UserId::parse("@alice:example.org").unwrap();
    let room_id = RoomId::parse("!abc:example.org").unwrap();
    let rules = ruma::RoomVersionId::V12.rules().unwrap();
    let redacts = OwnedEventId::try_from("$target").unwrap();
    let templates = [
        EventTemplate::message("m.room.message", json!({ "body": "hi" })),
        EventTemplate::state("m.room.topic", "", json!({ "topic": "x".repeat(1000) })),
        EventTemplate::state("m.room.member", alice.as_str(), json!({ "membership": "join" })),
        EventTemplate {
            kind: "m.room.redaction".into(),
            content: json!({}),
            state_key: None,
            redacts: Some(redacts),
        },
    ];
    let create = EventTemplate::state("m.room.create", "", json!({ "room_version": "12" }));
    // Only a v12 create event is built without a room id.
    let cases = templates.iter().map(|template| (template, Some(&*room_id))).chain([(&create, None)]);
    for (template, room) in cases {
        let pdu = build_pdu(&key, &rules, room, &alice, template, &[], &[], 1, 1).unwrap();
        let minimum = minimum_pdu_bytes(template, room, &alice);
        // A lower bound, and a close one.
        assert!(minimum <= pdu.json.len(), "{} > {}: {}", minimum, pdu.json.len(), pdu.json);
        assert!(pdu.json.len() - minimum < 64, "{} vs {}: {}", minimum, pdu.json.len(), pdu.json);
        check_template(template, room, &alice).unwrap();
    }

    let body = |len: usize| EventTemplate::message("m.room.message", json!({ "body": "x".repeat(len) }));
    let error = check_template(&body(70_000), Some(&room_id), &alice).unwrap_err();
    assert!(matches!(error, BuildError::TooLarge), "{error:?}");
    check_template(&body(60_000), Some(&room_id), &alice).unwrap();

    let long = "t".repeat(MAX_EVENT_FIELD_BYTES + 1);
    let at_limit = "t".repeat(MAX_EVENT_FIELD_BYTES);
    check_template(&EventTemplate::state(at_limit.clone(), at_limit.clone(), json!({})), None, &alice)
        .unwrap();
    let error = check_template(&EventTemplate::message(long.clone(), json!({})), None, &alice).unwrap_err();
    assert!(matches!(error, BuildError::FieldTooLong("type")), "{error:?}");
    assert_eq!(error.class(), ErrorClass::BadJson);
    let error = check_template(&EventTemplate::state("m.x", long, json!({})), None, &alice).unwrap_err();
    assert!(matches!(error, BuildError::FieldTooLong("state_key")), "{error:?}");
    // Both too long and too large: the size decides.
    let huge_type = EventTemplate::message("t".repeat(100_000), json!({}));
    assert!(matches!(check_template(&huge_type, None, &alice), Err(BuildError::TooLarge)));
}

#[test]
fn signing_key_persists_across_loads() {
    let dir = std::env::temp_dir().join(format!("ganglion-key-test-{}", std::process::id()));
    let path = dir.join("signing.key");
    let first = ServerKey::load_or_generate("example.org", &path).unwrap();
    let second = ServerKey::load_or_generate("example.org", &path).unwrap();
    assert_eq!(first.key_pair.public_key(), second.key_pair.public_key());
    assert_eq!(first.key_pair.version(), second.key_pair.version());
    let _ = std::fs::remove_dir_all(dir);
    let _ = Ed25519KeyPair::generate();
}

/// The spec's cryptographic test vectors (appendices, "Cryptographic Test Vectors").
mod spec_vectors {
    use base64::Engine;
    use ruma::{CanonicalJsonObject, CanonicalJsonValue, signatures::Ed25519KeyPair};

    fn spec_key() -> Ed25519KeyPair {
        // The spec's seed has non-zero trailing bits, so decode leniently.
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_encode_padding(false)
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let seed = engine.decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1").unwrap();
        // PKCS#8 v1 wrapping of an ed25519 seed: a fixed prefix, then the 32 bytes.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        Ed25519KeyPair::from_der(&der, "1".into()).unwrap()
    }

    fn object(json: &str) -> CanonicalJsonObject {
        serde_json::from_str(json).unwrap()
    }

    fn signature(object: &CanonicalJsonObject) -> String {
        let CanonicalJsonValue::Object(signatures) = &object["signatures"] else { panic!("no signatures") };
        let CanonicalJsonValue::Object(domain) = &signatures["domain"] else { panic!("no domain") };
        domain["ed25519:1"].as_str().unwrap().to_owned()
    }

    #[test]
    fn json_signing_matches_the_spec() {
        let key = spec_key();
        let mut empty = object("{}");
        ruma::signatures::sign_json("domain", &key, &mut empty).unwrap();
        assert_eq!(
            signature(&empty),
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
        );
        let mut data = object(r#"{"one": 1, "two": "Two"}"#);
        ruma::signatures::sign_json("domain", &key, &mut data).unwrap();
        assert_eq!(
            signature(&data),
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        );
    }

    #[test]
    fn event_hashing_and_signing_match_the_spec() {
        let key = spec_key();
        let rules = ruma::room_version_rules::RedactionRules::V1;
        let mut event = object(
            r#"{"room_id": "!x:domain", "sender": "@a:domain", "origin": "domain", "origin_server_ts": 1000000,
                "signatures": {}, "hashes": {}, "type": "X", "content": {}, "prev_events": [], "auth_events": [],
                "depth": 3, "unsigned": {"age_ts": 1000000}}"#,
        );
        ruma::signatures::hash_and_sign_event("domain", &key, &mut event, &rules).unwrap();
        assert_eq!(
            event["hashes"],
            CanonicalJsonValue::Object(object(
                r#"{"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"}"#
            ))
        );
        assert_eq!(
            signature(&event),
            "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        );

        let mut message = object(
            r#"{"content": {"body": "Here is the message content"}, "event_id": "$0:domain", "origin": "domain",
                "origin_server_ts": 1000000, "type": "m.room.message", "room_id": "!r:domain", "sender": "@u:domain",
                "signatures": {}, "unsigned": {"age_ts": 1000000}}"#,
        );
        ruma::signatures::hash_and_sign_event("domain", &key, &mut message, &rules).unwrap();
        assert_eq!(
            message["hashes"],
            CanonicalJsonValue::Object(object(
                r#"{"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"}"#
            ))
        );
        assert_eq!(
            signature(&message),
            "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        );
    }
}

#[test]
fn presence_content_leaves_out_what_synapse_leaves_out() {
    use crate::presence::{PresenceState, presence_content};
    assert_eq!(
        presence_content(PresenceState::Online, Some("lunch"), 1_000, true, 3_500),
        json!({ "presence": "online", "last_active_ago": 2_500, "status_msg": "lunch", "currently_active": true })
    );
    // Never active, no status, not online: only the state.
    assert_eq!(
        presence_content(PresenceState::Offline, Some(""), 0, true, 3_500),
        json!({ "presence": "offline" })
    );
    assert_eq!(
        presence_content(PresenceState::Unavailable, None, 3_000, false, 3_500),
        json!({ "presence": "unavailable", "last_active_ago": 500 })
    );
    for state in [PresenceState::Online, PresenceState::Unavailable, PresenceState::Offline] {
        assert_eq!(PresenceState::parse(state.as_str()), Some(state));
    }
    assert_eq!(PresenceState::parse("busy"), None);
    assert!(
        PresenceState::Online > PresenceState::Unavailable
            && PresenceState::Unavailable > PresenceState::Offline
    );
}

/// Two concurrent renames of a room by its creator: state resolution keeps the later one (same
/// power, same mainline: the origin timestamp decides), whichever order the states come in.
#[test]
fn state_resolution_keeps_the_later_of_two_concurrent_renames() {
    let key = key();
    for version in SUPPORTED_ROOM_VERSIONS {
        let rules = version.rules().unwrap();
        let events = room(&key, &version);
        let alice = UserId::parse("@alice:example.org").unwrap();
        let room_id = events[0].room_id.clone();
        let state: HashMap<(String, String), &Pdu> =
            events.iter().filter_map(|e| e.state_key.clone().map(|k| ((e.kind.to_string(), k), e))).collect();
        let last = events.last().unwrap();
        let rename = |name: &str, ts: u64| {
            let template = EventTemplate::state("m.room.name", "", json!({ "name": name }));
            let content = serde_json::value::to_raw_value(&template.content).unwrap();
            let types =
                auth_event_types(&rules.authorization, "m.room.name", &alice, Some(""), &content).unwrap();
            let auth: Vec<OwnedEventId> = types
                .iter()
                .filter_map(|(kind, key)| {
                    state.get(&(kind.to_string(), key.clone())).map(|e| e.event_id.clone())
                })
                .collect();
            let prev = std::slice::from_ref(&last.event_id);
            build_pdu(
                &key,
                &rules,
                Some(&room_id),
                &alice,
                &template,
                prev,
                &auth,
                u64::from(last.depth) + 1,
                ts,
            )
            .unwrap()
        };
        let (early, late) = (rename("early", 2_000), rename("late", 3_000));
        let base: ruma::state_res::StateMap<OwnedEventId> = events
            .iter()
            .map(|e| {
                ((StateEventType::from(e.kind.to_string()), e.state_key.clone().unwrap()), e.event_id.clone())
            })
            .collect();
        let with = |event: &Pdu| {
            let mut state = base.clone();
            state.insert((StateEventType::RoomName, String::new()), event.event_id.clone());
            state
        };
        let mut all: HashMap<OwnedEventId, std::sync::Arc<Pdu>> =
            events.iter().map(|e| (e.event_id.clone(), std::sync::Arc::new(e.clone()))).collect();
        all.insert(early.event_id.clone(), std::sync::Arc::new(early.clone()));
        all.insert(late.event_id.clone(), std::sync::Arc::new(late.clone()));
        for states in [[with(&early), with(&late)], [with(&late), with(&early)]] {
            let chains = states.iter().map(|state| crate::auth_chain(state.values(), &all)).collect();
            let resolved = resolve_state(&rules, &states, chains, &all).unwrap();
            assert_eq!(resolved[&(StateEventType::RoomName, String::new())], late.event_id, "v{version}");
            assert_eq!(resolved.len(), base.len() + 1, "v{version}");
        }
    }
}
