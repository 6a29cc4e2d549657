//! Relations and searchable text as the writer keeps them, and as a master indexes events
//! written before their tables existed (the rooms the migrations put in their backlogs).

use ganglion_events::{EventTemplate, ruma::OwnedUserId};
use ganglion_rpc::{CreateRoom, CreateRoomRequest, Rooms, SendEvent};
use ganglion_storage::{
    Db, relations, rooms as room_store,
    search::{self, SearchOrder, SearchQuery},
};
use serde_json::json;

use super::auth_chains::master;

/// The thread replies of `root` and the events matching `term`, as the index has them.
async fn indexed(db: &Db, room_id: &str, root: &str, term: &str) -> (usize, usize) {
    let mut conn = db.conn().await.unwrap();
    let room = room_store::room_by_id(&mut conn, room_id).await.unwrap().unwrap();
    let replies = relations::related_events(
        &mut conn,
        &relations::RelatedQuery {
            parent_id: root,
            room_nid: room.room_nid,
            rel_type: Some("m.thread"),
            event_type: None,
            depth: 1,
            after: i64::MIN,
            up_to: i64::MAX,
            limit: 100,
            newest_first: true,
        },
    )
    .await
    .unwrap();
    let query = SearchQuery {
        term,
        rooms: &[room.room_nid],
        keys: &["content.body", "content.name", "content.topic"],
        order: SearchOrder::Rank,
        offset: 0,
        below: None,
        limit: 100,
    };
    let hits = search::search_events(&mut conn, &query).await.unwrap();
    (replies.len(), hits.len())
}

#[tokio::test]
async fn relations_and_search_rows_are_written_and_older_rooms_indexed_when_the_master_starts() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/test.db?mode=rwc", dir.path().display()), 4).await.unwrap();
    let service = master(&db).await;
    let server = ganglion_config::Config::embedded_default().server_name;
    let alice = OwnedUserId::try_from(format!("@alice:{server}")).unwrap();
    let request =
        CreateRoomRequest { name: Some("Harbour plans".to_owned()), ..CreateRoomRequest::default() };
    let room_id = service.create_room(CreateRoom { sender: alice.clone(), request }).await.unwrap();
    let send = |content: serde_json::Value| SendEvent {
        sender: alice.clone(),
        device_id: None,
        room_id: room_id.clone(),
        template: EventTemplate { kind: "m.room.message".into(), content, state_key: None, redacts: None },
        txn_id: None,
    };
    let root =
        service.send_event(send(json!({ "msgtype": "m.text", "body": "the harbour opens" }))).await.unwrap();
    for body in ["when?", "at dawn"] {
        let reply = json!({ "msgtype": "m.text", "body": body, "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
        service.send_event(send(reply)).await.unwrap();
    }
    drop(service);
    // The root, and the room's name.
    assert_eq!(indexed(&db, room_id.as_str(), root.as_str(), "harbour").await, (2, 2));

    // A database from before both tables: the master indexes it as it starts.
    let mut conn = db.conn().await.unwrap();
    for statement in [
        "DELETE FROM event_relations",
        "DELETE FROM event_search",
        "INSERT INTO relations_backlog (room_nid) SELECT room_nid FROM rooms",
        "INSERT INTO search_backlog (room_nid) SELECT room_nid FROM rooms",
    ] {
        sqlx::query(statement).execute(&mut *conn).await.unwrap();
    }
    drop(conn);
    assert_eq!(indexed(&db, room_id.as_str(), root.as_str(), "harbour").await, (0, 0));
    drop(master(&db).await);
    assert_eq!(indexed(&db, room_id.as_str(), root.as_str(), "harbour").await, (2, 2));
    let mut conn = db.conn().await.unwrap();
    assert!(relations::backlog(&mut conn).await.unwrap().is_empty());
    assert!(search::backlog(&mut conn).await.unwrap().is_empty());
}
