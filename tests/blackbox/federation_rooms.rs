//! Rooms over federation: a Synapse user joins a room of an embedded Ganglion (make_join and
//! send_join on our side), and messages flow both ways through transactions, in the same order
//! on both servers. Both servers are started as docs/federation.md says.

use std::time::Duration;

use ganglion_testkit::{Account, FederationNode, Synapse, enc};
use serde_json::{Value, json};

/// The text messages of a room as `account`'s server has them, oldest first.
async fn messages(account: &Account, room_id: &str) -> Vec<(String, String)> {
    let response = account.get(&format!("/rooms/{}/messages?dir=b&limit=100", enc(room_id))).await.unwrap();
    let mut texts: Vec<(String, String)> = response.body["chunk"]
        .as_array()
        .map(|chunk| {
            chunk
                .iter()
                .filter(|event| event["type"] == "m.room.message")
                .map(|event| {
                    let sender = event["sender"].as_str().unwrap_or_default().to_owned();
                    (sender, event["content"]["body"].as_str().unwrap_or_default().to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    texts.reverse();
    texts
}

/// Waits (bounded) until `account`'s server has `count` messages in the room; answers them.
pub(crate) async fn wait_for_messages(
    account: &Account,
    room_id: &str,
    count: usize,
    log: impl Fn() -> String,
) -> Vec<(String, String)> {
    for _ in 0..150 {
        let texts = messages(account, room_id).await;
        if texts.len() >= count {
            return texts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{} never saw {count} messages: {:?}\n{}",
        account.user_id,
        messages(account, room_id).await,
        log()
    );
}

/// Joined members of the room as `account`'s server has them.
pub(crate) async fn joined_members(account: &Account, room_id: &str) -> Vec<String> {
    let response = account.get(&format!("/rooms/{}/joined_members", enc(room_id))).await.unwrap();
    let mut members: Vec<String> = response.body["joined"]
        .as_object()
        .map(|joined| joined.keys().cloned().collect())
        .unwrap_or_default();
    members.sort();
    members
}

/// Waits (bounded: 10 s) until `account`'s server lists exactly `members` (sorted) as the room's
/// joined members. The caller asserts on what it lists then.
pub(crate) async fn wait_for_members(account: &Account, room_id: &str, members: &[String]) {
    for _ in 0..100 {
        if joined_members(account, room_id).await == members {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Joins `account` to `room_id` through `server` (the room's server), which must succeed.
pub(crate) async fn join_through(account: &Account, room_id: &str, server: &str) {
    let join = account
        .post(&format!("/join/{}?server_name={}", enc(room_id), enc(server)), &json!({}))
        .await
        .unwrap();
    assert_eq!(join.status, 200, "{}", join.text);
}

pub(crate) async fn synapse_account(synapse: &Synapse, localpart: &str) -> Account {
    let (user_id, token) = synapse.register(localpart, crate::PASSWORD).await.unwrap();
    let whoami =
        Account::new(synapse.client_api(), &user_id, &token, "").get("/account/whoami").await.unwrap().ok();
    Account::new(synapse.client_api(), &user_id, &token, whoami["device_id"].as_str().unwrap())
}

#[tokio::test]
async fn a_synapse_user_joins_a_ganglion_room_and_messages_flow_both_ways() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;

        // Both room versions Synapse and Ganglion share by default: 12 (the room id is the
        // create event's hash, so the joining server is told where to ask) and 10; and 2, whose
        // events carry ids of their server's making and list references as `[id, hashes]`.
        for version in ["12", "10", "2"] {
            let room_id = alice
                .create_room(
                    &json!({ "preset": "public_chat", "room_version": version, "name": "federated" }),
                )
                .await
                .unwrap();
            alice.send_text(&room_id, "before the join").await.unwrap();
            let join = bob
                .post(
                    &format!("/join/{}?server_name={}", enc(&room_id), enc(ganglion.server_name())),
                    &json!({}),
                )
                .await
                .unwrap();
            assert_eq!(join.status, 200, "v{version} join: {}\n{}", join.text, log());
            let expected_members = {
                let mut members = vec![alice.user_id.clone(), bob.user_id.clone()];
                members.sort();
                members
            };
            assert_eq!(joined_members(&bob, &room_id).await, expected_members, "v{version}, on Synapse");
            assert_eq!(joined_members(&alice, &room_id).await, expected_members, "v{version}, on Ganglion");
            // The room's name and history came with the join.
            let name = bob.get(&format!("/rooms/{}/state/m.room.name/", enc(&room_id))).await.unwrap().ok();
            assert_eq!(name["name"], "federated");

            bob.send_text(&room_id, "hello from synapse").await.unwrap();
            wait_for_messages(&alice, &room_id, 2, log).await;
            alice.send_text(&room_id, "hello from ganglion").await.unwrap();
            // Bob answers once he has read it, so his answers follow it on both servers.
            wait_for_messages(&bob, &room_id, 3, log).await;
            for n in 1..=3 {
                bob.send_text(&room_id, &format!("synapse {n}")).await.unwrap();
            }
            let on_synapse = wait_for_messages(&bob, &room_id, 6, log).await;
            let on_ganglion = wait_for_messages(&alice, &room_id, 6, log).await;
            let expected: Vec<(String, String)> = [
                (&alice.user_id, "before the join"),
                (&bob.user_id, "hello from synapse"),
                (&alice.user_id, "hello from ganglion"),
                (&bob.user_id, "synapse 1"),
                (&bob.user_id, "synapse 2"),
                (&bob.user_id, "synapse 3"),
            ]
            .into_iter()
            .map(|(sender, body)| (sender.clone(), body.to_owned()))
            .collect();
            assert_eq!(on_ganglion, expected, "v{version}: Ganglion's order\n{}", log());
            assert_eq!(on_synapse, expected, "v{version}: Synapse's order\n{}", log());

            // Sent at the same time, neither has seen the other's: both servers end with both
            // messages and the one after them (each in the order it received them).
            let (from_alice, from_bob) = tokio::join!(
                alice.send_text(&room_id, "concurrent from ganglion"),
                bob.send_text(&room_id, "concurrent from synapse"),
            );
            from_alice.unwrap();
            from_bob.unwrap();
            alice.send_text(&room_id, "after the fork").await.unwrap();
            let mut on_synapse = wait_for_messages(&bob, &room_id, 9, log).await;
            let mut on_ganglion = wait_for_messages(&alice, &room_id, 9, log).await;
            on_synapse.sort();
            on_ganglion.sort();
            assert_eq!(on_synapse, on_ganglion, "v{version}\n{}", log());

            // Alice sees Bob's messages in her sync too, with his join.
            let sync = alice.sync("").await.unwrap();
            let timeline = &sync["rooms"]["join"][&room_id]["timeline"]["events"];
            let bob_joined = timeline.as_array().is_some_and(|events| {
                events.iter().any(|e: &Value| e["type"] == "m.room.member" && e["state_key"] == bob.user_id)
            });
            assert!(bob_joined, "v{version}: no join of bob in {timeline}");

            // A ban reaches Bob's server, and ours refuses his way back in.
            let ban = alice
                .post(&format!("/rooms/{}/ban", enc(&room_id)), &json!({ "user_id": bob.user_id }))
                .await
                .unwrap();
            assert_eq!(ban.status, 200, "{}", ban.text);
            let mut left = false;
            for _ in 0..150 {
                let rooms = bob.get("/joined_rooms").await.unwrap().ok();
                if !rooms["joined_rooms"].as_array().unwrap().iter().any(|id| id == &room_id) {
                    left = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(left, "v{version}: Synapse never applied the ban\n{}", log());
            let rejoin = bob
                .post(
                    &format!("/join/{}?server_name={}", enc(&room_id), enc(ganglion.server_name())),
                    &json!({}),
                )
                .await
                .unwrap();
            assert_eq!(rejoin.status, 403, "v{version}: {}", rejoin.text);
            assert_eq!(joined_members(&alice, &room_id).await, vec![alice.user_id.clone()]);
        }
    })
    .await
}

/// A Synapse user knocks on a room of ours whose join rule is `knock` (make_knock and
/// send_knock answered here); our user sees the knock and invites them in. A room that does not
/// take knocks refuses one.
#[tokio::test]
async fn a_synapse_user_knocks_on_a_ganglion_room_and_is_let_in() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;
        let room_id = alice
            .create_room(&json!({
                "preset": "private_chat",
                "name": "Knock first",
                "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }],
            }))
            .await
            .unwrap();
        let via = enc(ganglion.server_name());
        let knock = bob
            .post(&format!("/knock/{}?via={via}&server_name={via}", enc(&room_id)), &json!({ "reason": "let me in" }))
            .await
            .unwrap();
        assert_eq!(knock.status, 200, "{}\n{}", knock.text, log());
        assert_eq!(knock.body["room_id"], room_id);
        let member_path = format!("/rooms/{}/state/m.room.member/{}", enc(&room_id), enc(&bob.user_id));
        let seen = alice.get(&member_path).await.unwrap();
        assert_eq!(seen.body["membership"], "knock", "{}\n{}", seen.text, log());
        assert_eq!(seen.body["reason"], "let me in");

        alice.invite(&room_id, &bob.user_id).await.unwrap();
        let mut joined = false;
        for _ in 0..50 {
            let join = bob.post(&format!("/join/{}?server_name={via}", enc(&room_id)), &json!({})).await.unwrap();
            if join.status == 200 {
                joined = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(joined, "bob could not join after the invite\n{}", log());
        let mut members = vec![alice.user_id.clone(), bob.user_id.clone()];
        members.sort();
        crate::federation_rooms::wait_for_members(&alice, &room_id, &members).await;
        assert_eq!(joined_members(&alice, &room_id).await, members, "{}", log());

        // An invite-only room takes no knocks.
        let closed = alice.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
        let refused = bob.post(&format!("/knock/{}?via={via}&server_name={via}", enc(&closed)), &json!({})).await.unwrap();
        assert_eq!(refused.status, 403, "{}", refused.text);
    })
    .await
}

/// The other way: a Ganglion user knocks on a Synapse room (make_knock and send_knock sent from
/// here), sees it under `knock` in `/sync` with the room's stripped state, and is let in by the
/// Synapse user's invite.
#[tokio::test]
async fn a_ganglion_user_knocks_on_a_synapse_room_and_is_let_in() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = synapse_account(&synapse, "alice").await;
        let bob = ganglion.client_api().register("bob", crate::PASSWORD).await.unwrap();
        let room_id = alice
            .create_room(&json!({
                "preset": "private_chat",
                "name": "Synapse knocks",
                "room_version": "10",
                "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }],
            }))
            .await
            .unwrap();
        let via = enc(synapse.server_name());
        let knock =
            bob.post(&format!("/knock/{}?via={via}", enc(&room_id)), &json!({ "reason": "me too" })).await.unwrap();
        assert_eq!(knock.status, 200, "{}\n{}", knock.text, log());
        let synced = bob.sync("").await.unwrap();
        let knock_state = synced["rooms"]["knock"][&room_id]["knock_state"]["events"].as_array().cloned();
        let knock_state = knock_state.unwrap_or_else(|| panic!("no knock section: {synced}\n{}", log()));
        assert!(knock_state.iter().any(|e| e["type"] == json!("m.room.name") && e["content"]["name"] == json!("Synapse knocks")));
        assert!(knock_state.iter().any(|e| e["type"] == json!("m.room.member") && e["content"]["membership"] == json!("knock")));
        let member_path = format!("/rooms/{}/state/m.room.member/{}", enc(&room_id), enc(&bob.user_id));
        let seen = alice.get(&member_path).await.unwrap();
        assert_eq!((seen.body["membership"].clone(), seen.body["reason"].clone()), (json!("knock"), json!("me too")), "{}", log());

        alice.invite(&room_id, &bob.user_id).await.unwrap();
        wait_for_invite(&bob, &room_id, log).await;
        join_through(&bob, &room_id, synapse.server_name()).await;
        let mut members = vec![alice.user_id.clone(), bob.user_id.clone()];
        members.sort();
        wait_for_members(&alice, &room_id, &members).await;

        // A room that takes no knocks refuses one, as Synapse answers.
        let closed = alice.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
        let refused = bob.post(&format!("/knock/{}?via={via}", enc(&closed)), &json!({})).await.unwrap();
        assert_eq!(refused.status, 403, "{}", refused.text);
    })
    .await
}

/// A Ganglion user in a Synapse space browses its hierarchy: the child rooms this server is not
/// in come from Synapse's federation `/hierarchy`.
#[tokio::test]
async fn a_synapse_space_is_browsed_from_ganglion() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = synapse_account(&synapse, "alice").await;
        let bob = ganglion.client_api().register("bob", crate::PASSWORD).await.unwrap();
        let space = alice
            .create_room(&json!({ "preset": "public_chat", "name": "Agency", "creation_content": { "type": "m.space" } }))
            .await
            .unwrap();
        let desk = alice.create_room(&json!({ "preset": "public_chat", "name": "Front desk" })).await.unwrap();
        let via = json!([synapse.server_name()]);
        alice.send_state(&space, "m.space.child", &desk, &json!({ "via": via })).await.unwrap();
        join_through(&bob, &space, synapse.server_name()).await;

        let mut names = Vec::new();
        for _ in 0..50 {
            let hierarchy = bob.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&space))).await.unwrap();
            assert_eq!(hierarchy.status, 200, "{}\n{}", hierarchy.text, log());
            names = hierarchy.body["rooms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|room| room["name"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>();
            if names.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(names, ["Agency", "Front desk"], "{}", log());
        // The room summary of a room only Synapse is in, asked of the `via` server.
        let path = format!("/_matrix/client/v1/room_summary/{}?via={}", enc(&desk), enc(synapse.server_name()));
        let summary = bob.get(&path).await.unwrap();
        assert_eq!(summary.status, 200, "{}\n{}", summary.text, log());
        assert_eq!((summary.body["name"].clone(), summary.body["room_id"].clone()), (json!("Front desk"), json!(desk)));
        let without_via = bob.get(&format!("/_matrix/client/v1/room_summary/{}", enc(&desk))).await.unwrap();
        assert_eq!(without_via.status, 404, "no server to ask");
    })
    .await
}

/// A Ganglion user joins a Synapse room with a long history: the join brings the latest events,
/// and paging back with `/messages` fetches the older ones from Synapse (`/backfill`) down to the
/// room's creation, in order, once each; none of them shows up as new in `/sync`.
#[tokio::test]
async fn paging_back_in_a_joined_room_fetches_older_history_from_synapse() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;
        let room_id = bob.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
        const SENT: usize = 160;
        for n in 0..SENT {
            bob.send_text(&room_id, &format!("old {n}")).await.unwrap();
        }
        let join = alice
            .post(&format!("/join/{}?server_name={}", enc(&room_id), enc(synapse.server_name())), &json!({}))
            .await
            .unwrap();
        assert_eq!(join.status, 200, "{}\n{}", join.text, log());
        let since =
            alice.get("/sync?timeout=0").await.unwrap().ok()["next_batch"].as_str().unwrap().to_owned();

        // Back from the newest, 40 at a time, until the server says there is no more.
        let mut texts: Vec<String> = Vec::new();
        let mut all: Vec<Value> = Vec::new();
        let mut from: Option<String> = None;
        for _ in 0..40 {
            let mut path = format!("/rooms/{}/messages?dir=b&limit=40", enc(&room_id));
            if let Some(from) = &from {
                path.push_str(&format!("&from={}", enc(from)));
            }
            let page = alice.get(&path).await.unwrap().ok();
            for event in page["chunk"].as_array().unwrap() {
                if event["type"] == "m.room.message" {
                    texts.push(event["content"]["body"].as_str().unwrap().to_owned());
                }
                all.push(event.clone());
            }
            match page["end"].as_str() {
                Some(end) => from = Some(end.to_owned()),
                None => break,
            }
        }
        texts.reverse();
        let expected: Vec<String> = (0..SENT).map(|n| format!("old {n}")).collect();
        assert_eq!(texts, expected, "{}", log());
        // Down to the room's creation, which came with the join as part of its state: each
        // event once, the create event first, then its creator's join.
        all.reverse();
        let ids: std::collections::HashSet<&str> =
            all.iter().filter_map(|event| event["event_id"].as_str()).collect();
        assert_eq!(ids.len(), all.len(), "an event shown twice");
        assert_eq!(all[0]["type"], "m.room.create", "{:?}", &all[..3]);
        assert_eq!(
            (&all[1]["type"], &all[1]["state_key"]),
            (&json!("m.room.member"), &json!(bob.user_id)),
            "{:?}",
            &all[..3]
        );

        // Fetched history is old news: an incremental sync does not bring it.
        let sync = alice.get(&format!("/sync?timeout=0&since={}", enc(&since))).await.unwrap().ok();
        let timeline = &sync["rooms"]["join"][&room_id]["timeline"]["events"];
        assert!(
            timeline.as_array().is_none_or(|events| events.iter().all(|e| e["type"] != "m.room.message")),
            "{sync}"
        );
    })
    .await
}

