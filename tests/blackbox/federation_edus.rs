//! Typing notifications, read receipts and presence over federation, both ways between an
//! embedded Ganglion and a real Synapse sharing a room: each side's `/sync` shows what the other
//! side's user did.

use std::time::Duration;

use ganglion_testkit::{Account, FederationNode, Synapse, enc};
use serde_json::{Value, json};

use crate::{
    events_of,
    federation_rooms::{join_through, joined_members, synapse_account, wait_for_messages},
    joined_events,
};

/// Long-polls `account`'s `/sync` from `since` (advancing it) until `found` accepts a response,
/// at most 100 times half a second.
async fn sync_until(
    account: &Account,
    since: &mut String,
    what: &str,
    found: impl Fn(&Value) -> bool,
    log: impl Fn() -> String,
) -> Value {
    for _ in 0..100 {
        let sync = account.sync(&format!("since={}&timeout=500", enc(since))).await.unwrap();
        *since = sync["next_batch"].as_str().expect("sync without next_batch").to_owned();
        if found(&sync) {
            return sync;
        }
    }
    panic!("{} never saw {what}\n{}", account.user_id, log());
}

/// The users typing in the room, as the last `m.typing` of a sync response says (`None` without
/// one).
fn typing_in(sync: &Value, room_id: &str) -> Option<Vec<String>> {
    joined_events(sync, room_id, "ephemeral").into_iter().rev().find(|event| event["type"] == "m.typing").map(
        |event| {
            event["content"]["user_ids"]
                .as_array()
                .map(|ids| ids.iter().filter_map(|id| id.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        },
    )
}

/// Whether a sync response carries `user_id`'s `m.read` receipt of `event_id` in the room.
fn has_receipt(sync: &Value, room_id: &str, event_id: &str, user_id: &str) -> bool {
    joined_events(sync, room_id, "ephemeral")
        .into_iter()
        .filter(|event| event["type"] == "m.receipt")
        .any(|event| event["content"][event_id]["m.read"][user_id]["ts"].is_i64())
}

/// The time of `user_id`'s `m.read` receipt of `event_id` in a sync response.
fn receipt_ts_in(sync: &Value, room_id: &str, event_id: &str, user_id: &str) -> Option<i64> {
    joined_events(sync, room_id, "ephemeral")
        .into_iter()
        .filter(|event| event["type"] == "m.receipt")
        .find_map(|event| event["content"][event_id]["m.read"][user_id]["ts"].as_i64())
}

/// `user_id`'s newest presence content in a sync response.
fn presence_of<'a>(sync: &'a Value, user_id: &str) -> Option<&'a Value> {
    events_of(&sync["presence"])
        .into_iter()
        .rev()
        .find(|event| event["sender"] == user_id)
        .map(|e| &e["content"])
}

async fn set_typing(account: &Account, room_id: &str, typing: bool) {
    let path = format!("/rooms/{}/typing/{}", enc(room_id), enc(&account.user_id));
    let response = account.put(&path, &json!({ "typing": typing, "timeout": 30_000 })).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text);
}

async fn send_receipt(account: &Account, room_id: &str, event_id: &str) {
    let path = format!("/rooms/{}/receipt/m.read/{}", enc(room_id), enc(event_id));
    let response = account.post(&path, &json!({})).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text);
}

async fn set_presence(account: &Account, status_msg: &str) {
    let path = format!("/presence/{}/status", enc(&account.user_id));
    let body = json!({ "presence": "online", "status_msg": status_msg });
    let response = account.put(&path, &body).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text);
}

#[tokio::test]
async fn typing_receipts_and_presence_cross_between_ganglion_and_synapse() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;
        let room_id = alice.create_room(&json!({ "preset": "public_chat", "name": "edus" })).await.unwrap();
        let join = bob
            .post(&format!("/join/{}?server_name={}", enc(&room_id), enc(ganglion.server_name())), &json!({}))
            .await
            .unwrap();
        assert_eq!(join.status, 200, "{}\n{}", join.text, log());
        let mut members = vec![alice.user_id.clone(), bob.user_id.clone()];
        members.sort();
        assert_eq!(joined_members(&alice, &room_id).await, members, "on Ganglion");
        assert_eq!(joined_members(&bob, &room_id).await, members, "on Synapse");
        typing_receipts_and_presence_cross(&alice, &bob, &room_id, &log).await;
    })
    .await
}

