//! Two people chatting through matrix-sdk: invite, join, messages, redaction, display names.

use std::time::Duration;

use ganglion_testkit::{Backend, enc, sdk_client};
use matrix_sdk::{
    Client, RoomState,
    config::SyncSettings,
    ruma::{
        OwnedRoomId, UInt,
        api::client::{
            filter::FilterDefinition,
            room::create_room::v3::{Request as CreateRoom, RoomPreset},
            sync::sync_events::v3::Filter,
        },
        events::room::message::RoomMessageEventContent,
    },
};
use serde_json::{Value, json};

use crate::{
    PASSWORD, SYNC_DEADLINE, account_of, filter_param, get_ok, initial_since, joined_events, message_ids,
    start, sync_until,
};

on_all_backends!(two_users_chat_and_see_the_same_timeline, redaction_and_displayname_reach_the_other_user);

/// Sync settings for the SDK: a short long-poll and a timeline big enough that nothing is cut.
fn sdk_sync_settings() -> SyncSettings {
    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = Some(UInt::from(100u32));
    SyncSettings::default().timeout(Duration::from_secs(2)).filter(Filter::FilterDefinition(filter))
}

/// Runs `client.sync_once` until `done` holds for the client's state.
async fn sdk_sync_until(client: &Client, what: &str, done: impl Fn(&Client) -> bool) {
    let polls = async {
        while !done(client) {
            client.sync_once(sdk_sync_settings()).await.unwrap();
        }
    };
    tokio::time::timeout(SYNC_DEADLINE, polls).await.unwrap_or_else(|_| {
        panic!("{}: {what} not seen within {SYNC_DEADLINE:?}", client.user_id().unwrap())
    });
}

/// Runs `client.sync_once` (the SDK's own `since` handling) until `count` messages of `room_id`
/// arrived; returns them as JSON, in arrival order.
async fn sdk_collect_messages(client: &Client, room_id: &OwnedRoomId, count: usize) -> Vec<Value> {
    let mut messages = Vec::new();
    let polls = async {
        while messages.len() < count {
            let response = client.sync_once(sdk_sync_settings()).await.unwrap();
            // `limited` may be set when the room is new to this sync (a fresh join); losses show
            // up in the comparison with what was sent.
            if let Some(update) = response.rooms.joined.get(room_id) {
                for event in &update.timeline.events {
                    let json: Value = serde_json::from_str(event.raw().json().get()).unwrap();
                    if json["type"] == "m.room.message" {
                        messages.push(json);
                    }
                }
            }
        }
    };
    tokio::time::timeout(SYNC_DEADLINE, polls).await.unwrap_or_else(|_| {
        panic!("{} saw {} of {count} messages", client.user_id().unwrap(), messages.len())
    });
    messages
}