#[tokio::test]
async fn fetched_history_follows_the_history_visibility_of_its_time() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;
        let room_id = bob
            .create_room(&json!({
                "preset": "public_chat",
                "initial_state": [{
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": { "history_visibility": "joined" },
                }],
            }))
            .await
            .unwrap();
        let mut hidden = Vec::new();
        for n in 0..3 {
            hidden.push(bob.send_text(&room_id, &format!("members only {n}")).await.unwrap());
        }
        let shared = bob
            .put(
                &format!("/rooms/{}/state/m.room.history_visibility/", enc(&room_id)),
                &json!({ "history_visibility": "shared" }),
            )
            .await
            .unwrap();
        assert_eq!(shared.status, 200, "{}", shared.text);
        let mut shown = Vec::new();
        for n in 0..3 {
            shown.push(bob.send_text(&room_id, &format!("for later members {n}")).await.unwrap());
        }
        join_through(&alice, &room_id, synapse.server_name()).await;

        // Synapse sends our server the members-only messages too (redacted, as our server had
        // no member then); alice, who joined after, sees none of them, in any form.
        let texts = messages(&alice, &room_id).await;
        let expected: Vec<(String, String)> =
            (0..3).map(|n| (bob.user_id.clone(), format!("for later members {n}"))).collect();
        assert_eq!(texts, expected, "{}", log());
        for event_id in &hidden {
            let answer =
                alice.get(&format!("/rooms/{}/event/{}", enc(&room_id), enc(event_id))).await.unwrap();
            assert_eq!(answer.status, 404, "{event_id}: {}\n{}", answer.text, log());
        }
        for event_id in &shown {
            let answer =
                alice.get(&format!("/rooms/{}/event/{}", enc(&room_id), enc(event_id))).await.unwrap();
            assert_eq!(answer.status, 200, "{event_id}: {}", answer.text);
        }
    })
    .await
}