/// Typing, read receipts and presence from `alice` (on one server) to `bob` (on another) and
/// back, both joined to `room_id` and each with an empty timeline so far.
async fn typing_receipts_and_presence_cross(
    alice: &Account,
    bob: &Account,
    room_id: &str,
    log: &dyn Fn() -> String,
) {
    let room_id = room_id.to_owned();
    let initial = |sync: Value| sync["next_batch"].as_str().unwrap().to_owned();
    let mut alice_since = initial(alice.sync("").await.unwrap());
    let mut bob_since = initial(bob.sync("").await.unwrap());

    // Typing, both ways, and its end.
    set_typing(alice, &room_id, true).await;
    let alice_typing =
        |sync: &Value| typing_in(sync, &room_id).is_some_and(|ids| ids.contains(&alice.user_id));
    sync_until(bob, &mut bob_since, "alice typing", alice_typing, log).await;
    set_typing(alice, &room_id, false).await;
    let alice_stopped =
        |sync: &Value| typing_in(sync, &room_id).is_some_and(|ids| !ids.contains(&alice.user_id));
    sync_until(bob, &mut bob_since, "alice stop typing", alice_stopped, log).await;
    set_typing(bob, &room_id, true).await;
    let bob_typing = |sync: &Value| typing_in(sync, &room_id).is_some_and(|ids| ids.contains(&bob.user_id));
    sync_until(alice, &mut alice_since, "bob typing", bob_typing, log).await;

    // Read receipts, both ways, of a message each server has.
    let from_alice = alice.send_text(&room_id, "read me, bob").await.unwrap();
    wait_for_messages(bob, &room_id, 1, log).await;
    // Each is seen by its reader's server and by the other with the same time: the time the
    // reader's server gave it.
    send_receipt(bob, &room_id, &from_alice).await;
    let bob_read = |sync: &Value| has_receipt(sync, &room_id, &from_alice, &bob.user_id);
    let own = sync_until(bob, &mut bob_since, "bob's own receipt", bob_read, log).await;
    let theirs = sync_until(alice, &mut alice_since, "bob's receipt", bob_read, log).await;
    let ts = |sync: &Value, event_id: &str, user_id: &str| receipt_ts_in(sync, &room_id, event_id, user_id);
    let (own, theirs) = (ts(&own, &from_alice, &bob.user_id), ts(&theirs, &from_alice, &bob.user_id));
    assert!(own.is_some() && own == theirs, "bob's receipt at {own:?} and {theirs:?}\n{}", log());
    let from_bob = bob.send_text(&room_id, "read me, alice").await.unwrap();
    wait_for_messages(alice, &room_id, 2, log).await;
    send_receipt(alice, &room_id, &from_bob).await;
    let alice_read = |sync: &Value| has_receipt(sync, &room_id, &from_bob, &alice.user_id);
    let own = sync_until(alice, &mut alice_since, "alice's own receipt", alice_read, log).await;
    let theirs = sync_until(bob, &mut bob_since, "alice's receipt", alice_read, log).await;
    let (own, theirs) = (ts(&own, &from_bob, &alice.user_id), ts(&theirs, &from_bob, &alice.user_id));
    assert!(own.is_some() && own == theirs, "alice's receipt at {own:?} and {theirs:?}\n{}", log());

    // Presence with a status message, both ways.
    set_presence(alice, "on ganglion").await;
    let alice_status = |sync: &Value| {
        presence_of(sync, &alice.user_id)
            .is_some_and(|content| content["presence"] == "online" && content["status_msg"] == "on ganglion")
    };
    sync_until(bob, &mut bob_since, "alice's presence", alice_status, log).await;
    set_presence(bob, "on synapse").await;
    let bob_status = |sync: &Value| {
        presence_of(sync, &bob.user_id)
            .is_some_and(|content| content["presence"] == "online" && content["status_msg"] == "on synapse")
    };
    sync_until(alice, &mut alice_since, "bob's presence", bob_status, log).await;
    let status = alice.get(&format!("/presence/{}/status", enc(&bob.user_id))).await.unwrap().ok();
    assert_eq!((&status["presence"], &status["status_msg"]), (&json!("online"), &json!("on synapse")));
}

