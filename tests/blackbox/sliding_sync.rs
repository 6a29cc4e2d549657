//! Simplified sliding sync (MSC4186) over raw HTTP: list ranges sorted by recency and their
//! counts, changes only after `pos`, required state (`$LAZY`, `$ME`, wildcards), list filters,
//! room subscriptions, the extensions, long-polling and `M_UNKNOWN_POS`.

use ganglion_testkit::{Account, Backend, enc};
use serde_json::{Value, json};

use crate::{SYNC_DEADLINE, register_all, start};

on_all_backends!(
    lists_are_sorted_by_recency_and_carry_only_changes,
    required_state_follows_lazy_me_and_wildcards,
    list_filters_select_rooms,
    extensions_carry_keys_receipts_typing_and_account_data,
    a_room_back_in_range_catches_up_on_receipts_typing_and_account_data,
    unknown_positions_are_refused,
    a_long_poll_answers_when_a_message_arrives,
    steady_state_answers_come_from_memory,
    ignoring_a_user_sends_held_rooms_again_without_them
);

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// One sliding sync request; the answer must be 200.
async fn slide(account: &Account, pos: Option<&str>, timeout_ms: u64, body: &Value) -> Value {
    let mut query = format!("?timeout={timeout_ms}");
    if let Some(pos) = pos {
        query.push_str(&format!("&pos={}", enc(pos)));
    }
    let response = account.post(&format!("{PATH}{query}"), body).await.unwrap();
    assert_eq!(response.status, 200, "sliding sync failed: {}", response.text);
    response.body
}

