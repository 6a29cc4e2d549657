use std::{sync::Arc, time::Duration};

use ganglion_types::{StreamKind, StreamPosition, SyncToken};

use super::*;

fn row(room: &str, position: i64) -> StreamRow {
    StreamRow {
        kind: StreamKind::Events,
        position: StreamPosition(position),
        room_id: Some(Arc::from(room)),
        user_ids: vec![],
        event_nid: Some(ganglion_types::EventNid(position)),
        event: None,
        event_txn: None,
        receipt: None,
        keys_complete: true,
        trace: None,
        push: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_row_wakes_only_listeners_of_its_room() {
    let positions = Arc::new(Positions::new(SyncToken::default()));
    let notifier = Notifier::new();
    let recent = Arc::new(RecentEvents::new(SyncToken::default()));
    let bus = InProcessBus::new(positions.clone(), notifier.clone(), recent.clone());
    let in_room = notifier.listen(vec![Arc::from("!a:x")]);
    let elsewhere = notifier.listen(vec![Arc::from("!b:x")]);
    bus.publish(row("!a:x", 5));
    assert_eq!(positions.get(StreamKind::Events), StreamPosition(5));
    assert_eq!(recent.newest_between("!a:x", 0, 5, 10), Some(vec![(ganglion_types::EventNid(5), 5)]));
    assert_eq!(recent.newest_between("!b:x", 0, 5, 10), Some(vec![]));
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
        event_nid: None,
        event: None,
        event_txn: None,
        receipt: None,
        keys_complete: true,
        trace: None,
        push: None,
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
    assert_eq!((expired[0].0.as_str(), &expired[0].2), ("!r:x", &vec!["@a:x".to_owned()]));
    assert!(typing.typing_in_room("!r:x").is_empty());
    assert!(typing.position() > first);
}

#[test]
fn recent_events_answer_only_what_they_saw() {
    let recent = RecentEvents::new(SyncToken { events: StreamPosition(10), ..SyncToken::default() });
    let user: Arc<str> = Arc::from("@u:x");
    for position in 11..=300 {
        let members = if position == 20 { vec![user.clone()] } else { vec![] };
        recent.record("!r:x", position, ganglion_types::EventNid(position), &members);
    }
    // Before the process started: unknown.
    assert_eq!(recent.newest_between("!other:x", 5, 300, 10), None);
    // Evicted: unknown.
    assert_eq!(recent.newest_between("!r:x", 100, 300, 10), None);
    let newest = recent.newest_between("!r:x", 290, 300, 3).unwrap();
    assert_eq!(newest.iter().map(|(_, p)| *p).collect::<Vec<_>>(), vec![300, 299, 298]);
    assert_eq!(recent.membership_changed_after("@u:x", 19), Some(true));
    assert_eq!(recent.membership_changed_after("@u:x", 20), Some(false));
    assert_eq!(recent.membership_changed_after("@u:x", 5), None);
    // Per room: a member event at 20 in `!r:x`, none in `!quiet:x`.
    let rooms = |names: &'static [&'static str]| names.iter().copied();
    assert_eq!(recent.room_membership_changed_after(rooms(&["!quiet:x", "!r:x"]), 19), Some(true));
    assert_eq!(recent.room_membership_changed_after(rooms(&["!quiet:x", "!r:x"]), 20), Some(false));
    assert_eq!(recent.room_membership_changed_after(rooms(&["!quiet:x"]), 10), Some(false));
    assert_eq!(recent.room_membership_changed_after(rooms(&["!r:x"]), 5), None);
}

#[test]
fn account_data_changes_are_told_per_user_from_the_start_on() {
    let recent = RecentEvents::new(SyncToken { account_data: StreamPosition(4), ..SyncToken::default() });
    recent.record_keys(StreamKind::AccountData, 7, &[Arc::from("@u:x")], true);
    assert_eq!(recent.account_data_changed_after("@u:x", 6), Some(true));
    assert_eq!(recent.account_data_changed_after("@u:x", 7), Some(false));
    assert_eq!(recent.account_data_changed_after("@other:x", 4), Some(false));
    // Before the process started: unknown.
    assert_eq!(recent.account_data_changed_after("@u:x", 3), None);
}

#[test]
fn the_bus_records_account_data_rows() {
    let recent = Arc::new(RecentEvents::new(SyncToken::default()));
    let bus =
        InProcessBus::new(Arc::new(Positions::new(SyncToken::default())), Notifier::new(), recent.clone());
    bus.publish(StreamRow::new(StreamKind::AccountData, StreamPosition(1), None, vec![Arc::from("@u:x")]));
    assert_eq!(recent.account_data_changed_after("@u:x", 0), Some(true));
    assert_eq!(recent.account_data_changed_after("@u:x", 1), Some(false));
}

#[test]
fn receipts_are_answered_as_the_database_holds_them() {
    let receipt = |user: &str, position: i64, event: &str| ganglion_storage::streams::ReceiptRow {
        room_id: "!r:x".to_owned(),
        user_id: user.to_owned(),
        receipt_type: "m.read".to_owned(),
        thread_id: String::new(),
        event_id: event.to_owned(),
        ts: position,
        stream_pos: position,
    };
    let recent = RecentEvents::new(SyncToken { receipts: StreamPosition(10), ..SyncToken::default() });
    let room = ["!r:x".to_owned()];
    for (user, position, event) in [("@a:x", 11, "$1"), ("@b:x", 12, "$1"), ("@a:x", 13, "$2")] {
        recent.record_receipt("!r:x", position, Some(&Arc::new(receipt(user, position, event))));
    }
    // The database keeps each user's latest receipt: @a's first one is gone.
    let between = |after, up_to| {
        recent
            .receipts_between(&room, after, up_to)
            .map(|rows| rows.into_iter().map(|row| (row.user_id, row.event_id)).collect::<Vec<_>>())
    };
    assert_eq!(between(10, 13), Some(vec![("@b:x".into(), "$1".into()), ("@a:x".into(), "$2".into())]));
    assert_eq!(between(10, 12), Some(vec![("@b:x".into(), "$1".into())]), "@a's latest is past the range");
    assert_eq!(between(13, 13), Some(vec![]));
    assert_eq!(recent.receipts_between(&["!quiet:x".to_owned()], 10, 13), Some(vec![]));
    // Before this process started, or before a receipt it only knows by position: unknown.
    assert_eq!(between(9, 13), None);
    recent.record_receipt("!r:x", 14, None);
    assert_eq!(between(13, 14), None);
    assert_eq!(between(14, 14), Some(vec![]));
}

#[test]
fn notices_and_readers_are_told_per_user_while_every_row_said_whom_it_notified() {
    let recent = RecentEvents::new(SyncToken {
        events: StreamPosition(10),
        receipts: StreamPosition(3),
        ..SyncToken::default()
    });
    let room: Arc<str> = Arc::from("!r:x");
    let notified = |users: &[(&str, bool)], thread: &str| Notified {
        thread_id: Arc::from(thread),
        users: users.iter().map(|(user, highlight)| (Arc::from(*user), *highlight)).collect(),
    };
    recent.record_notices(&room, 11, Some(&notified(&[("@a:x", false), ("@b:x", true)], "main")));
    recent.record_notices(&room, 12, Some(&notified(&[], "main")));
    recent.record_notices(&room, 13, Some(&notified(&[("@a:x", true)], "$root")));
    let positions = |after, up_to| {
        recent.notices_between("@a:x", after, up_to).map(|notices| {
            notices
                .into_iter()
                .map(|n| (n.position, n.thread_id.to_string(), n.highlight))
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(positions(10, 13), Some(vec![(11, "main".into(), false), (13, "$root".into(), true)]));
    assert_eq!(positions(11, 12), Some(vec![]));
    assert_eq!(recent.notices_between("@nobody:x", 10, 13), Some(vec![]));
    // Before the process started, or past what it saw: unknown.
    assert_eq!(positions(9, 13), None);
    assert_eq!(positions(10, 14), None);
    // A row caught up without its notices: nothing before it can be told.
    recent.record_notices(&room, 14, None);
    assert_eq!(positions(13, 14), None);
    assert_eq!(positions(14, 14), Some(vec![]));

    // Readers: whose receipts moved.
    let receipt = ganglion_storage::streams::ReceiptRow {
        room_id: "!r:x".to_owned(),
        user_id: "@a:x".to_owned(),
        receipt_type: "m.read".to_owned(),
        thread_id: String::new(),
        event_id: "$1".to_owned(),
        ts: 0,
        stream_pos: 4,
    };
    recent.record_receipt("!r:x", 4, Some(&Arc::new(receipt)));
    assert_eq!(recent.receipt_of_user_after("@a:x", 3), Some(true));
    assert_eq!(recent.receipt_of_user_after("@a:x", 4), Some(false));
    assert_eq!(recent.receipt_of_user_after("@b:x", 3), Some(false));
    recent.record_receipt("!r:x", 5, None);
    assert_eq!(recent.receipt_of_user_after("@b:x", 4), None);
}
