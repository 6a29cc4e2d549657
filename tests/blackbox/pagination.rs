//! `/messages` pagination over a long history, backwards with matrix-sdk and forwards by hand.

use std::collections::HashSet;

use ganglion_testkit::{Backend, sdk_client};
use matrix_sdk::{
    config::SyncSettings,
    room::MessagesOptions,
    ruma::{
        UInt,
        api::client::{
            filter::FilterDefinition, room::create_room::v3::Request as CreateRoom,
            sync::sync_events::v3::Filter,
        },
        events::room::message::RoomMessageEventContent,
    },
};
use serde_json::Value;

use crate::{PASSWORD, account_of, paginate, start};

on_all_backends!(two_hundred_messages_page_back_and_forth_exactly_once);

const COUNT: usize = 200;

async fn two_hundred_messages_page_back_and_forth_exactly_once(backend: Backend) {
    let server = start(backend).await;
    let alice = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let room = alice.create_room(CreateRoom::new()).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..COUNT {
        let result = room.send(RoomMessageEventContent::text_plain(format!("message {i}"))).await.unwrap();
        sent.push(result.response.event_id.to_string());
    }

    // An initial sync with a one-event timeline: the newest message and a token before it.
    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = Some(UInt::from(1u32));
    let response =
        alice.sync_once(SyncSettings::default().filter(Filter::FilterDefinition(filter))).await.unwrap();
    let timeline = &response.rooms.joined.get(room.room_id()).expect("room not in the initial sync").timeline;
    assert_eq!(timeline.events.len(), 1);
    assert_eq!(timeline.events[0].event_id().unwrap().as_str(), sent[COUNT - 1]);
    assert!(timeline.limited, "a 1-event window over 200+ events must be limited");
    let prev_batch = timeline.prev_batch.clone().expect("limited timeline without prev_batch");

    // Backwards with Room::messages, following `end`.
    let mut backwards: Vec<Value> = Vec::new();
    let mut from = Some(prev_batch);
    let mut pages = 0;
    while let Some(token) = from.take() {
        pages += 1;
        assert!(pages < 200, "backward pagination does not end");
        let mut options = MessagesOptions::backward().from(token.as_str());
        options.limit = UInt::from(17u32);
        let page = room.messages(options).await.unwrap();
        assert!(page.chunk.len() <= 17, "page of {} events exceeds the limit", page.chunk.len());
        for event in &page.chunk {
            backwards.push(serde_json::from_str(event.raw().json().get()).unwrap());
        }
        if !page.chunk.is_empty() {
            from = page.end;
        }
    }
    assert!(pages > COUNT / 17, "{pages} pages of at most 17 events cannot hold {COUNT} messages");
    let ids: Vec<&str> = backwards.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an event was returned twice going backwards");
    let messages: Vec<&str> = backwards
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = sent[..COUNT - 1].iter().rev().map(String::as_str).collect();
    assert_eq!(messages, expected, "backward pagination must return messages 198..=0 in reverse order");
    assert_eq!(backwards.last().unwrap()["type"], "m.room.create", "the history starts with m.room.create");

    // Forwards from the start of the room, by hand, following `end`.
    let account = account_of(&server, &alice);
    let forwards = paginate(&account, room.room_id().as_str(), "f", None, 23).await;
    let ids: Vec<&str> = forwards.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an event was returned twice going forwards");
    assert_eq!(forwards[0]["type"], "m.room.create");
    let messages: Vec<&str> = forwards
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = sent.iter().map(String::as_str).collect();
    assert_eq!(messages, expected, "forward pagination must return messages 0..=199 in order");
    // Both directions cover the same history (backwards lacks only the newest message).
    let mut reversed: Vec<&str> = backwards.iter().rev().map(|e| e["event_id"].as_str().unwrap()).collect();
    reversed.push(&sent[COUNT - 1]);
    assert_eq!(ids, reversed, "forward and backward pagination disagree on the room order");
    for event in &forwards[forwards.len() - COUNT..] {
        let index = event["content"]["body"].as_str().unwrap().strip_prefix("message ").unwrap();
        assert_eq!(event["event_id"], sent[index.parse::<usize>().unwrap()].as_str());
    }
}
