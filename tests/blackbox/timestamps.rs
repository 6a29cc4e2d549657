//! `GET /timestamp_to_event` for clients: the event nearest a time, forwards and backwards,
//! only in a room the user may read, and a former member's view ends at their leave.

use std::time::Duration;

use ganglion_testkit::{Account, Backend, enc};
use serde_json::{Value, json};

on_all_backends!(timestamp_to_event_finds_the_nearest_readable_event);

fn path(room: &str, ts: i64, dir: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}", enc(room))
}

async fn nearest(account: &Account, room: &str, ts: i64, dir: &str) -> ganglion_testkit::Response {
    account.get(&path(room, ts, dir)).await.unwrap()
}

/// The event's `origin_server_ts`.
async fn sent_at(account: &Account, room: &str, event: &str) -> i64 {
    let event: Value = account.get(&format!("/rooms/{}/event/{}", enc(room), enc(event))).await.unwrap().ok();
    event["origin_server_ts"].as_i64().unwrap()
}

async fn timestamp_to_event_finds_the_nearest_readable_event(backend: Backend) {
    let server = crate::start(backend).await;
    let [alice, bob, carol] =
        <[_; 3]>::try_from(crate::register_all(&server, &["alice", "bob", "carol"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
    alice.invite(&room, &bob.user_id).await.unwrap();
    bob.join(&room).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..3 {
        // Apart in time, so each has its own origin_server_ts.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let event = alice.send_text(&room, &format!("message {i}")).await.unwrap();
        sent.push((sent_at(&alice, &room, &event).await, event));
    }
    let (first_ts, first) = sent[0].clone();
    let (second_ts, second) = sent[1].clone();
    let (third_ts, third) = sent[2].clone();
    assert!(first_ts < second_ts && second_ts < third_ts, "{sent:?}");

    let found = nearest(&alice, &room, first_ts + 1, "f").await.ok();
    assert_eq!(found, json!({ "event_id": second, "origin_server_ts": second_ts }));
    let found = nearest(&alice, &room, second_ts - 1, "b").await.ok();
    assert_eq!(found["event_id"], json!(first));
    let found = nearest(&alice, &room, third_ts, "b").await.ok();
    assert_eq!(found["event_id"], json!(third), "at the very time");
    let after_all = nearest(&alice, &room, third_ts + 60_000, "f").await;
    assert_eq!((after_all.status, after_all.errcode()), (404, Some("M_NOT_FOUND")));

    // Bob leaves; what came after is not his to find.
    let leave = bob.post(&format!("/rooms/{}/leave", enc(&room)), &json!({})).await.unwrap();
    assert_eq!(leave.status, 200);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let later = alice.send_text(&room, "after bob left").await.unwrap();
    let later_ts = sent_at(&alice, &room, &later).await;
    assert_eq!(nearest(&alice, &room, later_ts, "b").await.ok()["event_id"], json!(later));
    let hidden = nearest(&bob, &room, later_ts, "b").await;
    assert_eq!((hidden.status, hidden.errcode()), (404, Some("M_NOT_FOUND")), "{}", hidden.text);
    assert_eq!(nearest(&bob, &room, first_ts, "b").await.ok()["event_id"], json!(first), "before his leave");

    // Carol was never in the private room.
    let outsider = nearest(&carol, &room, first_ts, "f").await;
    assert_eq!((outsider.status, outsider.errcode()), (403, Some("M_FORBIDDEN")));

    let no_dir =
        alice.get(&format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts=1", enc(&room))).await.unwrap();
    assert_eq!((no_dir.status, no_dir.errcode()), (400, Some("M_MISSING_PARAM")));
    let no_ts = alice
        .get(&format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?dir=f", enc(&room)))
        .await
        .unwrap();
    assert_eq!((no_ts.status, no_ts.errcode()), (400, Some("M_MISSING_PARAM")));
    let bad_dir = nearest(&alice, &room, first_ts, "sideways").await;
    assert_eq!((bad_dir.status, bad_dir.errcode()), (400, Some("M_INVALID_PARAM")));
    let bad_ts = alice
        .get(&format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts=soon&dir=f", enc(&room)))
        .await
        .unwrap();
    assert_eq!(bad_ts.status, 400, "{}", bad_ts.text);
    let unknown = nearest(&alice, "!nowhere:localhost", first_ts, "f").await;
    assert_eq!(unknown.status / 100, 4, "{}", unknown.text);
}
