//! The spec's size limits on events: every endpoint that builds an event answers 413
//! `M_TOO_LARGE` for one over 65,535 bytes and 400 for a `type`, `state_key` or other identifier
//! over 255 bytes, and writes nothing: no event, no state, no room.

use std::collections::BTreeSet;

use ganglion_testkit::{Account, Backend, Response, enc};
use serde_json::{Value, json};

use crate::{filter_param, get_ok, initial_since, joined_events, register_all, start, sync_until};

on_all_backends!(oversized_events_are_refused_and_write_nothing, create_room_and_identifier_limits);

/// Far over the 65,535-byte event limit, well under the 1 MiB body limit.
const HUGE: usize = 100_000;

fn room_path(room: &str, rest: &str) -> String {
    format!("/rooms/{}/{rest}", enc(room))
}

fn huge() -> String {
    "x".repeat(HUGE)
}

/// `len` letters that PostgreSQL cannot compress much, so they overflow an index entry.
fn noise(len: usize) -> String {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

#[track_caller]
fn too_large(response: Response, what: &str) {
    assert_eq!(
        (response.status, response.errcode()),
        (413, Some("M_TOO_LARGE")),
        "{what}: expected 413 M_TOO_LARGE, got {} {}",
        response.status,
        response.text
    );
    let message = response.body["error"].as_str().unwrap_or_default();
    assert!(message.contains("65535") || message.contains("maximum"), "{what}: no limit in {message:?}");
}

async fn joined_rooms(account: &Account) -> BTreeSet<String> {
    let body = get_ok(account, "/joined_rooms").await;
    body["joined_rooms"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect()
}

async fn joined_members(account: &Account, room: &str) -> BTreeSet<String> {
    let body = get_ok(account, &room_path(room, "joined_members")).await;
    body["joined"].as_object().unwrap().keys().cloned().collect()
}

/// `PUT /rooms/{room}/send/m.room.message/{txn}` with a body of `len` bytes.
async fn send_body(account: &Account, room: &str, txn: &str, len: usize) -> Response {
    let content = json!({ "msgtype": "m.text", "body": "y".repeat(len) });
    account.put(&room_path(room, &format!("send/m.room.message/{txn}")), &content).await.unwrap()
}

/// The ids of every timeline event of `room` from `since` until `last` arrives, after checking
/// that no response was `limited` (so none was left out).
async fn timeline_ids_until(account: &Account, since: &mut String, room: &str, last: &str) -> Vec<String> {
    let filter = filter_param(&json!({ "room": { "timeline": { "limit": 200 } } }));
    let syncs = sync_until(account, since, &format!("&{filter}"), |sync| {
        joined_events(sync, room, "timeline").iter().any(|event| event["event_id"] == last)
    })
    .await;
    let mut ids = Vec::new();
    for sync in &syncs {
        assert_ne!(sync["rooms"]["join"][room]["timeline"]["limited"], json!(true), "limited timeline");
        ids.extend(
            joined_events(sync, room, "timeline").iter().map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
    }
    ids
}

/// Every endpoint that builds an event, with one field far too large: 413 and nothing written.
/// Then sizes around the limit, where only the builder's exact check can tell, in a burst of
/// group-committed sends: the too-large send fails alone.
async fn oversized_events_are_refused_and_write_nothing(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob, carol, dave] =
        <[Account; 4]>::try_from(register_all(&server, &["alice", "bob", "carol", "dave"]).await).unwrap();
    let room = alice
        .create_room(&json!({ "preset": "public_chat", "topic": "calm", "room_alias_name": "limits" }))
        .await
        .unwrap();
    bob.join(&room).await.unwrap();
    dave.join(&room).await.unwrap();
    alice.post(&room_path(&room, "ban"), &json!({ "user_id": dave.user_id })).await.unwrap().ok();
    let target = alice.send_text(&room, "keep me").await.unwrap();
    let alice_member =
        get_ok(&alice, &room_path(&room, &format!("state/m.room.member/{}", enc(&alice.user_id)))).await;
    let profile = get_ok(&alice, &format!("/profile/{}", enc(&alice.user_id))).await;
    let mut since = initial_since(&alice, "").await;
    let reason = json!({ "reason": huge() });

    // Messages and state.
    too_large(send_body(&alice, &room, "huge-1", HUGE).await, "send");
    let custom = json!({ "nested": { "deep": [huge()] } });
    too_large(
        alice.put(&room_path(&room, "send/org.example.custom/huge-2"), &custom).await.unwrap(),
        "custom send",
    );
    let topic = json!({ "topic": huge() });
    too_large(alice.put(&room_path(&room, "state/m.room.topic/"), &topic).await.unwrap(), "state");
    too_large(alice.put(&room_path(&room, "state/m.room.topic"), &topic).await.unwrap(), "state without key");
    let member_path = room_path(&room, &format!("state/m.room.member/{}", enc(&alice.user_id)));
    let member = json!({ "membership": "join", "avatar_url": huge() });
    too_large(alice.put(&member_path, &member).await.unwrap(), "member avatar_url");
    too_large(alice.put(&member_path, &json!({ "membership": huge() })).await.unwrap(), "member membership");
    let aliases = json!({ "alias": format!("#{}:localhost", huge()) });
    too_large(
        alice.put(&room_path(&room, "state/m.room.canonical_alias/"), &aliases).await.unwrap(),
        "alias",
    );
    // Redactions, both ways.
    let redact_path = room_path(&room, &format!("redact/{}/huge-3", enc(&target)));
    too_large(alice.put(&redact_path, &reason).await.unwrap(), "redact reason");
    let redaction = json!({ "redacts": target, "reason": huge() });
    too_large(
        alice.put(&room_path(&room, "send/m.room.redaction/huge-4"), &redaction).await.unwrap(),
        "redaction",
    );
    let redaction = json!({ "redacts": huge() });
    too_large(
        alice.put(&room_path(&room, "send/m.room.redaction/huge-5"), &redaction).await.unwrap(),
        "redacts",
    );
    // Membership, with a reason.
    too_large(carol.post(&room_path(&room, "join"), &reason).await.unwrap(), "join");
    too_large(carol.post(&format!("/join/{}", enc(&room)), &reason).await.unwrap(), "join by id");
    too_large(
        carol.post(&format!("/join/{}", enc("#limits:localhost")), &reason).await.unwrap(),
        "join by alias",
    );
    too_large(bob.post(&room_path(&room, "leave"), &reason).await.unwrap(), "leave");
    let with = |user: &Account| json!({ "user_id": user.user_id, "reason": huge() });
    too_large(alice.post(&room_path(&room, "invite"), &with(&carol)).await.unwrap(), "invite");
    too_large(alice.post(&room_path(&room, "kick"), &with(&bob)).await.unwrap(), "kick");
    too_large(alice.post(&room_path(&room, "ban"), &with(&bob)).await.unwrap(), "ban");
    too_large(alice.post(&room_path(&room, "unban"), &with(&dave)).await.unwrap(), "unban");
    // Profile changes would make every member event too large; capped well before that.
    let profile_path = |field: &str| format!("/profile/{}/{field}", enc(&alice.user_id));
    too_large(
        alice.put(&profile_path("displayname"), &json!({ "displayname": huge() })).await.unwrap(),
        "name",
    );
    let long_name = json!({ "displayname": "n".repeat(257) });
    too_large(alice.put(&profile_path("displayname"), &long_name).await.unwrap(), "name over 256 characters");
    let avatar = json!({ "avatar_url": format!("mxc://localhost/{}", huge()) });
    too_large(alice.put(&profile_path("avatar_url"), &avatar).await.unwrap(), "avatar");

    // Nothing changed.
    assert_eq!(
        joined_members(&alice, &room).await,
        BTreeSet::from([alice.user_id.clone(), bob.user_id.clone()])
    );
    assert_eq!(joined_rooms(&carol).await, BTreeSet::new());
    assert_eq!(get_ok(&alice, &room_path(&room, "state/m.room.topic/")).await["topic"], "calm");
    assert_eq!(get_ok(&alice, &member_path).await, alice_member);
    let dave_member =
        get_ok(&alice, &room_path(&room, &format!("state/m.room.member/{}", enc(&dave.user_id)))).await;
    assert_eq!(dave_member["membership"], "ban");
    assert_eq!(get_ok(&alice, &format!("/profile/{}", enc(&alice.user_id))).await, profile);
    let kept = get_ok(&alice, &room_path(&room, &format!("event/{}", enc(&target)))).await;
    assert_eq!(kept["content"]["body"], "keep me");
    assert!(
        get_ok(&alice, &room_path(&room, "state/m.room.canonical_alias/")).await["alias"]
            == "#limits:localhost"
    );

    // Around the limit: the longest body that builds, found by bisection; every answer on the
    // way is a success or 413. Hashes, signatures and the room's auth events count.
    let mut expected = Vec::new();
    let (mut fits, mut too_long) = (60_000, 66_000);
    let mut txn = 0;
    while too_long - fits > 1 {
        let middle = (fits + too_long) / 2;
        txn += 1;
        let response = send_body(&alice, &room, &format!("edge-{txn}"), middle).await;
        if response.status == 200 {
            expected.push(response.body["event_id"].as_str().unwrap().to_owned());
            fits = middle;
        } else {
            too_large(response, &format!("body of {middle} bytes"));
            too_long = middle;
        }
    }
    assert!((64_000..65_535).contains(&fits), "longest body that builds: {fits} bytes");
    // A burst, likely one group commit: just over the limit (past the template check, refused
    // by the builder) fails alone; the others land.
    let (small_1, over, small_2, small_3) = tokio::join!(
        send_body(&alice, &room, "burst-1", 10),
        send_body(&alice, &room, "burst-over", fits + 40),
        send_body(&alice, &room, "burst-2", 10),
        send_body(&bob, &room, "burst-3", 10),
    );
    too_large(over, "just over the limit");
    for response in [small_1, small_2, small_3] {
        expected.push(response.ok()["event_id"].as_str().unwrap().to_owned());
    }
    let after = alice.send_text(&room, "after").await.unwrap();
    expected.push(after.clone());

    let mut seen = timeline_ids_until(&alice, &mut since, &room, &after).await;
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected, "the timeline has events other than the accepted sends");

    // Older room versions place `redacts` and the room id differently; the limits are the same.
    for version in ["10", "11"] {
        let old = alice.create_room(&json!({ "room_version": version })).await.unwrap();
        let message = alice.send_text(&old, "keep").await.unwrap();
        let history = || async {
            let page = get_ok(&alice, &room_path(&old, "messages?dir=b&limit=50")).await;
            page["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].clone()).collect::<Vec<_>>()
        };
        let before = history().await;
        too_large(send_body(&alice, &old, &format!("v{version}-huge"), HUGE).await, "send");
        let redact_path = room_path(&old, &format!("redact/{}/v{version}-redact", enc(&message)));
        too_large(alice.put(&redact_path, &reason).await.unwrap(), "redact");
        too_large(alice.put(&room_path(&old, "state/m.room.topic/"), &topic).await.unwrap(), "state");
        too_large(bob.post(&format!("/join/{}", enc(&old)), &reason).await.unwrap(), "join");
        assert_eq!(history().await, before, "room version {version}");
    }
}

/// `createRoom` with one field too large (413) or one identifier too long (400) leaves no room;
/// identifiers in paths and bodies over 255 bytes answer 400; exactly 255 is accepted.
async fn create_room_and_identifier_limits(backend: Backend) {
    let server = start(backend).await;
    let alice = register_all(&server, &["alice"]).await.remove(0);
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    let after_setup = alice.send_text(&room, "setup").await.unwrap();
    let mut since = initial_since(&alice, "").await;

    let state = |kind: &str, key: &str, content: Value| json!([{ "type": kind, "state_key": key, "content": content }]);
    let too_large_bodies = [
        ("name", json!({ "name": huge() })),
        ("topic", json!({ "topic": huge() })),
        ("room_alias_name", json!({ "room_alias_name": huge() })),
        ("creation_content", json!({ "creation_content": { "m.federate": true, "x": huge() } })),
        ("initial_state", json!({ "initial_state": state("org.example.big", "", json!({ "x": huge() })) })),
        ("initial_state type", json!({ "initial_state": state(&huge(), "", json!({})) })),
        (
            "power_level_content_override",
            json!({ "power_level_content_override": { "events": { huge(): 50 } } }),
        ),
    ];
    for (what, body) in &too_large_bodies {
        too_large(alice.post("/createRoom", body).await.unwrap(), what);
    }
    let long = "t".repeat(256);
    let at_limit = "t".repeat(255);
    let alias = alice.post("/createRoom", &json!({ "room_alias_name": "a".repeat(300) })).await.unwrap();
    alias.err(400, "M_INVALID_PARAM");
    let body = json!({ "initial_state": state(&long, "", json!({})) });
    alice.post("/createRoom", &body).await.unwrap().err(400, "M_BAD_JSON");
    let body = json!({ "initial_state": state("org.example.state", &long, json!({})) });
    alice.post("/createRoom", &body).await.unwrap().err(400, "M_BAD_JSON");
    assert_eq!(
        joined_rooms(&alice).await,
        BTreeSet::from([room.clone()]),
        "a refused createRoom left a room"
    );

    // A name near the limit: some sizes pass the template check and fail only in the builder,
    // after the create, member and power level events are in the batch. Each either makes a
    // whole room or none.
    let mut made = BTreeSet::from([room.clone()]);
    let (mut refused, mut accepted) = (0, 0);
    for len in (64_800..=65_500).step_by(50) {
        let response = alice.post("/createRoom", &json!({ "name": "n".repeat(len) })).await.unwrap();
        if response.status == 200 {
            let new_room = response.body["room_id"].as_str().unwrap().to_owned();
            assert_eq!(
                get_ok(&alice, &room_path(&new_room, "state/m.room.name/")).await["name"]
                    .as_str()
                    .unwrap()
                    .len(),
                len
            );
            made.insert(new_room);
            accepted += 1;
        } else {
            too_large(response, &format!("name of {len} bytes"));
            refused += 1;
        }
        assert_eq!(joined_rooms(&alice).await, made, "after a name of {len} bytes");
    }
    assert!(accepted > 0 && refused > 0, "{accepted} accepted, {refused} refused");
    let next = alice.create_room(&json!({ "name": "next" })).await.unwrap();
    made.insert(next.clone());
    assert_eq!(joined_rooms(&alice).await, made);

    // Event type, state key and transaction id: 255 bytes pass, 256 do not.
    let mut expected = Vec::new();
    let send = |kind: &str, txn: &str| room_path(&room, &format!("send/{}/{}", enc(kind), enc(txn)));
    alice.put(&send(&long, "type-256"), &json!({})).await.unwrap().err(400, "M_BAD_JSON");
    expected
        .push(alice.put(&send(&at_limit, "type-255"), &json!({})).await.unwrap().ok()["event_id"].clone());
    let state_path = |kind: &str, key: &str| room_path(&room, &format!("state/{}/{}", enc(kind), enc(key)));
    alice.put(&state_path(&long, ""), &json!({})).await.unwrap().err(400, "M_BAD_JSON");
    alice.put(&state_path("org.example.state", &long), &json!({})).await.unwrap().err(400, "M_BAD_JSON");
    expected.push(
        alice.put(&state_path(&at_limit, &at_limit), &json!({})).await.unwrap().ok()["event_id"].clone(),
    );
    alice
        .put(&send("m.room.message", &long), &json!({ "body": "t" }))
        .await
        .unwrap()
        .err(400, "M_INVALID_PARAM");
    let sent = alice.put(&send("m.room.message", &at_limit), &json!({ "body": "t" })).await.unwrap().ok();
    expected.push(sent["event_id"].clone());
    // The same transaction id again is the same event.
    let again = alice.put(&send("m.room.message", &at_limit), &json!({ "body": "t" })).await.unwrap().ok();
    assert_eq!(again["event_id"], sent["event_id"]);

    // Room and event ids over 255 bytes, and path segments of many KiB: a 4xx Matrix error.
    let long_room = format!("!{}:localhost", "r".repeat(300));
    let long_event = format!("${}", "e".repeat(300));
    let bad_ids = [
        ("PUT", format!("/rooms/{}/send/m.room.message/t1", enc(&long_room))),
        ("PUT", format!("/rooms/{}/state/m.room.topic/", enc(&long_room))),
        ("PUT", room_path(&room, &format!("redact/{}/t2", enc(&long_event)))),
        ("POST", format!("/rooms/{}/join", enc(&long_room))),
        ("POST", format!("/join/{}", enc(&long_room))),
        ("POST", format!("/rooms/{}/leave", enc(&long_room))),
    ];
    for (method, path) in &bad_ids {
        let response = match *method {
            "PUT" => alice.put(path, &json!({ "topic": "t" })).await.unwrap(),
            _ => alice.post(path, &json!({})).await.unwrap(),
        };
        response.err(400, "M_INVALID_PARAM");
    }
    // Identifiers that end up in unique indexes, outside events: account data types, thread ids.
    let user = enc(&alice.user_id);
    let account_data = |kind: &str| format!("/user/{user}/account_data/{}", enc(kind));
    let room_data = |kind: &str| format!("/user/{user}/rooms/{}/account_data/{}", enc(&room), enc(kind));
    for path in [account_data(&long), room_data(&long), account_data(&noise(6_000)), room_data(&noise(6_000))]
    {
        alice.put(&path, &json!({ "a": 1 })).await.unwrap().err(400, "M_INVALID_PARAM");
    }
    alice.put(&account_data(&at_limit), &json!({ "a": 1 })).await.unwrap().ok();
    assert_eq!(get_ok(&alice, &account_data(&at_limit)).await, json!({ "a": 1 }));
    let receipt = room_path(&room, &format!("receipt/m.read/{}", enc(&after_setup)));
    alice.post(&receipt, &json!({ "thread_id": noise(6_000) })).await.unwrap().err(400, "M_INVALID_PARAM");
    let invite = json!({ "user_id": format!("@{}:localhost", "u".repeat(300)) });
    alice.post(&room_path(&room, "invite"), &invite).await.unwrap().err(400, "M_INVALID_PARAM");
    for len in [4_000, 20_000] {
        let segment = noise(len);
        for path in [
            send(&segment, "t3"),
            send("m.room.message", &segment),
            state_path("org.example.state", &segment),
        ] {
            let response = alice.put(&path, &json!({ "body": "t" })).await.unwrap();
            assert!(
                (400..500).contains(&response.status) && response.errcode().is_some(),
                "{len}-byte segment: {} {}",
                response.status,
                response.text
            );
        }
    }

    let after = alice.send_text(&room, "after").await.unwrap();
    expected.push(json!(after));
    let expected: BTreeSet<String> = expected.iter().map(|id| id.as_str().unwrap().to_owned()).collect();
    let seen: BTreeSet<String> =
        timeline_ids_until(&alice, &mut since, &room, &after).await.into_iter().collect();
    assert_eq!(seen, expected, "the timeline has events other than the accepted sends");
}
