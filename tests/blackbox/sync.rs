//! `/sync`: long-polling, `since` tokens, filters, `full_state`, lazy-loaded members, ephemeral
//! events (typing, receipts) and account data.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use ganglion_testkit::{Account, Backend, enc};
use serde_json::{Value, json};

use crate::{
    events_of, filter_param, get_ok, initial_since, joined_events, message_bodies, message_ids, paginate,
    register_all, room_in, start, sync_until,
};

on_all_backends!(
    long_poll_wakes_within_a_second_of_a_send,
    interleaved_sends_and_syncs_never_lose_or_duplicate,
    concurrent_sends_arrive_exactly_once_in_room_order,
    timeline_filters_limit_and_prev_batch_continues,
    full_state_returns_the_whole_room_state,
    lazy_loading_sends_only_the_senders_members,
    lazy_loading_in_an_unnamed_room_sends_the_heroes,
    typing_and_receipts_reach_the_other_user,
    account_data_appears_in_sync,
);

/// Timeline big enough that a test's incremental syncs never have gaps.
fn big_timeline() -> String {
    format!("&{}", filter_param(&json!({ "room": { "timeline": { "limit": 100 } } })))
}

/// alice creates a public room and bob joins it.
async fn alice_and_bob_in_a_room(
    backend: Backend,
) -> (ganglion_testkit::TestServer, Account, Account, String) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "sync" })).await.unwrap();
    bob.join(&room).await.unwrap();
    (server, alice, bob, room)
}

/// Message ids in `room`'s timeline, asserting the incremental timeline has no gap.
fn new_messages(sync: &Value, room: &str) -> Vec<String> {
    let joined = room_in(sync, "join", room);
    assert_ne!(joined["timeline"]["limited"], true, "unexpected gap: {joined}");
    message_ids(&events_of(&joined["timeline"]))
}

async fn long_poll_wakes_within_a_second_of_a_send(backend: Backend) {
    let (_server, alice, bob, room) = alice_and_bob_in_a_room(backend).await;
    let since = initial_since(&bob, "").await;

    let poller = bob.clone();
    let mut poll = tokio::spawn(async move {
        let started = Instant::now();
        let sync = poller.sync(&format!("since={}&timeout=30000", enc(&since))).await.unwrap();
        (started.elapsed(), sync)
    });
    // Nothing happens in the room: a long-poll must still be waiting a second later.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut poll).await.is_err(),
        "sync with timeout=30000 returned at once although nothing happened"
    );

    let sent_at = Instant::now();
    let event_id = alice.send_text(&room, "wake up").await.unwrap();
    let (elapsed, sync) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the long-poll did not wake up within 10 s of a send")
        .unwrap();
    let woke_after = sent_at.elapsed();
    assert!(woke_after < Duration::from_secs(5), "woke {woke_after:?} after the send");
    assert!(elapsed < Duration::from_secs(15), "returned after {elapsed:?}, i.e. on its timeout");
    assert_eq!(new_messages(&sync, &room), vec![event_id], "the wake-up sync must carry the message");
}

async fn interleaved_sends_and_syncs_never_lose_or_duplicate(backend: Backend) {
    let (_server, alice, bob, room) = alice_and_bob_in_a_room(backend).await;
    let filter = big_timeline();
    let mut since = [initial_since(&alice, &filter[1..]).await, initial_since(&bob, &filter[1..]).await];
    let users = [&alice, &bob];
    let mut seen: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut sent = Vec::new();

    for i in 0..40usize {
        // An irregular pattern of senders and of who syncs when (sometimes both, sometimes nobody).
        let sender = users[(i * 7 / 3) % 2];
        sent.push(sender.send_text(&room, &format!("m{i}")).await.unwrap());
        for (u, user) in users.iter().enumerate() {
            if (i + u) % 3 == 0 || i % 5 == 4 {
                let sync = user.sync(&format!("since={}&timeout=0{filter}", enc(&since[u]))).await.unwrap();
                since[u] = sync["next_batch"].as_str().unwrap().to_owned();
                seen[u].extend(new_messages(&sync, &room));
            }
        }
    }
    for (u, user) in users.iter().enumerate() {
        let mut pending = seen[u].clone();
        sync_until(user, &mut since[u], &filter, |sync| {
            pending.extend(new_messages(sync, &room));
            pending.len() >= sent.len()
        })
        .await;
        seen[u] = pending;
        assert_eq!(
            seen[u], sent,
            "{} lost, duplicated or reordered events across since tokens",
            user.user_id
        );
    }
    // A sync from the final token has nothing new.
    let quiet = alice.sync(&format!("since={}&timeout=0{filter}", enc(&since[0]))).await.unwrap();
    assert!(new_messages(&quiet, &room).is_empty(), "events repeated after the last token: {quiet}");
}

