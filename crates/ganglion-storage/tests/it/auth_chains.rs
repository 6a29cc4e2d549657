//! The auth chain index.

use std::collections::HashSet;

use ganglion_storage::{
    auth_chains::{self, Unindexed},
    events::{self, EventRow},
    rooms, state,
};
use ganglion_types::{EventNid, RoomNid, SnapshotNid, StateKeyNid};

fn row(nid: i64, room: RoomNid, kind: ganglion_types::TypeNid) -> std::sync::Arc<EventRow> {
    std::sync::Arc::new(EventRow {
        event_nid: EventNid(nid),
        stream_pos: nid,
        event_id: format!("$e{nid}"),
        room_nid: room,
        depth: nid,
        type_nid: kind,
        state_key_nid: Some(StateKeyNid(1)),
        sender: "@a:x".to_owned(),
        origin_server_ts: nid,
        json: "{}".to_owned(),
        snapshot_nid: SnapshotNid(1),
        replaces_nid: None,
        redacted_by: None,
    })
}

fn unindexed(nid: i64, room: RoomNid, auth: &[&str]) -> Unindexed {
    Unindexed {
        event_nid: EventNid(nid),
        room_nid: room,
        auth_events: auth.iter().map(|id| (*id).to_owned()).collect(),
    }
}

fn nids(list: &[i64]) -> HashSet<EventNid> {
    list.iter().map(|nid| EventNid(*nid)).collect()
}

on_both_backends!(auth_chains_are_indexed_in_any_order_and_across_batches, |db| {
    let mut conn = db.conn().await.unwrap();
    let room = rooms::insert_room(&mut conn, "!r:x", "10", false).await.unwrap();
    let other = rooms::insert_room(&mut conn, "!o:x", "10", false).await.unwrap();
    let kind = state::type_nid_or_insert(&mut conn, "m.room.member").await.unwrap();
    // 1 create; 2 a member (auth 1); 3 power levels (auth 1, 2); 4 a member (auth 1, 3, 2);
    // 9 an event of another room.
    let rows: Vec<_> = [1, 2, 3, 4].into_iter().map(|nid| row(nid, room, kind)).collect();
    events::insert_events(&mut conn, &rows).await.unwrap();
    events::insert_events(&mut conn, &[row(9, other, kind)]).await.unwrap();
    // Newest first, as history arrives; and one auth event of another room, one unknown.
    let batch = [
        unindexed(4, room, &["$e1", "$e3", "$e2", "$e9", "$unknown"]),
        unindexed(3, room, &["$e1", "$e2"]),
        unindexed(2, room, &["$e1"]),
        unindexed(1, room, &[]),
    ];
    auth_chains::index(&mut conn, &batch).await.unwrap();
    assert_eq!(auth_chains::chain_of(&mut conn, &[EventNid(4)]).await.unwrap(), nids(&[1, 2, 3]));
    assert_eq!(auth_chains::chain_of(&mut conn, &[EventNid(3)]).await.unwrap(), nids(&[1, 2]));
    assert!(auth_chains::chain_of(&mut conn, &[EventNid(1)]).await.unwrap().is_empty());
    // A later batch builds on the chains indexed before; indexing again changes nothing.
    events::insert_events(&mut conn, &[row(5, room, kind)]).await.unwrap();
    auth_chains::index(&mut conn, &[unindexed(5, room, &["$e4", "$e3"])]).await.unwrap();
    auth_chains::index(&mut conn, &batch).await.unwrap();
    assert_eq!(auth_chains::chain_of(&mut conn, &[EventNid(5)]).await.unwrap(), nids(&[1, 2, 3, 4]));
    let rows = auth_chains::chain_rows(&mut conn, &[EventNid(3), EventNid(5)]).await.unwrap();
    assert_eq!(rows.len(), 2 + 4);
});
