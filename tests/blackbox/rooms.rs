//! `createRoom` options, room versions, and reading state and events back.

use std::collections::HashSet;

use ganglion_testkit::{Account, Backend, enc};
use serde_json::{Value, json};

use crate::{get_ok, initial_since, register_all, room_in, start, sync_until};

on_all_backends!(
    presets_set_join_rules_history_and_guest_access,
    trusted_private_chat_gives_invitees_creator_power,
    name_topic_and_alias_with_directory_lookup,
    invite_and_is_direct_reach_the_invitee,
    initial_state_and_power_level_override_apply,
    room_versions_2_to_12_and_unknown,
    state_and_event_endpoints,
    identical_rooms_created_at_once_are_distinct_rooms,
);

/// Content of the state event `kind`/`key` in `room`.
async fn state(account: &Account, room: &str, kind: &str, key: &str) -> Value {
    get_ok(account, &format!("/rooms/{}/state/{}/{}", enc(room), enc(kind), enc(key))).await
}

async fn presets_set_join_rules_history_and_guest_access(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let mut rooms = Vec::new();
    for (preset, join_rule, guest_access) in [
        ("private_chat", "invite", "can_join"),
        ("public_chat", "public", "forbidden"),
        ("trusted_private_chat", "invite", "can_join"),
    ] {
        let room = alice.create_room(&json!({ "preset": preset })).await.unwrap();
        assert_eq!(state(&alice, &room, "m.room.join_rules", "").await["join_rule"], join_rule, "{preset}");
        assert_eq!(
            state(&alice, &room, "m.room.history_visibility", "").await["history_visibility"],
            "shared",
            "{preset}"
        );
        let guest = alice.get(&format!("/rooms/{}/state/m.room.guest_access/", enc(&room))).await.unwrap();
        if guest.status == 404 && guest_access == "forbidden" {
            // No m.room.guest_access event means `forbidden`, so leaving it out is equivalent.
            guest.err(404, "M_NOT_FOUND");
        } else {
            assert_eq!(guest.ok()["guest_access"], guest_access, "{preset}");
        }
        rooms.push(room);
    }
    bob.post(&format!("/join/{}", enc(&rooms[0])), &json!({})).await.unwrap().err(403, "M_FORBIDDEN");
    bob.join(&rooms[1]).await.unwrap();
    bob.post(&format!("/join/{}", enc(&rooms[2])), &json!({})).await.unwrap().err(403, "M_FORBIDDEN");
}

async fn trusted_private_chat_gives_invitees_creator_power(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let create = |version: &str| json!({ "preset": "trusted_private_chat", "invite": ["@bob:localhost"], "room_version": version });

    // Up to v11 power is in m.room.power_levels: the invitee gets the creator's level.
    let v11 = alice.create_room(&create("11")).await.unwrap();
    let levels = state(&alice, &v11, "m.room.power_levels", "").await;
    assert_eq!(levels["users"]["@alice:localhost"], 100, "{levels}");
    assert_eq!(levels["users"]["@bob:localhost"], levels["users"]["@alice:localhost"], "{levels}");

    // From v12 creators are above power levels: the invitee becomes an additional creator.
    let v12 = alice.create_room(&create("12")).await.unwrap();
    let created = state(&alice, &v12, "m.room.create", "").await;
    assert_eq!(created["additional_creators"], json!(["@bob:localhost"]), "{created}");
    let levels = state(&alice, &v12, "m.room.power_levels", "").await;
    for creator in ["@alice:localhost", "@bob:localhost"] {
        assert!(levels["users"].get(creator).is_none(), "v12 creators must not be in users: {levels}");
    }
    bob.join(&v12).await.unwrap();
    let mut changed = levels.clone();
    changed["users"]["@carol:localhost"] = json!(50);
    bob.put(&format!("/rooms/{}/state/m.room.power_levels/", enc(&v12)), &changed).await.unwrap().ok();
    assert_eq!(state(&alice, &v12, "m.room.power_levels", "").await["users"]["@carol:localhost"], 50);
}