/// The room ids of a `/publicRooms` answer.
fn listed(answer: &Value) -> Vec<String> {
    answer["chunk"].as_array().map_or_else(Vec::new, |chunk| {
        chunk.iter().filter_map(|room| room["room_id"].as_str().map(str::to_owned)).collect()
    })
}

/// Each server's users browse the other's room directory through their own server
/// (`/publicRooms?server=`), with and without a search term.
#[tokio::test]
async fn room_directories_are_browsed_across_servers_with_synapse() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;
        let plaza = alice
            .create_room(
                &json!({ "preset": "public_chat", "visibility": "public", "name": "Ganglion plaza" }),
            )
            .await
            .unwrap();
        alice.create_room(&json!({ "preset": "public_chat", "name": "Unlisted" })).await.unwrap();
        let lounge = bob
            .create_room(
                &json!({ "preset": "public_chat", "visibility": "public", "name": "Synapse lounge" }),
            )
            .await
            .unwrap();

        // Synapse lists a new room once its background statistics have it.
        let mut theirs =
            alice.get(&format!("/publicRooms?server={}", enc(synapse.server_name()))).await.unwrap();
        for _ in 0..50 {
            if !listed(&theirs.body).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            theirs = alice.get(&format!("/publicRooms?server={}", enc(synapse.server_name()))).await.unwrap();
        }
        assert_eq!(theirs.status, 200, "{}\n{}", theirs.text, log());
        assert_eq!(listed(&theirs.body), vec![lounge.clone()], "{}", theirs.text);
        assert_eq!(theirs.body["chunk"][0]["name"], "Synapse lounge");
        let path = format!("/publicRooms?server={}", enc(synapse.server_name()));
        let found =
            alice.post(&path, &json!({ "filter": { "generic_search_term": "lounge" } })).await.unwrap();
        assert_eq!(listed(&found.ok()), vec![lounge.clone()]);
        let none =
            alice.post(&path, &json!({ "filter": { "generic_search_term": "nowhere" } })).await.unwrap();
        assert!(listed(&none.ok()).is_empty());

        let ours = bob.get(&format!("/publicRooms?server={}", enc(ganglion.server_name()))).await.unwrap();
        assert_eq!(ours.status, 200, "{}\n{}", ours.text, log());
        assert_eq!(listed(&ours.body), vec![plaza.clone()], "{}", ours.text);
        assert_eq!(ours.body["chunk"][0]["name"], "Ganglion plaza");
        let path = format!("/publicRooms?server={}", enc(ganglion.server_name()));
        let found = bob.post(&path, &json!({ "filter": { "generic_search_term": "PLAZA" } })).await.unwrap();
        assert_eq!(listed(&found.ok()), vec![plaza.clone()], "{}", log());

        // A server that does not exist: an error, not a hang or a 5xx of ours.
        let unknown = alice.get("/publicRooms?server=nowhere.invalid").await.unwrap();
        unknown.err(404, "M_NOT_FOUND");
    })
    .await
}