async fn two_users_chat_and_see_the_same_timeline(backend: Backend) {
    let server = start(backend).await;
    let alice = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let bob = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    let bob_id = bob.user_id().unwrap().to_owned();
    assert_eq!(alice.user_id().unwrap().as_str(), "@alice:localhost");
    assert_eq!(bob_id.as_str(), "@bob:localhost");

    let mut request = CreateRoom::new();
    request.name = Some("Chat".to_owned());
    request.preset = Some(RoomPreset::PrivateChat);
    request.invite = vec![bob_id.clone()];
    let alice_room = alice.create_room(request).await.unwrap();
    let room_id = alice_room.room_id().to_owned();

    sdk_sync_until(&bob, "the invite", |bob| {
        bob.get_room(&room_id).is_some_and(|room| room.state() == RoomState::Invited)
    })
    .await;
    let bob_room = bob.join_room_by_id(&room_id).await.unwrap();
    assert_eq!(bob_room.state(), RoomState::Joined);

    // Alternating senders; each send is acknowledged before the next, so this is the room order.
    let mut sent = Vec::new();
    for i in 0..6 {
        let (room, who) = if i % 2 == 0 { (&alice_room, "alice") } else { (&bob_room, "bob") };
        let body = format!("{who} says {i}");
        let result = room.send(RoomMessageEventContent::text_plain(&body)).await.unwrap();
        sent.push((result.response.event_id.to_string(), body, format!("@{who}:localhost")));
    }

    // Through the SDK's own syncs (alice's first is an initial sync, bob's are incremental).
    for client in [&alice, &bob] {
        let seen = sdk_collect_messages(client, &room_id, sent.len()).await;
        let seen: Vec<(String, String, String)> = seen
            .iter()
            .map(|event| {
                (
                    event["event_id"].as_str().unwrap().to_owned(),
                    event["content"]["body"].as_str().unwrap().to_owned(),
                    event["sender"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(seen, sent, "{} saw a different timeline", client.user_id().unwrap());
    }

    // And through fresh initial syncs over plain HTTP: same messages, same order, for both.
    let filter = filter_param(&json!({ "room": { "timeline": { "limit": 100 } } }));
    let sent_ids: Vec<String> = sent.iter().map(|(id, _, _)| id.clone()).collect();
    let mut full_timelines = Vec::new();
    for client in [&alice, &bob] {
        let account = account_of(&server, client);
        let sync = account.sync(&filter).await.unwrap();
        let timeline = joined_events(&sync, room_id.as_str(), "timeline");
        assert_eq!(message_ids(&timeline), sent_ids, "{}'s initial sync", account.user_id);
        // Everything from bob's join on: both must have exactly the same events.
        let join = timeline
            .iter()
            .position(|e| {
                e["type"] == "m.room.member"
                    && e["state_key"] == "@bob:localhost"
                    && e["content"]["membership"] == "join"
            })
            .unwrap_or_else(|| panic!("bob's join is not in {}'s timeline", account.user_id));
        let ids: Vec<&str> = timeline[join..].iter().map(|e| e["event_id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 1 + sent.len(), "only the join and the messages follow the join");
        full_timelines.push(ids.join(","));
    }
    assert_eq!(full_timelines[0], full_timelines[1], "alice and bob disagree on the timeline");
}

async fn redaction_and_displayname_reach_the_other_user(backend: Backend) {
    let server = start(backend).await;
    let alice = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let bob = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    let mut request = CreateRoom::new();
    request.preset = Some(RoomPreset::PublicChat);
    let alice_room = alice.create_room(request).await.unwrap();
    let room_id = alice_room.room_id().to_owned();
    bob.join_room_by_id(&room_id).await.unwrap();
    let (alice_http, bob_http) = (account_of(&server, &alice), account_of(&server, &bob));
    let room = room_id.as_str();
    let mut bob_since = initial_since(&bob_http, "").await;
    let mut alice_since = initial_since(&alice_http, "").await;

    // A message bob sees, then its redaction.
    let secret =
        alice_room.send(RoomMessageEventContent::text_plain("my password is hunter2")).await.unwrap();
    let secret_id = secret.response.event_id.to_string();
    sync_until(&bob_http, &mut bob_since, "", |sync| {
        message_ids(&joined_events(sync, room, "timeline")).contains(&secret_id)
    })
    .await;
    let redaction = alice_room.redact(&secret.response.event_id, Some("oops"), None).await.unwrap();
    let redaction_id = redaction.event_id.to_string();
    let syncs = sync_until(&bob_http, &mut bob_since, "", |sync| {
        joined_events(sync, room, "timeline").iter().any(|event| event["event_id"] == redaction_id.as_str())
    })
    .await;
    let redaction_event = joined_events(syncs.last().unwrap(), room, "timeline")
        .into_iter()
        .find(|event| event["event_id"] == redaction_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(redaction_event["type"], "m.room.redaction");
    assert_eq!(redaction_event["sender"], "@alice:localhost");
    assert_eq!(redaction_event["content"]["reason"], "oops");
    let redacts = redaction_event["content"]["redacts"].as_str().or(redaction_event["redacts"].as_str());
    assert_eq!(redacts, Some(secret_id.as_str()), "redaction does not point at the message");

    let fetched = get_ok(&bob_http, &format!("/rooms/{}/event/{}", enc(room), enc(&secret_id))).await;
    assert_eq!(fetched["content"], json!({}), "content not stripped: {fetched}");
    assert_eq!(fetched["type"], "m.room.message");
    assert_eq!(fetched["unsigned"]["redacted_because"]["event_id"], redaction_id.as_str());
    assert_eq!(fetched["unsigned"]["redacted_because"]["type"], "m.room.redaction");
    let page = get_ok(&bob_http, &format!("/rooms/{}/messages?dir=b&limit=20", enc(room))).await;
    let in_history =
        page["chunk"].as_array().unwrap().iter().find(|e| e["event_id"] == secret_id.as_str()).unwrap();
    assert_eq!(in_history["content"], json!({}), "redacted content still served by /messages");
    let text = page.to_string();
    assert!(!text.contains("hunter2"), "redacted text still served: {text}");

    // Bob changes his display name; alice sees the new member event and the profile.
    bob.account().set_display_name(Some("Bobby")).await.unwrap();
    sync_until(&alice_http, &mut alice_since, "", |sync| {
        let mut events = joined_events(sync, room, "timeline");
        events.extend(joined_events(sync, room, "state"));
        events.iter().any(|event| {
            event["type"] == "m.room.member"
                && event["state_key"] == "@bob:localhost"
                && event["content"]["membership"] == "join"
                && event["content"]["displayname"] == "Bobby"
        })
    })
    .await;
    let name = get_ok(&alice_http, &format!("/profile/{}/displayname", enc("@bob:localhost"))).await;
    assert_eq!(name["displayname"], "Bobby");
    let profile = get_ok(&alice_http, &format!("/profile/{}", enc("@bob:localhost"))).await;
    assert_eq!(profile["displayname"], "Bobby");
    let members = get_ok(&alice_http, &format!("/rooms/{}/joined_members", enc(room))).await;
    assert_eq!(members["joined"]["@bob:localhost"]["display_name"], "Bobby");
}