async fn name_topic_and_alias_with_directory_lookup(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let room = alice
        .create_room(&json!({
            "preset": "public_chat",
            "name": "Lounge",
            "topic": "chit-chat",
            "room_alias_name": "lounge",
        }))
        .await
        .unwrap();
    assert_eq!(state(&alice, &room, "m.room.name", "").await["name"], "Lounge");
    assert_eq!(state(&alice, &room, "m.room.topic", "").await["topic"], "chit-chat");
    assert_eq!(state(&alice, &room, "m.room.canonical_alias", "").await["alias"], "#lounge:localhost");

    let directory = get_ok(&bob, &format!("/directory/room/{}", enc("#lounge:localhost"))).await;
    assert_eq!(directory["room_id"], room.as_str());
    assert!(directory["servers"].as_array().unwrap().contains(&json!("localhost")), "{directory}");
    assert_eq!(bob.join("#lounge:localhost").await.unwrap(), room, "joining by alias");
    let joined = get_ok(&bob, "/joined_rooms").await;
    assert_eq!(joined["joined_rooms"], json!([room]));

    bob.get(&format!("/directory/room/{}", enc("#nowhere:localhost"))).await.unwrap().err(404, "M_NOT_FOUND");
    let taken = alice.post("/createRoom", &json!({ "room_alias_name": "lounge" })).await.unwrap();
    taken.err(400, "M_ROOM_IN_USE");
}

async fn invite_and_is_direct_reach_the_invitee(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob, carol] =
        <[Account; 3]>::try_from(register_all(&server, &["alice", "bob", "carol"]).await).unwrap();
    let mut since = initial_since(&bob, "").await;
    let room = alice
        .create_room(&json!({ "preset": "private_chat", "invite": ["@bob:localhost"], "is_direct": true }))
        .await
        .unwrap();
    let member = state(&alice, &room, "m.room.member", "@bob:localhost").await;
    assert_eq!(member["membership"], "invite");
    assert_eq!(member["is_direct"], true, "{member}");

    let syncs = sync_until(&bob, &mut since, "", |sync| room_in(sync, "invite", &room).is_object()).await;
    let invite_state = &room_in(syncs.last().unwrap(), "invite", &room)["invite_state"]["events"];
    let own = invite_state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == "@bob:localhost")
        .unwrap_or_else(|| panic!("no invite member event in invite_state: {invite_state}"));
    assert_eq!(own["content"]["membership"], "invite");
    assert_eq!(own["content"]["is_direct"], true);
    assert_eq!(own["sender"], "@alice:localhost");

    carol.post(&format!("/join/{}", enc(&room)), &json!({})).await.unwrap().err(403, "M_FORBIDDEN");
    assert_eq!(bob.join(&room).await.unwrap(), room);
    assert_eq!(state(&alice, &room, "m.room.member", "@bob:localhost").await["membership"], "join");
}

async fn initial_state_and_power_level_override_apply(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob, carol] =
        <[Account; 3]>::try_from(register_all(&server, &["alice", "bob", "carol"]).await).unwrap();
    let room = alice
        .create_room(&json!({
            "preset": "public_chat",
            "initial_state": [
                { "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } },
                { "type": "org.ganglion.custom", "state_key": "k", "content": { "x": 1 } },
            ],
            "power_level_content_override": { "events_default": 50, "users": { "@bob:localhost": 60 } },
        }))
        .await
        .unwrap();
    // initial_state comes after the preset, so it wins.
    assert_eq!(state(&alice, &room, "m.room.history_visibility", "").await["history_visibility"], "joined");
    assert_eq!(state(&alice, &room, "org.ganglion.custom", "k").await, json!({ "x": 1 }));
    let levels = state(&alice, &room, "m.room.power_levels", "").await;
    assert_eq!(levels["events_default"], 50, "{levels}");
    assert_eq!(levels["users"]["@bob:localhost"], 60, "{levels}");

    bob.join(&room).await.unwrap();
    carol.join(&room).await.unwrap();
    bob.send_text(&room, "I have 60").await.unwrap();
    let body = json!({ "msgtype": "m.text", "body": "I have 0" });
    let denied =
        carol.put(&format!("/rooms/{}/send/m.room.message/carol-1", enc(&room)), &body).await.unwrap();
    denied.err(403, "M_FORBIDDEN");
}