/// Repeats one request (the same `pos`, so the same connection state) until `done` accepts the
/// answer: in a cluster the sync worker learns of a write a moment after the write returns.
async fn slide_until(
    account: &Account,
    pos: Option<&str>,
    body: &Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
    loop {
        let answer = slide(account, pos, 0, body).await;
        if done(&answer) || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn pos_of(answer: &Value) -> String {
    answer["pos"].as_str().expect("answer without pos").to_owned()
}

/// Room ids of an answer's `rooms`, newest bump stamp first.
fn rooms_by_recency(answer: &Value) -> Vec<String> {
    let mut rooms: Vec<(i64, String)> = answer["rooms"]
        .as_object()
        .map(|rooms| {
            rooms.iter().map(|(id, room)| (room["bump_stamp"].as_i64().unwrap(), id.clone())).collect()
        })
        .unwrap_or_default();
    rooms.sort_by_key(|room| std::cmp::Reverse(room.0));
    rooms.into_iter().map(|(_, id)| id).collect()
}

fn bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|event| event["type"] == "m.room.message")
                .map(|event| event["content"]["body"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `(type, state_key)` of a room's `required_state`, sorted.
fn state_pairs(room: &Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = room["required_state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (event["type"].as_str().unwrap().to_owned(), event["state_key"].as_str().unwrap().to_owned())
        })
        .collect();
    pairs.sort();
    pairs
}

fn pair(kind: &str, key: &str) -> (String, String) {
    (kind.to_owned(), key.to_owned())
}

async fn lists_are_sorted_by_recency_and_carry_only_changes(backend: Backend) {
    let server = start(backend).await;
    let versions = server.api().get("/_matrix/client/versions", None).await.unwrap().ok();
    assert_eq!(versions["unstable_features"]["org.matrix.simplified_msc3575"], true);
    let [alice] = <[Account; 1]>::try_from(register_all(&server, &["alice"]).await).unwrap();
    let mut rooms = Vec::new();
    for index in 0..5 {
        let room = alice.create_room(&json!({ "name": format!("room {index}") })).await.unwrap();
        alice.send_text(&room, &format!("hello {index}")).await.unwrap();
        rooms.push(room);
    }
    let list = json!({ "lists": { "all": { "ranges": [[0, 2]], "timeline_limit": 1, "required_state": [["m.room.name", ""]] } } });
    let first = slide_until(&alice, None, &list, |a| {
        a["lists"]["all"]["count"] == 5 && bodies(&a["rooms"][&rooms[4]]) == ["hello 4"]
    })
    .await;
    assert_eq!(first["lists"]["all"]["count"], 5, "{first:#}");
    // The three most recent rooms, newest first, each whole with its newest message.
    assert_eq!(rooms_by_recency(&first), vec![rooms[4].clone(), rooms[3].clone(), rooms[2].clone()]);
    let newest = &first["rooms"][&rooms[4]];
    assert_eq!(newest["initial"], true);
    assert_eq!(newest["name"], "room 4");
    assert_eq!(bodies(newest), vec!["hello 4"]);
    assert_eq!(newest["limited"], true, "one event shown of several");
    assert!(newest["prev_batch"].is_string());
    assert_eq!(newest["joined_count"], 1);
    assert_eq!(state_pairs(newest), vec![pair("m.room.name", "")]);

    // Nothing new: a request with the pos and no timeout answers with no rooms.
    let pos = pos_of(&first);
    let quiet = slide(&alice, Some(&pos), 0, &list).await;
    assert!(quiet["rooms"].as_object().unwrap().is_empty(), "{quiet:#}");

    // A message in the oldest room brings it to the top: it goes out whole (the client never
    // had it); a room already sent carries only what is new.
    alice.send_text(&rooms[0], "back to the top").await.unwrap();
    alice.send_text(&rooms[4], "again").await.unwrap();
    let moved =
        slide_until(&alice, Some(&pos_of(&quiet)), &list, |a| bodies(&a["rooms"][&rooms[4]]) == ["again"])
            .await;
    assert_eq!(rooms_by_recency(&moved), vec![rooms[4].clone(), rooms[0].clone()], "{moved:#}");
    assert_eq!(moved["rooms"][&rooms[0]]["initial"], true);
    assert_eq!(bodies(&moved["rooms"][&rooms[0]]), vec!["back to the top"]);
    let again = &moved["rooms"][&rooms[4]];
    assert!(again.get("initial").is_none(), "{again:#}");
    assert_eq!(bodies(again), vec!["again"]);
    assert_eq!(again["num_live"], 1);
    assert_eq!(again["limited"], false);
    assert!(again.get("name").is_none(), "an unchanged name is not repeated: {again:#}");
    assert!(moved["rooms"][&rooms[0]]["bump_stamp"].as_i64() < again["bump_stamp"].as_i64());

    // A room subscription brings a room outside the ranges, with its own timeline limit.
    let subscribed = json!({
        "lists": list["lists"],
        "room_subscriptions": { (rooms[1].clone()): { "timeline_limit": 50, "required_state": [] } },
    });
    let with_sub = slide(&alice, Some(&pos_of(&moved)), 0, &subscribed).await;
    let room = &with_sub["rooms"][&rooms[1]];
    assert_eq!(room["initial"], true, "{with_sub:#}");
    assert_eq!(bodies(room), vec!["hello 1"]);
    assert_eq!(room["limited"], false, "the whole room fits in 50 events");

    // The same pos again (a lost answer retried) gives the same rooms again.
    let retried = slide(&alice, Some(&pos_of(&moved)), 0, &subscribed).await;
    assert_eq!(retried["rooms"][&rooms[1]]["initial"], true);
}

async fn required_state_follows_lazy_me_and_wildcards(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob, carol, dave] =
        <[Account; 4]>::try_from(register_all(&server, &["alice", "bob", "carol", "dave"]).await).unwrap();
    let room = alice
        .create_room(&json!({ "preset": "public_chat", "name": "State", "topic": "things" }))
        .await
        .unwrap();
    for account in [&bob, &carol, &dave] {
        account.join(&room).await.unwrap();
    }
    bob.send_text(&room, "from bob").await.unwrap();
    carol.send_text(&room, "from carol").await.unwrap();
    let lazy = json!({ "lists": { "l": {
        "ranges": [[0, 0]],
        "timeline_limit": 2,
        "required_state": [["m.room.name", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"]],
    } } });
    let answer = slide_until(&dave, None, &lazy, |a| bodies(&a["rooms"][&room]).len() == 2).await;
    let section = &answer["rooms"][&room];
    assert_eq!(bodies(section), vec!["from bob", "from carol"]);
    // The timeline's senders and the user, not Alice (who sent nothing shown).
    assert_eq!(
        state_pairs(section),
        vec![
            pair("m.room.member", &bob.user_id),
            pair("m.room.member", &carol.user_id),
            pair("m.room.member", &dave.user_id),
            pair("m.room.name", ""),
        ],
        "{section:#}"
    );
    assert_eq!(section["joined_count"], 4);

    // A sender already sent is not sent again; a new one is.
    bob.send_text(&room, "bob again").await.unwrap();
    alice.send_text(&room, "alice speaks").await.unwrap();
    let next =
        slide_until(&dave, Some(&pos_of(&answer)), &lazy, |a| bodies(&a["rooms"][&room]).len() == 2).await;
    assert_eq!(state_pairs(&next["rooms"][&room]), vec![pair("m.room.member", &alice.user_id)], "{next:#}");

    // Wildcards: every state event of the room.
    let all = json!({ "lists": { "l": { "ranges": [[0, 0]], "timeline_limit": 0, "required_state": [["*", "*"]] } } });
    let whole = slide_until(&carol, None, &all, |a| a["rooms"][&room].is_object()).await;
    let pairs = state_pairs(&whole["rooms"][&room]);
    for expected in
        [pair("m.room.create", ""), pair("m.room.topic", ""), pair("m.room.member", &dave.user_id)]
    {
        assert!(pairs.contains(&expected), "{expected:?} missing from {pairs:?}");
    }
    // A type with any state key.
    let members = json!({ "lists": { "l": { "ranges": [[0, 0]], "timeline_limit": 0, "required_state": [["m.room.member", "*"]] } } });
    let answer = slide(&carol, None, 0, &members).await;
    let pairs = state_pairs(&answer["rooms"][&room]);
    assert_eq!(pairs.len(), 4, "{pairs:?}");
    assert!(pairs.iter().all(|(kind, _)| kind == "m.room.member"));
}

async fn list_filters_select_rooms(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let plain = alice.create_room(&json!({ "name": "plain" })).await.unwrap();
    let encrypted = alice
        .create_room(&json!({
            "name": "secret",
            "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }],
        }))
        .await
        .unwrap();
    let space = alice
        .create_room(&json!({ "name": "space", "creation_content": { "type": "m.space" } }))
        .await
        .unwrap();
    alice
        .send_state(&space, "m.space.child", &plain, &json!({ "via": [server.server_name.clone()] }))
        .await
        .unwrap();
    let dm = bob.create_room(&json!({ "is_direct": true, "invite": [alice.user_id.clone()] })).await.unwrap();
    let joined_dm = alice.create_room(&json!({ "name": "direct" })).await.unwrap();
    alice
        .put(
            &format!("/user/{}/account_data/m.direct", enc(&alice.user_id)),
            &json!({ (bob.user_id.clone()): [joined_dm.clone()] }),
        )
        .await
        .unwrap()
        .ok();
    let list = |filters: Value| json!({ "lists": { "l": { "ranges": [[0, 20]], "timeline_limit": 0, "filters": filters } } });
    let ids = |answer: &Value| {
        let mut ids: Vec<String> = answer["rooms"].as_object().unwrap().keys().cloned().collect();
        ids.sort();
        ids
    };
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    let cases = [
        (json!({ "is_invite": true }), vec![dm.clone()]),
        (json!({ "is_encrypted": true }), vec![encrypted.clone()]),
        // The user's `m.direct`, and an invite marked `is_direct`.
        (json!({ "is_dm": true }), vec![joined_dm.clone(), dm.clone()]),
        (json!({ "room_types": ["m.space"] }), vec![space.clone()]),
        (json!({ "spaces": [space.clone()] }), vec![plain.clone()]),
        (
            json!({ "not_room_types": ["m.space"], "is_encrypted": false, "is_dm": false }),
            vec![plain.clone()],
        ),
    ];
    for (filters, expected) in cases {
        let answer =
            slide_until(&alice, None, &list(filters.clone()), |a| ids(a) == sorted(expected.clone())).await;
        assert_eq!(ids(&answer), sorted(expected.clone()), "filters {filters}: {answer:#}");
        assert_eq!(answer["lists"]["l"]["count"], expected.len());
    }
    // An invite comes with its stripped state.
    let answer = slide(&alice, None, 0, &list(json!({ "is_invite": true }))).await;
    let invite_state = answer["rooms"][&dm]["invite_state"].as_array().expect("invite_state");
    assert!(
        invite_state
            .iter()
            .any(|event| event["type"] == "m.room.member" && event["state_key"] == alice.user_id.as_str())
    );
}

async fn extensions_carry_keys_receipts_typing_and_account_data(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room).await.unwrap();
    let event_id = alice.send_text(&room, "read me").await.unwrap();
    alice
        .put(&format!("/user/{}/account_data/org.example.global", enc(&alice.user_id)), &json!({ "a": 1 }))
        .await
        .unwrap()
        .ok();
    alice
        .put(
            &format!("/user/{}/rooms/{}/account_data/org.example.room", enc(&alice.user_id), enc(&room)),
            &json!({ "b": 2 }),
        )
        .await
        .unwrap()
        .ok();
    bob.post(&format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event_id)), &json!({}))
        .await
        .unwrap()
        .ok();
    let body = json!({
        "lists": { "l": { "ranges": [[0, 5]], "timeline_limit": 1 } },
        "extensions": {
            "to_device": { "enabled": true },
            "e2ee": { "enabled": true },
            "account_data": { "enabled": true },
            "receipts": { "enabled": true },
            "typing": { "enabled": true },
        },
    });
    let first = slide_until(&alice, None, &body, |a| {
        a["extensions"]["receipts"]["rooms"][&room].is_object()
            && a["extensions"]["account_data"]["rooms"][&room].is_array()
    })
    .await;
    let ext = &first["extensions"];
    assert!(ext["to_device"]["next_batch"].is_string(), "{ext:#}");
    assert_eq!(ext["e2ee"]["device_one_time_keys_count"]["signed_curve25519"], 0);
    let global: Vec<&str> = ext["account_data"]["global"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(global.contains(&"org.example.global") && global.contains(&"m.push_rules"), "{global:?}");
    assert_eq!(ext["account_data"]["rooms"][&room][0]["type"], "org.example.room");
    assert!(
        ext["receipts"]["rooms"][&room]["content"][&event_id]["m.read"][&bob.user_id]["ts"].is_u64(),
        "{ext:#}"
    );

    // Later: a to-device message, typing, a receipt and a device-list change arrive.
    let pos = pos_of(&first);
    let to_device_since = ext["to_device"]["next_batch"].as_str().unwrap().to_owned();
    bob.put(
        "/sendToDevice/org.example.ping/txn1",
        &json!({ "messages": { (alice.user_id.clone()): { (alice.device_id.clone()): { "n": 1 } } } }),
    )
    .await
    .unwrap()
    .ok();
    bob.put(
        &format!("/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id)),
        &json!({ "typing": true, "timeout": 30000 }),
    )
    .await
    .unwrap()
    .ok();
    let reply = bob.send_text(&room, "typed").await.unwrap();
    alice
        .post(&format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&reply)), &json!({}))
        .await
        .unwrap()
        .ok();
    // A newcomer to a shared room: the client must fetch their devices.
    let carol = server.register("carol", crate::PASSWORD).await.unwrap();
    carol.join(&room).await.unwrap();
    let mut body = body.clone();
    body["extensions"]["to_device"]["since"] = json!(to_device_since);
    let later = slide_until(&alice, Some(&pos), &body, |a| {
        let ext = &a["extensions"];
        ext["to_device"]["events"].as_array().is_some_and(|events| !events.is_empty())
            && ext["typing"]["rooms"][&room].is_object()
            && ext["receipts"]["rooms"][&room]["content"][&reply].is_object()
            && ext["e2ee"]["device_lists"]["changed"].as_array().is_some_and(|changed| !changed.is_empty())
    })
    .await;
    let ext = &later["extensions"];
    let messages = ext["to_device"]["events"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{ext:#}");
    assert_eq!(messages[0]["type"], "org.example.ping");
    assert_eq!(ext["typing"]["rooms"][&room]["content"]["user_ids"], json!([bob.user_id.clone()]));
    assert!(
        ext["receipts"]["rooms"][&room]["content"][&reply]["m.read"][&alice.user_id].is_object(),
        "{ext:#}"
    );
    assert!(ext["account_data"]["global"].as_array().unwrap().is_empty());
    assert_eq!(ext["e2ee"]["device_lists"]["changed"], json!([carol.user_id.clone()]), "{ext:#}");

    // Acknowledged to-device messages are not sent again.
    let mut body = body.clone();
    body["extensions"]["to_device"]["since"] = ext["to_device"]["next_batch"].clone();
    let after = slide(&alice, Some(&pos_of(&later)), 0, &body).await;
    assert!(after["extensions"]["to_device"]["events"].as_array().unwrap().is_empty());
}

async fn a_room_back_in_range_catches_up_on_receipts_typing_and_account_data(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let front = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    let away = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&front).await.unwrap();
    bob.join(&away).await.unwrap();
    let read = alice.send_text(&away, "read me later").await.unwrap();
    let extensions = json!({
        "account_data": { "enabled": true },
        "receipts": { "enabled": true },
        "typing": { "enabled": true },
    });
    // Only the most recent room is in range.
    let body = json!({
        "lists": { "top": { "ranges": [[0, 0]], "timeline_limit": 1 } },
        "extensions": extensions,
    });
    let first = slide_until(&alice, None, &body, |a| bodies(&a["rooms"][&away]) == ["read me later"]).await;
    assert_eq!(first["rooms"][&away]["initial"], true, "{first:#}");

    // A message in the other room pushes `away` out of range.
    alice.send_text(&front, "on top").await.unwrap();
    let pushed =
        slide_until(&alice, Some(&pos_of(&first)), &body, |a| bodies(&a["rooms"][&front]) == ["on top"])
            .await;
    assert!(pushed["rooms"][&away].is_null(), "{pushed:#}");

    // Out of range, `away` gets a receipt, typing and room account data.
    bob.post(&format!("/rooms/{}/receipt/m.read/{}", enc(&away), enc(&read)), &json!({})).await.unwrap().ok();
    bob.put(
        &format!("/rooms/{}/typing/{}", enc(&away), enc(&bob.user_id)),
        &json!({ "typing": true, "timeout": 60000 }),
    )
    .await
    .unwrap()
    .ok();
    alice
        .put(
            &format!("/user/{}/rooms/{}/account_data/org.example.note", enc(&alice.user_id), enc(&away)),
            &json!({ "note": "while away" }),
        )
        .await
        .unwrap()
        .ok();
    // Another connection subscribed to `away` shows them: the sync worker has them all.
    let watch = json!({ "conn_id": "watch", "room_subscriptions": { (away.clone()): { "timeline_limit": 1 } }, "extensions": extensions });
    slide_until(&alice, None, &watch, |a| {
        let ext = &a["extensions"];
        ext["receipts"]["rooms"][&away]["content"][&read]["m.read"][&bob.user_id].is_object()
            && ext["typing"]["rooms"][&away]["content"]["user_ids"] == json!([bob.user_id.clone()])
            && ext["account_data"]["rooms"][&away][0]["type"] == "org.example.note"
    })
    .await;

    // An answer while `away` is still out of range carries none of it.
    alice.send_text(&front, "still on top").await.unwrap();
    let meanwhile = slide_until(&alice, Some(&pos_of(&pushed)), &body, |a| {
        bodies(&a["rooms"][&front]) == ["still on top"]
    })
    .await;
    let ext = &meanwhile["extensions"];
    assert!(meanwhile["rooms"][&away].is_null(), "{meanwhile:#}");
    assert!(ext["receipts"]["rooms"][&away].is_null(), "{ext:#}");
    assert!(ext["typing"]["rooms"][&away].is_null(), "{ext:#}");
    assert!(ext["account_data"]["rooms"][&away].is_null(), "{ext:#}");

    // Back on top, `away` is a delta (the client holds it), and what changed while it was out of
    // range comes with it.
    alice.send_text(&away, "back").await.unwrap();
    let back =
        slide_until(&alice, Some(&pos_of(&meanwhile)), &body, |a| bodies(&a["rooms"][&away]) == ["back"])
            .await;
    assert!(back["rooms"][&away]["initial"].is_null(), "{back:#}");
    let ext = &back["extensions"];
    assert!(ext["receipts"]["rooms"][&away]["content"][&read]["m.read"][&bob.user_id].is_object(), "{ext:#}");
    assert_eq!(ext["typing"]["rooms"][&away]["content"]["user_ids"], json!([bob.user_id.clone()]), "{ext:#}");
    assert_eq!(ext["account_data"]["rooms"][&away][0]["type"], "org.example.note", "{ext:#}");
    assert_eq!(ext["account_data"]["rooms"][&away][0]["content"]["note"], "while away", "{ext:#}");
}

async fn unknown_positions_are_refused(backend: Backend) {
    let server = start(backend).await;
    let [alice] = <[Account; 1]>::try_from(register_all(&server, &["alice"]).await).unwrap();
    let body = json!({ "conn_id": "main", "lists": { "l": { "ranges": [[0, 5]] } } });
    let first = slide(&alice, None, 0, &body).await;
    for (pos, conn_id) in [("junk", "main"), ("0000_1", "main"), (pos_of(&first).as_str(), "other")] {
        let mut body = body.clone();
        body["conn_id"] = json!(conn_id);
        let response = alice.post(&format!("{PATH}?pos={}", enc(pos)), &body).await.unwrap();
        response.err(400, "M_UNKNOWN_POS");
    }
    // Malformed requests are refused as such.
    let bad_range = json!({ "lists": { "l": { "ranges": [[5, 1]] } } });
    alice.post(PATH, &bad_range).await.unwrap().err(400, "M_INVALID_PARAM");
    let long_conn = json!({ "conn_id": "c".repeat(300) });
    alice.post(PATH, &long_conn).await.unwrap().err(400, "M_INVALID_PARAM");
    let bad_shape = json!({ "lists": { "l": { "ranges": "all" } } });
    alice.post(PATH, &bad_shape).await.unwrap().err(400, "M_BAD_JSON");
    server.api().post(PATH, None, &body).await.unwrap().err(401, "M_MISSING_TOKEN");
}

async fn a_long_poll_answers_when_a_message_arrives(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room).await.unwrap();
    let body = json!({ "lists": { "l": { "ranges": [[0, 5]], "timeline_limit": 5 } } });
    let first = slide_until(&bob, None, &body, |a| a["rooms"][&room].is_object()).await;
    let pos = pos_of(&first);
    let poll = {
        let bob = bob.clone();
        let body = body.clone();
        tokio::spawn(async move { slide(&bob, Some(&pos), 20_000, &body).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    alice.send_text(&room, "wake up").await.unwrap();
    let answer = tokio::time::timeout(SYNC_DEADLINE, poll).await.expect("long poll did not answer").unwrap();
    assert_eq!(bodies(&answer["rooms"][&room]), vec!["wake up"], "{answer:#}");
    assert_eq!(answer["rooms"][&room]["num_live"], 1);
}

async fn steady_state_answers_come_from_memory(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let mut rooms = Vec::new();
    for index in 0..30 {
        let room = bob
            .create_room(&json!({ "name": format!("room {index}"), "preset": "public_chat" }))
            .await
            .unwrap();
        alice.join(&room).await.unwrap();
        rooms.push(room);
    }
    // As Element X asks: the first 20 rooms, and every extension.
    let mut body = json!({
        "conn_id": "room-list",
        "lists": { "all_rooms": {
            "ranges": [[0, 19]],
            "timeline_limit": 1,
            "required_state": [["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"]],
        } },
        "extensions": {
            "to_device": { "enabled": true },
            "e2ee": { "enabled": true },
            "account_data": { "enabled": true },
            "receipts": { "enabled": true, "rooms": ["*"] },
            "typing": { "enabled": true },
        },
    });
    let first = slide_until(&alice, None, &body, |a| a["lists"]["all_rooms"]["count"] == 30).await;
    assert_eq!(first["rooms"].as_object().unwrap().len(), 20);
    let mut pos = pos_of(&first);
    body["extensions"]["to_device"]["since"] = first["extensions"]["to_device"]["next_batch"].clone();
    // Settle: the connection's first incremental answers may still read what memory had not
    // seen (a room's bump stamp, the user's account data).
    for _ in 0..2 {
        pos = pos_of(&slide(&alice, Some(&pos), 0, &body).await);
    }

    // Bob speaks for the first time: his member event goes out for `$LAZY` (a worker may read
    // it from the database once).
    bob.send_text(&rooms[25], "hello").await.unwrap();
    let hello =
        slide_until(&alice, Some(&pos), &body, |a| bodies(&a["rooms"][&rooms[25]]) == ["hello"]).await;
    pos = pos_of(&hello);

    // A message in a room the client holds: answered from memory. (A room new to the
    // connection is read from the database, alone.)
    bob.send_text(&rooms[25], "news").await.unwrap();
    let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
    let (answer, source) = loop {
        let response = alice.post(&format!("{PATH}?timeout=0&pos={}", enc(&pos)), &body).await.unwrap();
        let source = response.headers.get("x-ganglion-sync-source").unwrap().to_str().unwrap().to_owned();
        let answer = response.ok();
        if answer["rooms"][&rooms[25]].is_object() || tokio::time::Instant::now() >= deadline {
            break (answer, source);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(bodies(&answer["rooms"][&rooms[25]]), vec!["news"], "{answer:#}");
    assert_eq!(source, "memory", "the steady state read the database");
    // Nothing new: memory as well.
    let quiet = alice.post(&format!("{PATH}?timeout=0&pos={}", enc(&pos_of(&answer))), &body).await.unwrap();
    assert_eq!(quiet.headers.get("x-ganglion-sync-source").unwrap(), "memory");
}

async fn ignoring_a_user_sends_held_rooms_again_without_them(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room).await.unwrap();
    alice.send_text(&room, "from alice").await.unwrap();
    bob.send_text(&room, "from bob").await.unwrap();
    let body = json!({ "lists": { "l": { "ranges": [[0, 0]], "timeline_limit": 10 } } });
    let first =
        slide_until(&alice, None, &body, |a| bodies(&a["rooms"][&room]) == ["from alice", "from bob"]).await;
    assert_eq!(bodies(&first["rooms"][&room]), vec!["from alice", "from bob"]);

    alice
        .put(
            &format!("/user/{}/account_data/m.ignored_user_list", enc(&alice.user_id)),
            &json!({ "ignored_users": { (bob.user_id.clone()): {} } }),
        )
        .await
        .unwrap()
        .ok();
    bob.send_text(&room, "ignored").await.unwrap();
    alice.send_text(&room, "alice again").await.unwrap();
    let again = slide_until(&alice, Some(&pos_of(&first)), &body, |a| {
        bodies(&a["rooms"][&room]).last().is_some_and(|last| last == "alice again")
    })
    .await;
    let section = &again["rooms"][&room];
    assert_eq!(section["initial"], true, "{again:#}");
    assert_eq!(bodies(section), vec!["from alice", "alice again"], "{again:#}");
}
