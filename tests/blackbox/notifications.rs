//! Unread counts and `/notifications`: the push rules the master evaluates for each new event,
//! counted in `/sync` (and sliding sync) until a read receipt, per thread when asked.

use std::time::Duration;

use ganglion_testkit::{Account, Backend, enc};
use serde_json::{Value, json};

use crate::{
    SYNC_DEADLINE, account_of, filter_param, get_ok, initial_since, room_in, start, sync_until,
    three_in_a_public_room,
};

on_all_backends!(
    mentions_keywords_and_muted_rooms_count_until_a_read_receipt,
    threads_count_apart_and_threaded_receipts_clear_them,
    room_mentions_need_the_power_to_notify_the_room,
    sliding_sync_shows_counts_and_their_reset,
    matrix_sdk_reads_unread_counts,
);

/// `push.enabled = false`: no event is evaluated, so counts stay 0 and nothing is notified.
#[tokio::test]
async fn push_turned_off_counts_nothing() {
    crate::run(async {
        let options = ganglion_testkit::ServerOptions {
            extra_toml: "[push]\nenabled = false\n".to_owned(),
            ..Default::default()
        };
        let server = ganglion_testkit::TestServer::start(Backend::Sqlite, options).await.unwrap();
        let ([alice, bob, _carol], room) = three_in_a_public_room(&server).await;
        let mut since = initial_since(&alice, "timeout=0").await;
        let mention =
            json!({ "msgtype": "m.text", "body": "alice", "m.mentions": { "user_ids": [alice.user_id] } });
        let event = bob.send_event(&room, "m.room.message", &mention).await.unwrap();
        let seen = sync_until(&alice, &mut since, "", |sync| {
            room_in(sync, "join", &room)["timeline"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["event_id"] == event.as_str()))
        })
        .await;
        assert_eq!(counts(seen.last().unwrap(), &room), Some((0, 0)));
        assert_eq!(get_ok(&alice, "/notifications").await["notifications"], json!([]));
    })
    .await
}

/// `(notification_count, highlight_count)` of a room in a sync response, if it is there.
fn counts(sync: &Value, room_id: &str) -> Option<(i64, i64)> {
    let unread = &room_in(sync, "join", room_id)["unread_notifications"];
    Some((unread["notification_count"].as_i64()?, unread["highlight_count"].as_i64()?))
}

/// Syncs from `since` until the room shows `expected`.
async fn counts_reach(
    account: &Account,
    since: &mut String,
    extra: &str,
    room_id: &str,
    expected: (i64, i64),
) {
    sync_until(account, since, extra, |sync| counts(sync, room_id) == Some(expected)).await;
}