/// The same between a cluster (the federation reader takes the node's EDUs, the federation
/// senders send the cluster's) and an embedded node, and device list updates both ways.
#[tokio::test]
async fn typing_receipts_and_presence_cross_between_a_cluster_and_a_node() {
    crate::run(async {
        let (cluster, node) = tokio::join!(
            ganglion_testkit::Cluster::start_federating(ganglion_testkit::ServerOptions::default()),
            FederationNode::start()
        );
        let (cluster, node) = (cluster.unwrap(), node.unwrap());
        let log = || format!("--- node\n{}\n--- cluster\n{}", node.log(), cluster.stderr_logs());
        let alice =
            ganglion_testkit::Api::new(cluster.base_url()).register("alice", crate::PASSWORD).await.unwrap();
        let bob = node.client_api().register("bob", crate::PASSWORD).await.unwrap();
        let room_id =
            alice.create_room(&json!({ "preset": "public_chat", "room_alias_name": "edus" })).await.unwrap();
        bob.join(&format!("#edus:{}", cluster.server_name())).await.unwrap();
        let mut members = vec![alice.user_id.clone(), bob.user_id.clone()];
        members.sort();
        crate::federation_rooms::wait_for_members(&alice, &room_id, &members).await;
        assert_eq!(joined_members(&alice, &room_id).await, members, "{}", log());
        typing_receipts_and_presence_cross(&alice, &bob, &room_id, &log).await;
        // Device list updates too: the federation reader takes the node's, the senders send ours.
        crate::federation_rooms::device_lists_cross(&alice, &bob, log).await;
    })
    .await
}

/// EDUs of Ganglion's federation sender taken by other servers, from its metrics.
async fn edus_sent(metrics: &str) -> f64 {
    let text = reqwest::get(format!("http://{metrics}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("ganglion_federation_sent_total{kind=\"edu\"} "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A user of ours who stays online without changing anything has their presence sent again to
/// the servers that share a room with them (Synapse would otherwise take them to be offline
/// after 30 minutes): every `presence.federation_ping_interval_ms`, here a second, set through
/// its environment variable.
#[tokio::test]
async fn presence_is_sent_again_while_a_user_stays_online() {
    crate::run(async {
        let metrics = format!("127.0.0.1:{}", ganglion_testkit::free_port());
        let env = [
            ("GANGLION_PRESENCE__FEDERATION_PING_INTERVAL_MS", "1000"),
            ("GANGLION_METRICS__LISTEN", metrics.as_str()),
        ];
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start_with_env(&env));
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;
        let room_id = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
        join_through(&bob, &room_id, ganglion.server_name()).await;
        set_presence(&alice, "here all day").await;
        let status = format!("/presence/{}/status", enc(&alice.user_id));
        let mut seen = Value::Null;
        for _ in 0..100 {
            seen = bob.get(&status).await.unwrap().body;
            if seen["status_msg"] == "here all day" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            (&seen["presence"], &seen["status_msg"]),
            (&json!("online"), &json!("here all day")),
            "{}",
            log()
        );

        // Nothing changes for four seconds; Ganglion keeps telling Synapse, about once a second.
        let before = edus_sent(&metrics).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let after = edus_sent(&metrics).await;
        assert!(after - before >= 2.0, "{before} EDUs sent, then {after}\n{}", log());
        let seen = bob.get(&status).await.unwrap().body;
        assert_eq!(seen["presence"], "online", "{seen}");
    })
    .await
}