async fn concurrent_sends_arrive_exactly_once_in_room_order(backend: Backend) {
    let (server, alice, bob, room) = alice_and_bob_in_a_room(backend).await;
    let filter = big_timeline();
    let observer = register_all(&server, &["carol"]).await.remove(0);
    observer.join(&room).await.unwrap();
    let mut since = initial_since(&observer, &filter[1..]).await;

    let senders: Vec<_> = [(alice.clone(), "a"), (bob.clone(), "b")]
        .into_iter()
        .map(|(user, tag)| {
            let room = room.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..25 {
                    ids.push(user.send_text(&room, &format!("{tag}{i}")).await.unwrap());
                }
                ids
            })
        })
        .collect();
    // carol syncs while the two send.
    let mut seen = Vec::new();
    sync_until(&observer, &mut since, &filter, |sync| {
        seen.extend(new_messages(sync, &room));
        seen.len() >= 50
    })
    .await;
    let mut per_sender = Vec::new();
    for sender in senders {
        per_sender.push(sender.await.unwrap());
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an event was delivered twice");
    assert_eq!(seen.len(), 50, "expected exactly the 50 sent messages");
    for ids in &per_sender {
        let in_seen: Vec<&String> = seen.iter().filter(|id| ids.contains(id)).collect();
        assert_eq!(in_seen, ids.iter().collect::<Vec<_>>(), "one sender's messages arrived out of order");
    }
    // The order sync delivered is the room's order as /messages reports it: local sends go
    // through one event persister, so the room history is linear and both orders agree.
    let history = paginate(&observer, &room, "f", None, 50).await;
    let history: Vec<String> = message_ids(&history.iter().collect::<Vec<_>>())
        .into_iter()
        .filter(|id| unique.contains(id))
        .collect();
    assert_eq!(history, seen, "sync order differs from /messages order");
}

async fn timeline_filters_limit_and_prev_batch_continues(backend: Backend) {
    let server = start(backend).await;
    let alice = register_all(&server, &["alice"]).await.remove(0);
    let room = alice.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
    for i in 0..6 {
        alice.send_text(&room, &format!("m{i}")).await.unwrap();
    }

    let definition = json!({ "room": { "timeline": { "limit": 2 } } });
    let created =
        alice.post(&format!("/user/{}/filter", enc(&alice.user_id)), &definition).await.unwrap().ok();
    let filter_id = created["filter_id"].as_str().expect("no filter_id").to_owned();
    let stored = get_ok(&alice, &format!("/user/{}/filter/{}", enc(&alice.user_id), enc(&filter_id))).await;
    assert_eq!(stored["room"]["timeline"]["limit"], 2, "stored filter: {stored}");
    alice
        .get(&format!("/user/{}/filter/{}", enc(&alice.user_id), enc("999999")))
        .await
        .unwrap()
        .err(404, "M_NOT_FOUND");

    for query in [format!("filter={}", enc(&filter_id)), filter_param(&definition)] {
        let sync = alice.sync(&query).await.unwrap();
        let timeline = &room_in(&sync, "join", &room)["timeline"];
        let events = events_of(timeline);
        assert_eq!(events.len(), 2, "{query}: timeline limit 2 gave {timeline}");
        assert_eq!(message_bodies(&events), ["m4", "m5"], "{query}: the newest two events");
        assert_eq!(timeline["limited"], true, "{query}: limited must be set");
        let prev_batch = timeline["prev_batch"].as_str().expect("no prev_batch");
        let page =
            get_ok(&alice, &format!("/rooms/{}/messages?dir=b&limit=3&from={}", enc(&room), enc(prev_batch)))
                .await;
        let chunk: Vec<&Value> = page["chunk"].as_array().unwrap().iter().collect();
        assert_eq!(
            message_bodies(&chunk),
            ["m3", "m2", "m1"],
            "{query}: prev_batch continues right before m4"
        );
    }
}

