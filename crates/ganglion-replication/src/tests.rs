use std::{sync::Arc, time::Duration};

use ganglion_types::{StreamKind, StreamPosition, SyncToken};

use super::*;

fn row(room: &str, position: i64) -> StreamRow {
    StreamRow {
        kind: StreamKind::Events,
        position: StreamPosition(position),
        room_id: Some(Arc::from(room)),
        user_ids: vec![],
    }
}

#[tokio::test(start_paused = true)]
async fn a_row_wakes_only_listeners_of_its_room() {
    let positions = Arc::new(Positions::new(SyncToken::default()));
    let notifier = Notifier::new();
    let bus = InProcessBus::new(positions.clone(), notifier.clone());
    let in_room = notifier.listen(vec![Arc::from("!a:x")]);
    let elsewhere = notifier.listen(vec![Arc::from("!b:x")]);
    bus.publish(row("!a:x", 5));
    assert_eq!(positions.get(StreamKind::Events), StreamPosition(5));
    tokio::time::timeout(Duration::from_secs(1), in_room.notified()).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(1), elsewhere.notified()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_row_published_before_waiting_is_not_lost() {
    let notifier = Notifier::new();
    let listener = notifier.listen(vec![Arc::from("@u:x")]);
    notifier.notify(&StreamRow {
        kind: StreamKind::AccountData,
        position: StreamPosition(1),
        room_id: None,
        user_ids: vec![Arc::from("@u:x")],
    });
    tokio::time::timeout(Duration::from_millis(10), listener.notified()).await.unwrap();
    drop(listener);
    assert_eq!(notifier.listener_count(), 0);
}

#[test]
fn positions_never_go_backwards() {
    let positions = Positions::new(SyncToken::default());
    positions.advance(StreamKind::Receipts, StreamPosition(9));
    positions.advance(StreamKind::Receipts, StreamPosition(3));
    assert_eq!(positions.get(StreamKind::Receipts), StreamPosition(9));
}

#[test]
fn typing_changes_advance_the_stream_and_expire() {
    let typing = TypingStore::new();
    let first = typing.set("!r:x", "@a:x", true, Duration::from_secs(30)).unwrap();
    assert_eq!(typing.set("!r:x", "@a:x", true, Duration::from_secs(30)), None);
    assert_eq!(typing.typing_in_room("!r:x"), vec!["@a:x".to_owned()]);
    assert!(typing.changed_between("!r:x", StreamPosition(0), first));
    let expired = typing.expire(std::time::Instant::now() + Duration::from_secs(31));
    assert_eq!(expired.len(), 1);
    assert!(typing.typing_in_room("!r:x").is_empty());
    assert!(typing.position() > first);
}
