//! Unread counts and notifications from push actions and read receipts, threads included.

use ganglion_storage::{
    events::{self, EventRow},
    push_actions::{self, PushNoticeRow, UnreadCount},
    rooms, state,
    streams::{self, ReceiptRow},
};
use ganglion_types::{EventNid, RoomNid, SnapshotNid};

fn event(nid: i64, room: RoomNid, kind: ganglion_types::TypeNid) -> std::sync::Arc<EventRow> {
    std::sync::Arc::new(EventRow {
        event_nid: EventNid(nid),
        stream_pos: nid,
        event_id: format!("$e{nid}"),
        room_nid: room,
        depth: nid,
        type_nid: kind,
        state_key_nid: None,
        sender: "@b:x".to_owned(),
        origin_server_ts: nid,
        json: "{}".to_owned(),
        snapshot_nid: SnapshotNid(1),
        replaces_nid: None,
        redacted_by: None,
    })
}

/// The notice of event `nid`: each of `users` notified, `(user, highlight)`.
fn notice(nid: i64, room: RoomNid, thread: &str, users: &[(&str, bool)]) -> PushNoticeRow {
    let users: serde_json::Map<String, serde_json::Value> = users
        .iter()
        .map(|(user, highlight)| ((*user).to_owned(), serde_json::json!([u8::from(*highlight), 0])))
        .collect();
    PushNoticeRow {
        stream_pos: nid,
        room_nid: room,
        event_nid: EventNid(nid),
        thread_id: thread.to_owned(),
        users: serde_json::Value::Object(users).to_string(),
        actions: r#"[["notify"]]"#.to_owned(),
        ts: nid * 10,
    }
}

fn receipt(user: &str, event_nid: i64, thread: &str, position: i64) -> ReceiptRow {
    ReceiptRow {
        room_id: "!r:x".to_owned(),
        user_id: user.to_owned(),
        receipt_type: "m.read".to_owned(),
        thread_id: thread.to_owned(),
        event_id: format!("$e{event_nid}"),
        ts: 0,
        stream_pos: position,
    }
}

/// `(room, thread, notifications, highlights)` of `@a:x` in `rooms` as of `up_to`, sorted.
async fn counts(
    conn: &mut ganglion_storage::Conn,
    rooms: &[RoomNid],
    up_to: i64,
) -> Vec<(i64, String, i64, i64)> {
    let mut counts = push_actions::unread_counts(conn, "@a:x", rooms, up_to).await.unwrap();
    counts.sort_by(|a, b| (a.room_nid, &a.thread_id).cmp(&(b.room_nid, &b.thread_id)));
    counts
        .into_iter()
        .map(|UnreadCount { room_nid, thread_id, notifications, highlights }| {
            (room_nid.0, thread_id, notifications, highlights)
        })
        .collect()
}