async fn full_state_returns_the_whole_room_state(backend: Backend) {
    let server = start(backend).await;
    let alice = register_all(&server, &["alice"]).await.remove(0);
    let room = alice
        .create_room(&json!({ "preset": "private_chat", "name": "Full", "topic": "all of it" }))
        .await
        .unwrap();
    let since = initial_since(&alice, "").await;

    let quiet = alice.sync(&format!("since={}&timeout=0", enc(&since))).await.unwrap();
    let quiet_room = room_in(&quiet, "join", &room);
    assert!(
        events_of(&quiet_room["state"]).is_empty() && events_of(&quiet_room["timeline"]).is_empty(),
        "nothing changed, yet: {quiet_room}"
    );

    let full = alice.sync(&format!("since={}&timeout=0&full_state=true", enc(&since))).await.unwrap();
    let mut events = joined_events(&full, &room, "state");
    events.extend(joined_events(&full, &room, "timeline"));
    let keys: HashSet<(String, String)> = events
        .iter()
        .filter(|e| e.get("state_key").is_some())
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned()))
        .collect();
    for (kind, key) in [
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", "@alice:localhost"),
    ] {
        assert!(keys.contains(&(kind.to_owned(), key.to_owned())), "full_state lacks {kind}/{key}: {keys:?}");
    }
    let name = events.iter().find(|e| e["type"] == "m.room.name").unwrap();
    assert_eq!(name["content"]["name"], "Full");
}

async fn lazy_loading_sends_only_the_senders_members(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob, carol] =
        <[Account; 3]>::try_from(register_all(&server, &["alice", "bob", "carol"]).await).unwrap();
    // Named, so the server owes no `m.heroes` (whose members lazy loading must also send).
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Lazy" })).await.unwrap();
    bob.join(&room).await.unwrap();
    carol.join(&room).await.unwrap();
    for i in 0..3 {
        alice.send_text(&room, &format!("alice {i}")).await.unwrap();
    }
    let members = |sync: &Value| -> HashSet<String> {
        let mut events = joined_events(sync, &room, "state");
        events.extend(joined_events(sync, &room, "timeline"));
        events
            .iter()
            .filter(|e| e["type"] == "m.room.member")
            .map(|e| e["state_key"].as_str().unwrap().to_owned())
            .collect()
    };

    let eager = alice.sync(&filter_param(&json!({ "room": { "timeline": { "limit": 3 } } }))).await.unwrap();
    let everyone: HashSet<String> =
        ["@alice:localhost", "@bob:localhost", "@carol:localhost"].map(String::from).into();
    assert_eq!(members(&eager), everyone, "without lazy loading every member is sent");

    let lazy_filter = filter_param(
        &json!({ "room": { "timeline": { "limit": 3 }, "state": { "lazy_load_members": true } } }),
    );
    let lazy = alice.sync(&lazy_filter).await.unwrap();
    assert_eq!(message_bodies(&joined_events(&lazy, &room, "timeline")), ["alice 0", "alice 1", "alice 2"]);
    assert_eq!(
        members(&lazy),
        HashSet::from(["@alice:localhost".to_owned()]),
        "lazy loading: only the timeline's senders"
    );

    // Once bob speaks, his membership comes along; carol's still does not.
    let mut since = lazy["next_batch"].as_str().unwrap().to_owned();
    let spoken = bob.send_text(&room, "bob here").await.unwrap();
    let syncs = sync_until(&alice, &mut since, &format!("&{lazy_filter}"), |sync| {
        message_ids(&joined_events(sync, &room, "timeline")).contains(&spoken)
    })
    .await;
    let later: HashSet<String> = syncs.iter().flat_map(members).collect();
    assert!(later.contains("@bob:localhost"), "bob's membership must accompany his message: {later:?}");
    assert!(!later.contains("@carol:localhost"), "carol sent nothing: {later:?}");
}