async fn room_versions_2_to_12_and_unknown(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let capabilities = get_ok(&alice, "/capabilities").await;
    let versions = &capabilities["capabilities"]["m.room_versions"];
    assert_eq!(versions["default"], "12", "{capabilities}");
    let all = ["2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];
    for version in all {
        assert_eq!(versions["available"][version], "stable", "{capabilities}");
    }
    assert!(versions["available"].get("1").is_none(), "{capabilities}");

    for version in all {
        let room =
            alice.create_room(&json!({ "room_version": version, "preset": "public_chat" })).await.unwrap();
        let created = state(&alice, &room, "m.room.create", "").await;
        assert_eq!(created["room_version"], version, "{created}");
        match version {
            "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "10" => {
                assert_eq!(created["creator"], "@alice:localhost", "v{version} keeps `creator`");
                assert!(room.ends_with(":localhost"), "{room}");
            }
            "11" => {
                assert!(created.get("creator").is_none(), "v11 drops `creator`: {created}");
                assert!(room.ends_with(":localhost"), "{room}");
            }
            _ => {
                assert!(created.get("creator").is_none(), "{created}");
                assert!(!room.contains(':'), "v12 room ids are create-event hashes without a server: {room}");
            }
        }
        let sent = alice.send_text(&room, "works").await.unwrap();
        // Version 2's event ids are of the server's making and name it; later ones are hashes.
        assert_eq!(sent.ends_with(":localhost"), version == "2", "v{version}: {sent}");
        // Version 3's event ids are standard base64, which may hold `/` and `+`.
        let event = get_ok(&alice, &format!("/rooms/{}/event/{}", enc(&room), enc(&sent))).await;
        assert_eq!(event["content"]["body"], "works", "v{version}: {event}");
        // Someone else joins, and leaves, under each version's rules.
        bob.join(&room).await.unwrap();
        bob.send_text(&room, "me too").await.unwrap();
        let left = bob.post(&format!("/rooms/{}/leave", enc(&room)), &json!({})).await.unwrap();
        assert_eq!(left.status, 200, "v{version}: {}", left.text);
    }
    let default = alice.create_room(&json!({})).await.unwrap();
    assert_eq!(state(&alice, &default, "m.room.create", "").await["room_version"], "12");

    for version in ["9999", "1"] {
        let unknown = alice.post("/createRoom", &json!({ "room_version": version })).await.unwrap();
        unknown.err(400, "M_UNSUPPORTED_ROOM_VERSION");
    }
}

async fn state_and_event_endpoints(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "private_chat", "name": "S" })).await.unwrap();

    let all = get_ok(&alice, &format!("/rooms/{}/state", enc(&room))).await;
    let all = all.as_array().expect("/state is an array");
    let keys: HashSet<(&str, &str)> =
        all.iter().map(|e| (e["type"].as_str().unwrap(), e["state_key"].as_str().unwrap())).collect();
    assert_eq!(keys.len(), all.len(), "one event per (type, state_key)");
    for key in [
        ("m.room.create", ""),
        ("m.room.member", "@alice:localhost"),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.name", ""),
    ] {
        assert!(keys.contains(&key), "/state lacks {key:?}");
    }
    for event in all {
        assert!(event["event_id"].as_str().is_some_and(|id| id.starts_with('$')), "{event}");
        assert!(event["sender"].is_string() && event["content"].is_object(), "{event}");
        assert_eq!(event["room_id"], room.as_str(), "{event}");
    }

    // The empty state key may be given with or without the trailing slash.
    for path in [
        format!("/rooms/{}/state/m.room.name/", enc(&room)),
        format!("/rooms/{}/state/m.room.name", enc(&room)),
    ] {
        assert_eq!(get_ok(&alice, &path).await, json!({ "name": "S" }), "{path}");
    }
    let topic = alice.get(&format!("/rooms/{}/state/m.room.topic/", enc(&room))).await.unwrap();
    topic.err(404, "M_NOT_FOUND");

    let sent = alice.send_text(&room, "hello").await.unwrap();
    let event = get_ok(&alice, &format!("/rooms/{}/event/{}", enc(&room), enc(&sent))).await;
    assert_eq!(event["event_id"], sent.as_str());
    assert_eq!(event["type"], "m.room.message");
    assert_eq!(event["sender"], "@alice:localhost");
    assert_eq!(event["content"], json!({ "msgtype": "m.text", "body": "hello" }));
    assert!(event["origin_server_ts"].is_u64(), "{event}");
    let missing = alice.get(&format!("/rooms/{}/event/{}", enc(&room), enc("$nonexistent"))).await.unwrap();
    missing.err(404, "M_NOT_FOUND");

    // Someone who never was in the private room cannot read its state.
    bob.get(&format!("/rooms/{}/state", enc(&room))).await.unwrap().err(403, "M_FORBIDDEN");
    bob.get(&format!("/rooms/{}/state/m.room.name/", enc(&room))).await.unwrap().err(403, "M_FORBIDDEN");
}

/// In room version 12 a room's id is its create event's hash: rooms one user creates with the same
/// content in the same millisecond must still be distinct rooms.
async fn identical_rooms_created_at_once_are_distinct_rooms(backend: Backend) {
    let server = start(backend).await;
    let [alice] = <[Account; 1]>::try_from(register_all(&server, &["alice"]).await).unwrap();
    let creates = (0..20).map(|_| {
        let alice = alice.clone();
        tokio::spawn(async move { alice.create_room(&json!({ "preset": "private_chat" })).await.unwrap() })
    });
    let mut rooms = std::collections::BTreeSet::new();
    for create in creates {
        rooms.insert(create.await.unwrap());
    }
    assert_eq!(rooms.len(), 20, "{rooms:?}");
}