/// The state event `kind` of a room as `account`'s server has it now (its content).
async fn state_content(account: &Account, room_id: &str, kind: &str) -> Value {
    account.get(&format!("/rooms/{}/state/{kind}/", enc(room_id))).await.unwrap().body
}

/// Both servers change the same state at the same moment, so each event's `prev_events` miss
/// the other's: the room's event graph forks, and each server resolves the branches (state
/// resolution v2.1 in room v12, v2 in v10). They must end with the same state, whichever won.
#[tokio::test]
async fn concurrent_state_changes_on_both_servers_converge_to_the_same_state() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;
        for version in ["12", "10"] {
            let users = if version == "12" {
                // The creator's power is implied in v12.
                json!({ &bob.user_id: 50 })
            } else {
                json!({ &alice.user_id: 100, &bob.user_id: 50 })
            };
            let room_id = alice
                .create_room(&json!({
                    "preset": "public_chat",
                    "room_version": version,
                    "power_level_content_override": { "users": users },
                }))
                .await
                .unwrap();
            let join = bob
                .post(
                    &format!("/join/{}?server_name={}", enc(&room_id), enc(ganglion.server_name())),
                    &json!({}),
                )
                .await
                .unwrap();
            assert_eq!(join.status, 200, "v{version} join: {}\n{}", join.text, log());
            let mut members = vec![alice.user_id.clone(), bob.user_id.clone()];
            members.sort();
            crate::federation_rooms::wait_for_members(&alice, &room_id, &members).await;
            assert_eq!(joined_members(&alice, &room_id).await, members, "v{version}\n{}", log());

            for round in 0..3 {
                let name = |who: &str| json!({ "name": format!("{who}'s name, round {round}") });
                let topic = |who: &str| json!({ "topic": format!("{who}'s topic, round {round}") });
                let name_path = format!("/rooms/{}/state/m.room.name/", enc(&room_id));
                let topic_path = format!("/rooms/{}/state/m.room.topic/", enc(&room_id));
                let (alice_name, bob_name, alice_topic, bob_topic) =
                    (name("alice"), name("bob"), topic("alice"), topic("bob"));
                let (a, b, c, d) = tokio::join!(
                    alice.put(&name_path, &alice_name),
                    bob.put(&name_path, &bob_name),
                    alice.put(&topic_path, &alice_topic),
                    bob.put(&topic_path, &bob_topic),
                );
                for response in [a, b, c, d] {
                    assert_eq!(response.unwrap().status, 200, "v{version}");
                }
                // A message from each joins the branches; both servers then have every event.
                alice.send_text(&room_id, &format!("alice after round {round}")).await.unwrap();
                bob.send_text(&room_id, &format!("bob after round {round}")).await.unwrap();
                let expected = 2 * (round + 1);
                wait_for_messages(&alice, &room_id, expected, log).await;
                wait_for_messages(&bob, &room_id, expected, log).await;
                let mut same = false;
                for _ in 0..50 {
                    let on_ganglion = (
                        state_content(&alice, &room_id, "m.room.name").await,
                        state_content(&alice, &room_id, "m.room.topic").await,
                    );
                    let on_synapse = (
                        state_content(&bob, &room_id, "m.room.name").await,
                        state_content(&bob, &room_id, "m.room.topic").await,
                    );
                    if on_ganglion == on_synapse {
                        same = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let on_ganglion = (
                    state_content(&alice, &room_id, "m.room.name").await,
                    state_content(&alice, &room_id, "m.room.topic").await,
                );
                let on_synapse = (
                    state_content(&bob, &room_id, "m.room.name").await,
                    state_content(&bob, &room_id, "m.room.topic").await,
                );
                assert!(
                    same,
                    "v{version} round {round}: Ganglion {on_ganglion:?}, Synapse {on_synapse:?}\n{}",
                    log()
                );
            }
        }
        // The rounds forked the graph (Synapse's events did not follow Ganglion's).
        assert!(ganglion.log().contains("an event on a fork of the room's graph"), "{}", log());
    })
    .await
}