/// `m.typing` / `m.receipt` contents in `room`'s ephemeral section of the given syncs.
fn ephemeral<'a>(syncs: impl IntoIterator<Item = &'a Value>, room: &str, kind: &str) -> Vec<Value> {
    syncs
        .into_iter()
        .flat_map(|sync| joined_events(sync, room, "ephemeral"))
        .filter(|event| event["type"] == kind)
        .map(|event| event["content"].clone())
        .collect()
}

async fn typing_and_receipts_reach_the_other_user(backend: Backend) {
    let (_server, alice, bob, room) = alice_and_bob_in_a_room(backend).await;
    let mut bob_since = initial_since(&bob, "").await;
    let mut alice_since = initial_since(&alice, "").await;
    let typing_path = format!("/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id));

    alice.put(&typing_path, &json!({ "typing": true, "timeout": 30000 })).await.unwrap().ok();
    sync_until(&bob, &mut bob_since, "", |sync| {
        ephemeral([sync], &room, "m.typing").iter().any(|c| c["user_ids"] == json!(["@alice:localhost"]))
    })
    .await;
    alice.put(&typing_path, &json!({ "typing": false })).await.unwrap().ok();
    sync_until(&bob, &mut bob_since, "", |sync| {
        ephemeral([sync], &room, "m.typing").iter().any(|c| c["user_ids"] == json!([]))
    })
    .await;

    // A public read receipt.
    let read = bob.send_text(&room, "read me").await.unwrap();
    let receipt_path =
        |kind: &str, event: &str| format!("/rooms/{}/receipt/{kind}/{}", enc(&room), enc(event));
    alice.post(&receipt_path("m.read", &read), &json!({})).await.unwrap().ok();
    let syncs = sync_until(&bob, &mut bob_since, "", |sync| {
        ephemeral([sync], &room, "m.receipt")
            .iter()
            .any(|c| c[&read]["m.read"]["@alice:localhost"]["ts"].is_u64())
    })
    .await;
    assert!(
        ephemeral(&syncs, &room, "m.receipt").iter().all(|c| c.to_string().find("m.read.private").is_none())
    );

    // A private one: alice sees it, bob never does. The marker message is sent after the
    // receipt, so a sync that carries the marker would also carry a leaked receipt.
    let private = bob.send_text(&room, "private").await.unwrap();
    alice.post(&receipt_path("m.read.private", &private), &json!({})).await.unwrap().ok();
    let marker = alice.send_text(&room, "marker").await.unwrap();
    let syncs = sync_until(&bob, &mut bob_since, "", |sync| {
        message_ids(&joined_events(sync, &room, "timeline")).contains(&marker)
    })
    .await;
    for receipt in ephemeral(&syncs, &room, "m.receipt") {
        assert!(receipt.get(&private).is_none(), "bob saw a receipt on the privately read event: {receipt}");
        assert!(!receipt.to_string().contains("m.read.private"), "private receipt leaked: {receipt}");
    }
    // A query no earlier sync used, so no response cache for identical requests can answer it.
    let bob_initial =
        bob.sync(&filter_param(&json!({ "room": { "timeline": { "limit": 7 } } }))).await.unwrap();
    for receipt in ephemeral([&bob_initial], &room, "m.receipt") {
        assert!(receipt.get(&private).is_none(), "private receipt in bob's initial sync: {receipt}");
    }
    sync_until(&alice, &mut alice_since, "", |sync| {
        ephemeral([sync], &room, "m.receipt")
            .iter()
            .any(|c| c[&private]["m.read.private"]["@alice:localhost"]["ts"].is_u64())
    })
    .await;
}

async fn account_data_appears_in_sync(backend: Backend) {
    let (_server, alice, bob, room) = alice_and_bob_in_a_room(backend).await;
    // The initial sync carries the (server-default) push rules as `m.push_rules`, as Element expects.
    let initial = alice.sync("").await.unwrap();
    let push_rules = events_of(&initial["account_data"]).into_iter().find(|e| e["type"] == "m.push_rules");
    let push_rules = push_rules.expect("m.push_rules in the initial sync's account data");
    assert!(push_rules["content"]["global"]["override"].as_array().is_some_and(|rules| !rules.is_empty()));
    let mut since = initial_since(&alice, "").await;
    let global_path = format!("/user/{}/account_data/org.ganglion.test", enc(&alice.user_id));
    let room_path =
        format!("/user/{}/rooms/{}/account_data/org.ganglion.room", enc(&alice.user_id), enc(&room));

    alice.put(&global_path, &json!({ "colour": "green" })).await.unwrap().ok();
    alice.put(&room_path, &json!({ "pinned": true })).await.unwrap().ok();
    let global_of = |sync: &Value| -> Option<Value> {
        events_of(&sync["account_data"])
            .into_iter()
            .find(|e| e["type"] == "org.ganglion.test")
            .map(|e| e["content"].clone())
    };
    let room_data_of = |sync: &Value| -> Option<Value> {
        events_of(&room_in(sync, "join", &room)["account_data"])
            .into_iter()
            .find(|e| e["type"] == "org.ganglion.room")
            .map(|e| e["content"].clone())
    };
    let (mut global, mut per_room) = (None, None);
    sync_until(&alice, &mut since, "", |sync| {
        global = global.take().or(global_of(sync));
        per_room = per_room.take().or(room_data_of(sync));
        global.is_some() && per_room.is_some()
    })
    .await;
    assert_eq!(global, Some(json!({ "colour": "green" })));
    assert_eq!(per_room, Some(json!({ "pinned": true })));
    assert_eq!(get_ok(&alice, &global_path).await, json!({ "colour": "green" }));
    assert_eq!(get_ok(&alice, &room_path).await, json!({ "pinned": true }));

    // A query no earlier sync used, so no response cache for identical requests can answer it.
    let initial =
        alice.sync(&filter_param(&json!({ "room": { "timeline": { "limit": 7 } } }))).await.unwrap();
    assert_eq!(global_of(&initial), Some(json!({ "colour": "green" })), "initial sync lacks global data");
    assert_eq!(room_data_of(&initial), Some(json!({ "pinned": true })), "initial sync lacks room data");

    alice.put(&global_path, &json!({ "colour": "blue" })).await.unwrap().ok();
    sync_until(&alice, &mut since, "", |sync| global_of(sync) == Some(json!({ "colour": "blue" }))).await;

    // Account data is private to its owner.
    let bobs = bob.sync("").await.unwrap();
    assert!(global_of(&bobs).is_none() && room_data_of(&bobs).is_none(), "bob sees alice's account data");
    bob.get(&global_path).await.unwrap().err(403, "M_FORBIDDEN");
}

/// An unnamed room is named after its heroes, so lazy loading also sends their member events
/// (and the summary names them), even when they have not spoken.
async fn lazy_loading_in_an_unnamed_room_sends_the_heroes(backend: Backend) {
    let server = start(backend).await;
    let ([alice, _bob, _carol], room) = crate::three_in_a_public_room(&server).await;
    for i in 0..3 {
        alice.send_text(&room, &format!("alice {i}")).await.unwrap();
    }
    let lazy_filter = filter_param(
        &json!({ "room": { "timeline": { "limit": 3 }, "state": { "lazy_load_members": true } } }),
    );
    let sync = alice.sync(&lazy_filter).await.unwrap();
    let mut events = joined_events(&sync, &room, "state");
    events.extend(joined_events(&sync, &room, "timeline"));
    let members: HashSet<String> = events
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect();
    let everyone: HashSet<String> =
        ["@alice:localhost", "@bob:localhost", "@carol:localhost"].map(String::from).into();
    assert_eq!(members, everyone, "the heroes' member events must come with lazy loading");
    let heroes = &room_in(&sync, "join", &room)["summary"]["m.heroes"];
    let heroes: HashSet<&str> = heroes.as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert_eq!(heroes, HashSet::from(["@bob:localhost", "@carol:localhost"]));
}
