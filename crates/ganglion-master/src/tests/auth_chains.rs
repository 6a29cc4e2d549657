//! The auth chain index as the writer keeps it, and as a master indexes rooms written before it.

use std::{collections::HashSet, sync::Arc};

use ganglion_events::ruma::RoomVersionId;
use ganglion_replication::{InProcessBus, Notifier, Positions, RecentEvents, TypingStore};
use ganglion_rpc::{CreateRoom, CreateRoomRequest, Rooms};
use ganglion_storage::{Db, auth_chains, events as event_store, rooms as room_store};
use ganglion_types::{EventNid, SyncToken};

use crate::MasterService;

pub(super) async fn master(db: &Db) -> Arc<MasterService> {
    let positions = Arc::new(Positions::new(SyncToken::default()));
    let recent = Arc::new(RecentEvents::new(SyncToken::default()));
    let bus = Arc::new(InProcessBus::new(positions.clone(), Notifier::new(), recent));
    MasterService::new(
        db.clone(),
        Arc::new(ganglion_state::Caches::new()),
        Arc::new(ganglion_events::ServerKey::ephemeral(
            &ganglion_config::Config::embedded_default().server_name,
        )),
        Arc::new(ganglion_config::Config::embedded_default()),
        bus,
        Arc::new(TypingStore::new()),
        positions,
    )
    .await
    .unwrap()
}

/// Every `(event, ancestor)` row of the index, by event id.
async fn index_of(db: &Db) -> HashSet<(String, String)> {
    let mut conn = db.conn().await.unwrap();
    let all: Vec<EventNid> =
        (1..=event_store::max_event_nid(&mut conn).await.unwrap()).map(EventNid).collect();
    let id_of = |nid: EventNid, events: &[event_store::EventRow]| {
        events.iter().find(|event| event.event_nid == nid).unwrap().event_id.clone()
    };
    let events = event_store::events_by_nid(&mut conn, &all).await.unwrap();
    auth_chains::chain_rows(&mut conn, &all)
        .await
        .unwrap()
        .into_iter()
        .map(|(event, ancestor)| (id_of(event, &events), id_of(ancestor, &events)))
        .collect()
}

#[tokio::test]
async fn state_events_are_indexed_as_written_and_older_rooms_when_the_master_starts() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/test.db?mode=rwc", dir.path().display()), 4).await.unwrap();
    let service = master(&db).await;
    let server = ganglion_config::Config::embedded_default().server_name;
    let alice = ganglion_events::ruma::OwnedUserId::try_from(format!("@alice:{server}")).unwrap();
    let mut rooms = Vec::new();
    for version in [RoomVersionId::V10, RoomVersionId::V12] {
        let request = CreateRoomRequest {
            name: Some("Indexed".to_owned()),
            room_version: Some(version),
            ..CreateRoomRequest::default()
        };
        rooms.push(service.create_room(CreateRoom { sender: alice.clone(), request }).await.unwrap());
    }
    drop(service);
    let written = index_of(&db).await;
    // The name event's chain in each room: the create event (named by the room id in v12, where
    // the event does not list it), the creator's join, and the power levels (with their own
    // chain: create and join).
    for room_id in &rooms {
        let mut conn = db.conn().await.unwrap();
        let room = room_store::room_by_id(&mut conn, room_id.as_str()).await.unwrap().unwrap();
        let events =
            event_store::events_in_room(&mut conn, room.room_nid, 0, i64::MAX, 100, false).await.unwrap();
        let id_of_type = |kind: &str| {
            events
                .iter()
                .find(|event| event.json.contains(&format!("\"type\":\"{kind}\"")))
                .unwrap()
                .event_id
                .clone()
        };
        let name = id_of_type("m.room.name");
        let chain: HashSet<String> = written
            .iter()
            .filter(|(event, _)| *event == name)
            .map(|(_, ancestor)| ancestor.clone())
            .collect();
        let expected: HashSet<String> = ["m.room.create", "m.room.member", "m.room.power_levels"]
            .iter()
            .map(|kind| id_of_type(kind))
            .collect();
        assert_eq!(chain, expected, "the chain of {name} in {room_id}");
    }
    // A database from before the index: the master indexes it as it starts, the same way.
    let mut conn = db.conn().await.unwrap();
    sqlx::query("DELETE FROM event_auth_chains").execute(&mut *conn).await.unwrap();
    sqlx::query("INSERT INTO auth_chain_backlog (room_nid) SELECT room_nid FROM rooms")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    assert!(index_of(&db).await.is_empty());
    drop(master(&db).await);
    assert_eq!(index_of(&db).await, written);
    let mut conn = db.conn().await.unwrap();
    assert!(auth_chains::backlog(&mut conn).await.unwrap().is_empty());
}