#[tokio::test]
async fn a_ganglion_user_joins_synapse_rooms_by_alias_and_by_id() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;

        // By alias, in Synapse's default room version.
        let by_alias = bob
            .create_room(&json!({ "preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby" }))
            .await
            .unwrap();
        // History before the join comes with it (backfill).
        for n in 1..=50 {
            bob.send_text(&by_alias, &format!("before {n}")).await.unwrap();
        }
        bob.send_text(&by_alias, "welcome").await.unwrap();
        let alias = format!("#lobby:{}", synapse.server_name());
        let joined = alice.post(&format!("/join/{}", enc(&alias)), &json!({})).await.unwrap();
        assert_eq!(joined.status, 200, "{}\n{}", joined.text, log());
        assert_eq!(joined.body["room_id"], by_alias);
        // By id, in room version 12 (whose ids name no server: the client names it).
        let by_id = bob
            .create_room(&json!({ "preset": "public_chat", "room_version": "12", "name": "Twelve" }))
            .await
            .unwrap();
        bob.send_text(&by_id, "welcome").await.unwrap();
        let joined = alice
            .post(&format!("/join/{}?via={}", enc(&by_id), enc(synapse.server_name())), &json!({}))
            .await
            .unwrap();
        assert_eq!(joined.status, 200, "{}\n{}", joined.text, log());

        // Older room versions: 9 (restricted joins, no creator privileges), 4 (the first with
        // URL-safe event ids) and 2 (events carry ids of their server's making), each under its
        // own rules.
        let mut older = Vec::new();
        for (version, name) in [("9", "Nine"), ("4", "Four"), ("2", "Two")] {
            let room = bob
                .create_room(&json!({ "preset": "public_chat", "room_version": version, "name": name }))
                .await
                .unwrap();
            bob.send_text(&room, "welcome").await.unwrap();
            let joined = alice
                .post(&format!("/join/{}?via={}", enc(&room), enc(synapse.server_name())), &json!({}))
                .await
                .unwrap();
            assert_eq!(joined.status, 200, "v{version}: {}\n{}", joined.text, log());
            older.push((room, name));
        }

        // A room version this server does not take part in: version 1 resolves state with the
        // first algorithm, which ruma does not implement.
        let old = bob.create_room(&json!({ "preset": "public_chat", "room_version": "1" })).await.unwrap();
        let refused = alice
            .post(&format!("/join/{}?via={}", enc(&old), enc(synapse.server_name())), &json!({}))
            .await
            .unwrap();
        assert_eq!(
            (refused.status, refused.errcode()),
            (400, Some("M_UNSUPPORTED_ROOM_VERSION")),
            "{}",
            refused.text
        );

        let rooms = [(&by_alias, "Lobby"), (&by_id, "Twelve")]
            .into_iter()
            .chain(older.iter().map(|(room, name)| (room, *name)));
        for (room_id, name) in rooms {
            let mut members = vec![alice.user_id.clone(), bob.user_id.clone()];
            members.sort();
            assert_eq!(joined_members(&alice, room_id).await, members, "on Ganglion\n{}", log());
            let state = alice.get(&format!("/rooms/{}/state/m.room.name/", enc(room_id))).await.unwrap().ok();
            assert_eq!(state["name"], name);
            // Synapse learns of the join from the send_join itself.
            crate::federation_rooms::wait_for_members(&bob, room_id, &members).await;
            assert_eq!(joined_members(&bob, room_id).await, members, "on Synapse\n{}", log());

            let before = if name == "Lobby" { 50 } else { 0 };
            alice.send_text(room_id, "hi from ganglion").await.unwrap();
            wait_for_messages(&bob, room_id, before + 2, log).await;
            bob.send_text(room_id, "hi from synapse").await.unwrap();
            let on_ganglion = wait_for_messages(&alice, room_id, before + 3, log).await;
            let on_synapse = wait_for_messages(&bob, room_id, before + 3, log).await;
            let mut expected: Vec<(String, String)> =
                (1..=before).map(|n| (bob.user_id.clone(), format!("before {n}"))).collect();
            expected.extend(
                [
                    (&bob.user_id, "welcome"),
                    (&alice.user_id, "hi from ganglion"),
                    (&bob.user_id, "hi from synapse"),
                ]
                .into_iter()
                .map(|(sender, body)| (sender.clone(), body.to_owned())),
            );
            assert_eq!(on_synapse, expected, "{name} on Synapse\n{}", log());
            assert_eq!(on_ganglion, expected, "{name} on Ganglion\n{}", log());
        }
        // The rooms are in Alice's sync, named.
        let sync = alice.sync("").await.unwrap();
        for room_id in [&by_alias, &by_id] {
            let timeline = &sync["rooms"]["join"][room_id.as_str()];
            assert!(timeline.is_object(), "{room_id} missing from {sync}");
        }
    })
    .await
}