on_both_backends!(unread_counts_follow_receipts_per_thread, |db| {
    let mut conn = db.conn().await.unwrap();
    let room = rooms::insert_room(&mut conn, "!r:x", "10", false).await.unwrap();
    let other = rooms::insert_room(&mut conn, "!o:x", "10", false).await.unwrap();
    let kind = state::type_nid_or_insert(&mut conn, "m.room.message").await.unwrap();
    let rows: Vec<_> = (1..=6).map(|nid| event(nid, if nid == 6 { other } else { room }, kind)).collect();
    events::insert_events(&mut conn, &rows).await.unwrap();
    // 1, 2 main (2 a highlight); 3, 4 in thread $e1 (4 a highlight); 5 main; 6 another room.
    let notices = [
        notice(1, room, "main", &[("@a:x", false)]),
        notice(2, room, "main", &[("@a:x", true), ("@aa:x", false)]),
        notice(3, room, "$e1", &[("@a:x", false)]),
        notice(4, room, "$e1", &[("@a:x", true)]),
        notice(5, room, "main", &[("@a:x", false), ("@c:x", true)]),
        notice(6, other, "main", &[("@a:x", false)]),
    ];
    push_actions::insert_push_notices(&mut conn, &notices).await.unwrap();
    // Only @c's in the room, not @a's: @a:x is not a prefix match for @aa:x.
    let only_c = push_actions::unread_counts(&mut conn, "@c:x", &[room], 6).await.unwrap();
    assert_eq!(
        only_c,
        vec![UnreadCount { room_nid: room, thread_id: "main".into(), notifications: 1, highlights: 1 }]
    );
    let (r, o) = (room.0, other.0);
    assert_eq!(
        counts(&mut conn, &[room, other], 6).await,
        vec![(r, "$e1".into(), 2, 1), (r, "main".into(), 3, 1), (o, "main".into(), 1, 0)]
    );
    // As of an earlier position.
    assert_eq!(
        counts(&mut conn, &[room, other], 3).await,
        vec![(r, "$e1".into(), 1, 0), (r, "main".into(), 2, 1)]
    );
    // A threaded receipt reads that thread only.
    streams::upsert_receipt(&mut conn, &receipt("@a:x", 4, "$e1", 1)).await.unwrap();
    assert_eq!(
        counts(&mut conn, &[room, other], 6).await,
        vec![(r, "main".into(), 3, 1), (o, "main".into(), 1, 0)]
    );
    // `main` reads the main timeline up to its event.
    streams::upsert_receipt(&mut conn, &receipt("@a:x", 2, "main", 2)).await.unwrap();
    assert_eq!(
        counts(&mut conn, &[room, other], 6).await,
        vec![(r, "main".into(), 1, 0), (o, "main".into(), 1, 0)]
    );
    // An unthreaded receipt reads everything up to its event, in its room only.
    streams::upsert_receipt(&mut conn, &receipt("@a:x", 5, "", 3)).await.unwrap();
    assert_eq!(counts(&mut conn, &[room, other], 6).await, vec![(o, "main".into(), 1, 0)]);

    // Notifications (of the rooms @a is joined to): newest first, read or not, paged, highlights only.
    for target in [room, other] {
        rooms::upsert_membership(&mut conn, target, "@a:x", "join", EventNid(1), 1).await.unwrap();
    }
    let (page, next) = push_actions::notifications_of_user(&mut conn, "@a:x", None, 10, false).await.unwrap();
    assert_eq!(next, None);
    let seen: Vec<(i64, &str, bool)> =
        page.iter().map(|n| (n.stream_pos, n.room_id.as_str(), n.read)).collect();
    assert_eq!(
        seen,
        vec![
            (6, "!o:x", false),
            (5, "!r:x", true),
            (4, "!r:x", true),
            (3, "!r:x", true),
            (2, "!r:x", true),
            (1, "!r:x", true)
        ]
    );
    assert_eq!(page[0].actions, serde_json::json!(["notify"]));
    let (before, next) =
        push_actions::notifications_of_user(&mut conn, "@a:x", Some(4), 2, false).await.unwrap();
    assert_eq!(before.iter().map(|n| n.stream_pos).collect::<Vec<_>>(), vec![3, 2]);
    assert_eq!(next, Some(2));
    let (highlights, _) =
        push_actions::notifications_of_user(&mut conn, "@a:x", None, 10, true).await.unwrap();
    assert_eq!(highlights.iter().map(|n| n.stream_pos).collect::<Vec<_>>(), vec![4, 2]);
    // By position, for the pushers.
    let between = push_actions::notices_between(&mut conn, 2, 5, 2).await.unwrap();
    assert_eq!(between.iter().map(|n| n.stream_pos).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(
        push_actions::unread_rooms_of_user(&mut conn, "@a:x", 6).await.unwrap(),
        vec![other],
        "only !o:x is unread"
    );
});

on_both_backends!(the_badge_counts_rooms_with_an_unread_notification, |db| {
    let mut conn = db.conn().await.unwrap();
    let backlog = rooms::insert_room(&mut conn, "!b:x", "10", false).await.unwrap();
    let threads = rooms::insert_room(&mut conn, "!r:x", "10", false).await.unwrap();
    let quiet = rooms::insert_room(&mut conn, "!q:x", "10", false).await.unwrap();
    let kind = state::type_nid_or_insert(&mut conn, "m.room.message").await.unwrap();
    let room_of = |nid: i64| match nid {
        ..=40 => backlog,
        41 | 42 => threads,
        _ => quiet,
    };
    let rows: Vec<_> = (1..=44).map(|nid| event(nid, room_of(nid), kind)).collect();
    events::insert_events(&mut conn, &rows).await.unwrap();
    // `_` in the user's ID must not match `@aXb:x`, whose notices fill pages above the one
    // notice of the backlog room that names @a_b:x.
    let me = "@a_b:x";
    let mut notices = vec![notice(1, backlog, "main", &[(me, false)])];
    notices.extend((2..=40).map(|nid| notice(nid, backlog, "main", &[("@aXb:x", false)])));
    notices.push(notice(41, threads, "$t", &[(me, false)]));
    notices.push(notice(42, threads, "main", &[(me, true)]));
    notices.push(notice(43, quiet, "main", &[("@c:x", false)]));
    notices.push(notice(44, quiet, "main", &[(me, false)]));
    push_actions::insert_push_notices(&mut conn, &notices).await.unwrap();
    for room in [backlog, threads, quiet] {
        rooms::upsert_membership(&mut conn, room, me, "join", EventNid(1), 1).await.unwrap();
    }
    // Position 44 is beyond `up_to`.
    let mut unread = push_actions::unread_rooms_of_user(&mut conn, me, 43).await.unwrap();
    unread.sort();
    assert_eq!(unread, vec![backlog, threads]);
    assert_eq!(push_actions::unread_rooms_of_user(&mut conn, me, 44).await.unwrap().len(), 3);
    // `main` read up to 42 leaves the thread's notice unread; the thread's own receipt reads it.
    streams::upsert_receipt(&mut conn, &receipt(me, 42, "main", 1)).await.unwrap();
    assert_eq!(push_actions::unread_rooms_of_user(&mut conn, me, 43).await.unwrap().len(), 2);
    streams::upsert_receipt(&mut conn, &receipt(me, 41, "$t", 2)).await.unwrap();
    assert_eq!(
        push_actions::unread_rooms_of_user(&mut conn, me, 43).await.unwrap(),
        vec![backlog],
        "the backlog room only"
    );

    // What clears a pusher's cached badge: read receipts moved since a position, and
    // membership changes in a range of events positions.
    assert_eq!(
        push_actions::users_with_receipts_after(&mut conn, 0).await.unwrap(),
        (vec![me.to_owned(), me.to_owned()], 2)
    );
    assert_eq!(push_actions::users_with_receipts_after(&mut conn, 2).await.unwrap(), (vec![], 2));
    let moved = |user: &str, position| ReceiptRow {
        receipt_type: "m.read.private".into(),
        ..receipt(user, 41, "", position)
    };
    streams::upsert_receipt(&mut conn, &moved("@c:x", 3)).await.unwrap();
    assert_eq!(
        push_actions::users_with_receipts_after(&mut conn, 2).await.unwrap(),
        (vec!["@c:x".to_owned()], 3)
    );
    rooms::upsert_membership(&mut conn, quiet, "@c:x", "leave", EventNid(43), 43).await.unwrap();
    assert_eq!(
        push_actions::users_with_membership_changes(&mut conn, 1, 42).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        push_actions::users_with_membership_changes(&mut conn, 1, 43).await.unwrap(),
        vec!["@c:x".to_owned()]
    );
});