/// `/notifications` with `query` until `done` accepts it (a client-reader may be behind).
async fn notifications_until(account: &Account, query: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
    loop {
        let page = get_ok(account, &format!("/notifications{query}")).await;
        if done(&page) {
            return page;
        }
        assert!(tokio::time::Instant::now() < deadline, "/notifications{query} stayed {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn event_ids(page: &Value) -> Vec<&str> {
    page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"]["event_id"].as_str().unwrap())
        .collect()
}

async fn read_up_to(account: &Account, room_id: &str, event_id: &str, thread_id: Option<&str>) {
    let body = match thread_id {
        Some(thread_id) => json!({ "thread_id": thread_id }),
        None => json!({}),
    };
    account
        .post(&format!("/rooms/{}/receipt/m.read/{}", enc(room_id), enc(event_id)), &body)
        .await
        .unwrap()
        .ok();
}

async fn mentions_keywords_and_muted_rooms_count_until_a_read_receipt(backend: Backend) {
    let server = start(backend).await;
    let ([alice, bob, _carol], room) = three_in_a_public_room(&server).await;
    let mut since = initial_since(&alice, "timeout=0").await;

    // A message notifies; Alice's own does not.
    alice.send_text(&room, "my own words").await.unwrap();
    let hello = bob.send_text(&room, "hello all").await.unwrap();
    counts_reach(&alice, &mut since, "", &room, (1, 0)).await;
    // A mention highlights.
    let mention =
        json!({ "msgtype": "m.text", "body": "alice: look", "m.mentions": { "user_ids": [alice.user_id] } });
    let mention = bob.send_event(&room, "m.room.message", &mention).await.unwrap();
    counts_reach(&alice, &mut since, "", &room, (2, 1)).await;
    let page =
        notifications_until(&alice, "", |page| page["notifications"].as_array().unwrap().len() == 2).await;
    assert_eq!(event_ids(&page), [mention.as_str(), hello.as_str()], "newest first: {page}");
    let first = &page["notifications"][0];
    assert_eq!((&first["room_id"], &first["read"]), (&json!(room), &json!(false)), "{page}");
    assert!(first["actions"].as_array().unwrap().contains(&json!({ "set_tweak": "highlight" })), "{page}");
    let highlights = get_ok(&alice, "/notifications?only=highlight").await;
    assert_eq!(event_ids(&highlights), [mention.as_str()], "{highlights}");
    // Paged one at a time.
    let one = get_ok(&alice, "/notifications?limit=1").await;
    assert_eq!(event_ids(&one), [mention.as_str()]);
    let next =
        get_ok(&alice, &format!("/notifications?limit=1&from={}", one["next_token"].as_str().unwrap())).await;
    assert_eq!(event_ids(&next), [hello.as_str()]);
    for bad in ["from=abc", "limit=many", "only=loud"] {
        alice.get(&format!("/notifications?{bad}")).await.unwrap().err(400, "M_INVALID_PARAM");
    }

    // A read receipt at the newest event clears both counts, and the notifications read.
    read_up_to(&alice, &room, &mention, None).await;
    counts_reach(&alice, &mut since, "", &room, (0, 0)).await;
    let page = notifications_until(&alice, "", |page| page["notifications"][0]["read"] == true).await;
    assert_eq!(page["notifications"][1]["read"], true, "{page}");

    // A keyword of Alice's own highlights.
    let cake = json!({ "pattern": "cake", "actions": ["notify", { "set_tweak": "highlight" }] });
    alice.put("/pushrules/global/content/cake", &cake).await.unwrap().ok();
    bob.send_text(&room, "there is cake in the kitchen").await.unwrap();
    counts_reach(&alice, &mut since, "", &room, (1, 1)).await;

    // A muted room: plain messages no longer count, a mention still does.
    alice
        .put(&format!("/pushrules/global/room/{}", enc(&room)), &json!({ "actions": [] }))
        .await
        .unwrap()
        .ok();
    bob.send_text(&room, "chatter").await.unwrap();
    let mention =
        json!({ "msgtype": "m.text", "body": "alice!", "m.mentions": { "user_ids": [alice.user_id] } });
    let last = bob.send_event(&room, "m.room.message", &mention).await.unwrap();
    let seen = sync_until(&alice, &mut since, "", |sync| {
        room_in(sync, "join", &room)["timeline"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|event| event["event_id"] == last.as_str()))
    })
    .await;
    assert_eq!(counts(seen.last().unwrap(), &room), Some((2, 2)), "the muted room's chatter counted");
}

async fn threads_count_apart_and_threaded_receipts_clear_them(backend: Backend) {
    let server = start(backend).await;
    let ([alice, bob, _carol], room) = three_in_a_public_room(&server).await;
    let threads = filter_param(&json!({ "room": { "timeline": { "unread_thread_notifications": true } } }));
    let extra = format!("&{threads}");
    let mut since = initial_since(&alice, &threads).await;
    let root = bob.send_text(&room, "a thread starts").await.unwrap();
    let in_thread = |body: &str| json!({ "msgtype": "m.text", "body": body, "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
    bob.send_event(&room, "m.room.message", &in_thread("first reply")).await.unwrap();
    let second = bob.send_event(&room, "m.room.message", &in_thread("second reply")).await.unwrap();
    let seen = sync_until(&alice, &mut since, &extra, |sync| {
        room_in(sync, "join", &room)["unread_thread_notifications"][&root]["notification_count"] == 2
    })
    .await;
    let section = room_in(seen.last().unwrap(), "join", &room);
    assert_eq!(counts(seen.last().unwrap(), &room), Some((1, 0)), "the main timeline's own count: {section}");

    // Without the filter's flag, one count for everything and no per-thread counts.
    let plain = alice.sync("timeout=0").await.unwrap();
    assert_eq!(counts(&plain, &room), Some((3, 0)));
    assert!(room_in(&plain, "join", &room).get("unread_thread_notifications").is_none());

    // A threaded receipt reads the thread only; the main timeline stays unread.
    read_up_to(&alice, &room, &second, Some(&root)).await;
    let seen = sync_until(&alice, &mut since, &extra, |sync| room_in(sync, "join", &room).is_object()).await;
    let section = room_in(seen.last().unwrap(), "join", &room);
    assert_eq!(section["unread_thread_notifications"], json!({}), "{section}");
    assert_eq!(counts(seen.last().unwrap(), &room), Some((1, 0)), "{section}");
    // A receipt on the main timeline reads it.
    read_up_to(&alice, &room, &root, Some("main")).await;
    counts_reach(&alice, &mut since, &extra, &room, (0, 0)).await;
    // A later reply counts in its thread again; an unthreaded receipt reads everything.
    let third = bob.send_event(&room, "m.room.message", &in_thread("third reply")).await.unwrap();
    sync_until(&alice, &mut since, &extra, |sync| {
        room_in(sync, "join", &room)["unread_thread_notifications"][&root]["notification_count"] == 1
    })
    .await;
    read_up_to(&alice, &room, &third, None).await;
    sync_until(&alice, &mut since, &extra, |sync| {
        let section = room_in(sync, "join", &room);
        section["unread_thread_notifications"] == json!({}) && counts(sync, &room) == Some((0, 0))
    })
    .await;
}

async fn room_mentions_need_the_power_to_notify_the_room(backend: Backend) {
    let server = start(backend).await;
    let ([alice, bob, carol], room) = three_in_a_public_room(&server).await;
    let mut since = initial_since(&bob, "timeout=0").await;
    let room_mention =
        |body: &str| json!({ "msgtype": "m.text", "body": body, "m.mentions": { "room": true } });
    // Carol has power 0, below `notifications.room` (50): an ordinary notification for Bob.
    carol.send_event(&room, "m.room.message", &room_mention("everyone!")).await.unwrap();
    counts_reach(&bob, &mut since, "", &room, (1, 0)).await;
    // Alice created the room (100): a highlight.
    alice.send_event(&room, "m.room.message", &room_mention("everyone, really")).await.unwrap();
    counts_reach(&bob, &mut since, "", &room, (2, 1)).await;
}

const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

async fn sliding_sync_shows_counts_and_their_reset(backend: Backend) {
    let server = start(backend).await;
    let ([alice, bob, _carol], room) = three_in_a_public_room(&server).await;
    let body = json!({ "lists": { "all": { "ranges": [[0, 10]], "timeline_limit": 1 } } });
    let sliding = |pos: Option<String>| {
        let alice = alice.clone();
        let body = body.clone();
        async move {
            let path = match pos {
                Some(pos) => format!("{SLIDING}?timeout=5000&pos={}", enc(&pos)),
                None => format!("{SLIDING}?timeout=0"),
            };
            alice.post(&path, &body).await.unwrap().ok()
        }
    };
    let first = sliding(None).await;
    assert_eq!(first["rooms"][&room]["notification_count"], 0, "{first}");
    let mention = json!({ "msgtype": "m.text", "body": "hi", "m.mentions": { "user_ids": [alice.user_id] } });
    let event = bob.send_event(&room, "m.room.message", &mention).await.unwrap();
    let mut pos = first["pos"].as_str().unwrap().to_owned();
    let mut answered = None;
    for _ in 0..20 {
        let next = sliding(Some(pos.clone())).await;
        pos = next["pos"].as_str().unwrap().to_owned();
        if next["rooms"][&room]["highlight_count"] == 1 {
            answered = Some(next);
            break;
        }
    }
    let answered = answered.expect("the mention's counts never came");
    assert_eq!(answered["rooms"][&room]["notification_count"], 1, "{answered}");
    // A receipt from another device of Alice's sends the room again, with its counts cleared.
    read_up_to(&alice, &room, &event, None).await;
    let mut cleared = false;
    for _ in 0..20 {
        let next = sliding(Some(pos.clone())).await;
        pos = next["pos"].as_str().unwrap().to_owned();
        if next["rooms"][&room]["notification_count"] == 0 && next["rooms"][&room]["highlight_count"] == 0 {
            cleared = true;
            break;
        }
    }
    assert!(cleared, "the counts were not cleared by the receipt");
}

/// What Element shows: matrix-sdk's unread counts for a room, raised by a mention and cleared
/// by the read receipt the SDK sends.
async fn matrix_sdk_reads_unread_counts(backend: Backend) {
    use matrix_sdk::{
        config::SyncSettings,
        ruma::{
            OwnedEventId, OwnedRoomId, api::client::receipt::create_receipt::v3::ReceiptType,
            events::receipt::ReceiptThread,
        },
    };

    let server = start(backend).await;
    let client = ganglion_testkit::sdk_client(&server.base_url, "alice", crate::PASSWORD).await.unwrap();
    let alice = account_of(&server, &client);
    let bob = server.register("bob", crate::PASSWORD).await.unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room).await.unwrap();
    let settings = SyncSettings::default().timeout(Duration::from_secs(1));
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();
    let mention =
        json!({ "msgtype": "m.text", "body": "alice?", "m.mentions": { "user_ids": [alice.user_id] } });
    let event = bob.send_event(&room, "m.room.message", &mention).await.unwrap();
    let counts = |client: &matrix_sdk::Client| {
        let counts = client.get_room(&room_id).unwrap().unread_notification_counts();
        (counts.notification_count, counts.highlight_count)
    };
    let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
    loop {
        client.sync_once(settings.clone()).await.unwrap();
        if client.get_room(&room_id).is_some() && counts(&client) == (1, 1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the SDK never saw the mention's counts");
    }
    let sdk_room = client.get_room(&room_id).unwrap();
    let event_id = OwnedEventId::try_from(event.as_str()).unwrap();
    sdk_room.send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, event_id).await.unwrap();
    loop {
        client.sync_once(settings.clone()).await.unwrap();
        if counts(&client) == (0, 0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the SDK's counts were not cleared");
    }
}
