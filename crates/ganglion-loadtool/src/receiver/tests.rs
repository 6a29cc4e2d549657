use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::{Receiver, ReceiverOutcome, SyncResponse, sync_filter};
use crate::matrix::{Api, Session};
use crate::run::Counters;

fn receiver(event_type: &'static str) -> Receiver {
    Receiver {
        api: Api::new("http://127.0.0.1:1", 1, Duration::from_secs(1)).unwrap(),
        session: Session { user_id: "@me:x".into(), device_id: "ME".into(), access_token: "t".into() },
        run_id: Arc::from("run1"),
        event_type,
        filter: None,
        counters: Arc::new(Counters::default()),
    }
}

fn load(run: &str, sender: u32, seq: u32) -> serde_json::Value {
    json!({ "algorithm": "m.megolm.v1.aes-sha2", "load_run": run, "load_sender": sender, "load_seq": seq, "ts_ns": 5 })
}

#[test]
fn load_messages_are_found_in_timelines_and_to_device_events() {
    let response: SyncResponse = serde_json::from_value(json!({
        "next_batch": "s2",
        "rooms": { "join": { "!r:x": { "timeline": { "limited": true, "events": [
            { "type": "m.room.encrypted", "sender": "@a:x", "content": load("run1", 0, 1) },
            { "type": "m.room.encrypted", "sender": "@me:x", "content": load("run1", 1, 1) },
            { "type": "m.room.message", "sender": "@a:x", "content": load("run1", 0, 2) },
            { "type": "m.room.encrypted", "sender": "@a:x", "content": load("other", 0, 3) },
            { "type": "m.room.encrypted", "sender": "@a:x", "content": { "body": "not ours" } },
        ] } } } },
        "to_device": { "events": [
            { "type": "m.room.encrypted", "sender": "@s:x", "content": load("run1", 2, 7) },
        ] },
    }))
    .unwrap();
    let receiver = receiver("m.room.encrypted");
    let mut outcome = ReceiverOutcome::default();
    receiver.collect(&response, 9, &mut outcome);
    let found: Vec<(u32, u32)> = outcome.deliveries.iter().map(|d| (d.sender, d.seq)).collect();
    assert_eq!(found, [(0, 1), (2, 7)]);
    assert_eq!(outcome.deliveries[0].received_ns, 9);
    assert_eq!(outcome.limited_timelines, 1);
    assert_eq!(receiver.counters.delivered.load(Ordering::Relaxed), 2);
}

#[test]
fn a_sync_without_to_device_events_parses() {
    let response: SyncResponse = serde_json::from_value(json!({ "next_batch": "s1" })).unwrap();
    let mut outcome = ReceiverOutcome::default();
    receiver("m.room.message").collect(&response, 1, &mut outcome);
    assert!(outcome.deliveries.is_empty());
    assert_eq!(outcome.limited_timelines, 0);
}

#[test]
fn the_sync_filter_is_json_with_what_was_asked_for() {
    assert_eq!(sync_filter(None, false), None);
    let parse = |text: Option<String>| serde_json::from_str::<serde_json::Value>(&text.unwrap()).unwrap();
    assert_eq!(parse(sync_filter(Some(50), false)), json!({ "room": { "timeline": { "limit": 50 } } }));
    assert_eq!(parse(sync_filter(None, true)), json!({ "room": { "state": { "lazy_load_members": true } } }));
    assert_eq!(
        parse(sync_filter(Some(100), true)),
        json!({ "room": { "state": { "lazy_load_members": true }, "timeline": { "limit": 100 } } })
    );
    // What goes into `?filter=`: percent-encoded, nothing left that a query string could split on.
    let encoded = crate::matrix::encode_component(&sync_filter(Some(100), true).unwrap());
    assert!(encoded.starts_with("%7B%22room%22"), "{encoded}");
    assert!(!encoded.contains(['{', '"', ':', ',', '&', '=']), "{encoded}");
}