/// Polls `account`'s sync (bounded) until `room_id` is in its `rooms.invite`; answers the
/// invite's stripped state.
async fn wait_for_invite(account: &Account, room_id: &str, log: impl Fn() -> String) -> Vec<Value> {
    // Incremental syncs: Synapse answers a repeated initial sync from a cache for a while.
    let mut since: Option<String> = None;
    for _ in 0..60 {
        let query =
            since.as_ref().map_or("timeout=0".to_owned(), |token| format!("since={token}&timeout=500"));
        let sync = account.sync(&query).await.unwrap();
        if let Some(events) = sync["rooms"]["invite"][room_id]["invite_state"]["events"].as_array() {
            return events.clone();
        }
        since = sync["next_batch"].as_str().map(str::to_owned);
    }
    panic!("{} never saw the invite to {room_id}\n{}", account.user_id, log());
}

#[tokio::test]
async fn invites_cross_servers_both_ways_with_synapse() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;
        let mut members = vec![alice.user_id.clone(), bob.user_id.clone()];
        members.sort();

        // Alice invites Bob to her invite-only room; Synapse countersigns, Bob accepts.
        let ours = alice.create_room(&json!({ "preset": "private_chat", "name": "Ours" })).await.unwrap();
        let invited = alice
            .post(&format!("/rooms/{}/invite", enc(&ours)), &json!({ "user_id": bob.user_id }))
            .await
            .unwrap();
        assert_eq!(invited.status, 200, "{}\n{}", invited.text, log());
        let stripped = wait_for_invite(&bob, &ours, log).await;
        assert!(
            stripped.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Ours"),
            "{stripped:?}"
        );
        let joined = bob.post(&format!("/rooms/{}/join", enc(&ours)), &json!({})).await.unwrap();
        assert_eq!(joined.status, 200, "{}\n{}", joined.text, log());
        assert_eq!(joined_members(&alice, &ours).await, members, "{}", log());
        bob.send_text(&ours, "thanks for the invite").await.unwrap();
        wait_for_messages(&alice, &ours, 1, log).await;

        // Bob invites Alice to his; we countersign, her sync shows it, she accepts.
        let theirs = bob.create_room(&json!({ "preset": "private_chat", "name": "Theirs" })).await.unwrap();
        let invited = bob
            .post(&format!("/rooms/{}/invite", enc(&theirs)), &json!({ "user_id": alice.user_id }))
            .await
            .unwrap();
        assert_eq!(invited.status, 200, "{}\n{}", invited.text, log());
        let stripped = wait_for_invite(&alice, &theirs, log).await;
        assert!(
            stripped.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Theirs"),
            "{stripped:?}"
        );
        assert!(
            stripped.iter().any(|e| e["type"] == "m.room.member"
                && e["state_key"] == alice.user_id
                && e["content"]["membership"] == "invite"
                && e["sender"] == bob.user_id),
            "{stripped:?}"
        );
        // No `via`: the invite says where the room is.
        let joined = alice.post(&format!("/rooms/{}/join", enc(&theirs)), &json!({})).await.unwrap();
        assert_eq!(joined.status, 200, "{}\n{}", joined.text, log());
        assert_eq!(joined_members(&alice, &theirs).await, members, "{}", log());
        alice.send_text(&theirs, "thanks for yours").await.unwrap();
        wait_for_messages(&bob, &theirs, 1, log).await;
        let sync = alice.sync("").await.unwrap();
        assert!(sync["rooms"]["join"][&theirs].is_object(), "{sync}");
        assert!(sync["rooms"]["invite"].get(&theirs).is_none(), "{sync}");

        // Invites declined both ways (make_leave and send_leave): each server ends with a leave.
        let declined = alice.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
        alice.invite(&declined, &bob.user_id).await.unwrap();
        wait_for_invite(&bob, &declined, log).await;
        let left = bob.post(&format!("/rooms/{}/leave", enc(&declined)), &json!({})).await.unwrap();
        assert_eq!(left.status, 200, "{}\n{}", left.text, log());
        let member = alice
            .get(&format!("/rooms/{}/state/m.room.member/{}", enc(&declined), enc(&bob.user_id)))
            .await
            .unwrap()
            .ok();
        assert_eq!(member["membership"], "leave", "{}", log());
        let declined = bob.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
        bob.invite(&declined, &alice.user_id).await.unwrap();
        wait_for_invite(&alice, &declined, log).await;
        let left = alice.post(&format!("/rooms/{}/leave", enc(&declined)), &json!({})).await.unwrap();
        assert_eq!(left.status, 200, "{}\n{}", left.text, log());
        let member = bob
            .get(&format!("/rooms/{}/state/m.room.member/{}", enc(&declined), enc(&alice.user_id)))
            .await
            .unwrap()
            .ok();
        assert_eq!(member["membership"], "leave", "{}", log());
        let sync = alice.sync("").await.unwrap();
        assert!(sync["rooms"]["invite"].get(&declined).is_none(), "{sync}");

        // An invite of a user this server does not have is refused by it.
        let nobody = format!("@nobody:{}", ganglion.server_name());
        let refused = bob
            .post(&format!("/rooms/{}/invite", enc(&theirs)), &json!({ "user_id": nobody }))
            .await
            .unwrap();
        assert_ne!(refused.status, 200, "{}", refused.text);
    })
    .await
}

#[tokio::test]
async fn a_peer_that_was_down_receives_every_message_it_missed() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (mut synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;
        let room_id = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
        join_through(&bob, &room_id, ganglion.server_name()).await;

        synapse.stop().await.unwrap();
        for n in 1..=20 {
            alice.send_text(&room_id, &format!("while you were out {n}")).await.unwrap();
        }
        // Long enough for the sender to fail and back off a few times.
        tokio::time::sleep(Duration::from_secs(4)).await;
        synapse.restart().await.unwrap();
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let seen = wait_for_messages(&bob, &room_id, 20, log).await;
        let expected: Vec<(String, String)> =
            (1..=20).map(|n| (alice.user_id.clone(), format!("while you were out {n}"))).collect();
        assert_eq!(seen, expected);

        // The other way round: Ganglion is down while Bob writes; Synapse's retries deliver
        // them once it is back.
        let mut ganglion = ganglion;
        ganglion.stop().await.unwrap();
        crate::federation::set_displayname(&bob, "Bob meanwhile").await;
        for n in 1..=5 {
            bob.send_text(&room_id, &format!("while Ganglion was out {n}")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        ganglion.start_again().await.unwrap();
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        alice.send_text(&room_id, "back").await.unwrap();
        let seen = wait_for_messages(&alice, &room_id, 26, log).await;
        let missed: Vec<&str> = seen
            .iter()
            .map(|(_, body)| body.as_str())
            .filter(|body| body.starts_with("while Ganglion"))
            .collect();
        assert_eq!(
            missed,
            (1..=5).map(|n| format!("while Ganglion was out {n}")).collect::<Vec<_>>(),
            "{}",
            log()
        );
        // Bob's new name too, whether his events came before Alice's "back" or beside it, on a fork.
        let member = format!("/rooms/{}/state/m.room.member/{}", enc(&room_id), enc(&bob.user_id));
        assert_eq!(alice.get(&member).await.unwrap().body["displayname"], "Bob meanwhile", "{}", log());
    })
    .await
}

/// Polls `account`'s incremental sync from `since` (bounded) until `user_id` is in
/// `device_lists.changed`.
async fn wait_for_device_change(account: &Account, since: &str, user_id: &str, log: impl Fn() -> String) {
    let mut since = since.to_owned();
    for _ in 0..60 {
        let sync = account.sync(&format!("since={since}&timeout=500")).await.unwrap();
        let changed = sync["device_lists"]["changed"].as_array().cloned().unwrap_or_default();
        if changed.iter().any(|user| user == user_id) {
            return;
        }
        since = sync["next_batch"].as_str().unwrap().to_owned();
    }
    panic!("{} never saw {user_id}'s device list change\n{}", account.user_id, log());
}

/// New device keys of `bob` (another server's user sharing a room with `alice`) reach `alice`'s
/// sync and `/keys/query`, and the other way round: each server tells the other of its user's
/// change, which then asks for the user's devices again.
pub(crate) async fn device_lists_cross(alice: &Account, bob: &Account, log: impl Fn() -> String + Copy) {
    use crate::e2ee::{device_key_pair, signed_device_keys};
    for (reader, writer, localpart) in [(alice, bob, "bob"), (bob, alice, "alice")] {
        let since = reader.sync("timeout=0").await.unwrap()["next_batch"].as_str().unwrap().to_owned();
        let keys = signed_device_keys(writer, &device_key_pair(&writer.device_id), localpart);
        writer.post("/keys/upload", &json!({ "device_keys": keys })).await.unwrap().ok();
        wait_for_device_change(reader, &since, &writer.user_id, log).await;
        let seen = reader
            .post("/keys/query", &json!({ "device_keys": { &writer.user_id: [] } }))
            .await
            .unwrap()
            .ok();
        assert_eq!(
            seen["device_keys"][&writer.user_id][&writer.device_id]["keys"],
            keys["keys"],
            "{seen}\n{}",
            log()
        );
    }
}

#[tokio::test]
async fn device_list_changes_cross_servers_with_synapse() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;
        let room_id = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
        join_through(&bob, &room_id, ganglion.server_name()).await;
        wait_for_messages(&alice, &room_id, 0, log).await;

        device_lists_cross(&alice, &bob, log).await;
    })
    .await
}

#[tokio::test]
async fn an_encrypted_conversation_across_servers_decrypts_both_ways() {
    use crate::e2ee::{encrypted_room, send_text, sync_all, until_all_decrypt};
    use ganglion_testkit::{sdk_client, sdk_login};
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        synapse.register("bob", crate::PASSWORD).await.unwrap();
        // matrix-sdk clients on both servers: Alice on Ganglion, Bob on Synapse.
        let alice = sdk_client(ganglion.client_api().base_url(), "alice", crate::PASSWORD).await.unwrap();
        let bob = sdk_login(&synapse.client_url(), "bob", crate::PASSWORD).await.unwrap();
        sync_all(&[&alice, &bob]).await;
        // Alice's room, Bob invited across servers and joined through the invite.
        let room_id = encrypted_room(&alice, &[&bob], &[&alice, &bob]).await;
        send_text(&alice, &room_id, "from Ganglion, encrypted").await;
        send_text(&bob, &room_id, "from Synapse, encrypted").await;
        let expected = std::collections::BTreeSet::from([
            "from Ganglion, encrypted".to_owned(),
            "from Synapse, encrypted".to_owned(),
        ]);
        until_all_decrypt(&[&alice, &bob], &room_id, &expected).await;

        // Bob's second device, announced to Ganglion by Synapse, gets the next room key.
        let laptop = sdk_login(&synapse.client_url(), "bob", crate::PASSWORD).await.unwrap();
        let laptop_id = laptop.device_id().unwrap().to_owned();
        let all = [&alice, &bob, &laptop];
        let learned = async {
            loop {
                sync_all(&all).await;
                if alice.encryption().get_device(bob.user_id().unwrap(), &laptop_id).await.unwrap().is_some()
                {
                    return;
                }
            }
        };
        tokio::time::timeout(crate::SYNC_DEADLINE, learned)
            .await
            .unwrap_or_else(|_| panic!("Alice never learnt of Bob's new device\n{}", ganglion.log()));
        send_text(&alice, &room_id, "after the laptop").await;
        until_all_decrypt(&all, &room_id, &std::collections::BTreeSet::from(["after the laptop".to_owned()]))
            .await;
    })
    .await
}

/// Ganglion is down while Bob, on Synapse, changes his display name and writes more messages
/// than `get_missing_events` reaches back, and Synapse restarts meanwhile: it then catches up
/// with its newest event only, the events fetched before it leave a gap, and the room's state
/// there comes from Synapse's `/state_ids`. Ganglion ends with Bob's
/// new name, the newest messages, and a room that keeps working both ways.
#[tokio::test]
async fn a_gap_too_long_to_fill_takes_the_state_its_origin_reports() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (mut synapse, mut ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;
        let room_id = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
        join_through(&bob, &room_id, ganglion.server_name()).await;
        alice.send_text(&room_id, "before").await.unwrap();
        wait_for_messages(&bob, &room_id, 1, || synapse.log()).await;
        // Synapse catches up only with a server it has sent events to before.
        bob.send_text(&room_id, "before too").await.unwrap();
        wait_for_messages(&alice, &room_id, 2, || ganglion.log()).await;

        ganglion.stop().await.unwrap();
        crate::federation::set_displayname(&bob, "Bob at the gap").await;
        for n in 1..=15 {
            bob.send_text(&room_id, &format!("while Ganglion was out {n}")).await.unwrap();
        }
        // Synapse forgets what it queued for Ganglion: from its next start it catches up.
        synapse.stop().await.unwrap();
        ganglion.start_again().await.unwrap();
        synapse.restart().await.unwrap();
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        // Ganglion's next event wakes Synapse's sender for it.
        alice.send_text(&room_id, "back").await.unwrap();
        let member = format!("/rooms/{}/state/m.room.member/{}", enc(&room_id), enc(&bob.user_id));
        let mut name = Value::Null;
        for _ in 0..150 {
            name = alice.get(&member).await.unwrap().body["displayname"].clone();
            if name == "Bob at the gap" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(name, "Bob at the gap", "{}", log());
        assert!(ganglion.log().contains("learnt the state at a gap"), "{}", log());
        let seen = wait_for_messages(&alice, &room_id, 3, log).await;
        assert!(
            seen.contains(&(bob.user_id.clone(), "while Ganglion was out 15".to_owned())),
            "{seen:?}\n{}",
            log()
        );
        // The event at the gap is a forward extremity like any other: the room goes on.
        alice.send_text(&room_id, "after the gap").await.unwrap();
        bob.send_text(&room_id, "seen").await.unwrap();
        for (account, body) in [(&bob, "after the gap"), (&alice, "seen")] {
            let mut seen = Vec::new();
            for _ in 0..150 {
                seen = messages(account, &room_id).await;
                if seen.iter().any(|(_, text)| text == body) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(
                seen.iter().any(|(_, text)| text == body),
                "{} never got {body:?}: {seen:?}\n{}",
                account.user_id,
                log()
            );
        }
    })
    .await
}

/// A Synapse user's space names two rooms of Ganglion's: a public one and an invite-only one.
/// Browsing the space on Synapse asks Ganglion's `/hierarchy` for them: the public room shows
/// with its name, topic and members; the invite-only one does not show.
#[tokio::test]
async fn a_synapse_space_shows_the_ganglion_rooms_it_may_see() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;
        let lobby = alice
            .create_room(&json!({ "preset": "public_chat", "name": "Ganglion lobby", "topic": "Say hello" }))
            .await
            .unwrap();
        let private = alice
            .create_room(&json!({ "preset": "private_chat", "name": "Ganglion secrets" }))
            .await
            .unwrap();
        let child = |room: &str| {
            json!({ "type": "m.space.child", "state_key": room, "content": { "via": [ganglion.server_name()] } })
        };
        let space = bob
            .post(
                "/createRoom",
                &json!({
                    "preset": "public_chat",
                    "name": "Bob's space",
                    "creation_content": { "type": "m.space" },
                    "initial_state": [child(&lobby), child(&private)],
                }),
            )
            .await
            .unwrap()
            .ok()["room_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let answer = bob.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&space))).await.unwrap();
        assert_eq!(answer.status, 200, "{}\n{}", answer.text, log());
        let rooms = answer.body["rooms"].as_array().unwrap();
        let found = |room_id: &str| rooms.iter().find(|room| room["room_id"] == room_id);
        assert_eq!(found(&space).map(|room| &room["name"]), Some(&json!("Bob's space")), "{}", answer.text);
        let lobby_summary = found(&lobby).unwrap_or_else(|| panic!("no lobby in {}\n{}", answer.text, log()));
        assert_eq!(
            (&lobby_summary["name"], &lobby_summary["topic"], &lobby_summary["num_joined_members"]),
            (&json!("Ganglion lobby"), &json!("Say hello"), &json!(1)),
            "{}",
            answer.text
        );
        assert_eq!(lobby_summary["join_rule"], "public", "{}", answer.text);
        // Bob is in neither room: Synapse knows the lobby only from Ganglion's answer.
        assert!(found(&private).is_none(), "{}", answer.text);
    })
    .await
}
