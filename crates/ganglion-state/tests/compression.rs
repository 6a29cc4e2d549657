//! State storage stays small: one membership change in a 10,000-member room writes two rows
//! (one block, one snapshot), on both backends.

use ganglion_state::{Caches, Snapshot};
use ganglion_storage::{Db, state::StateEntry};
use ganglion_types::{EventNid, RoomNid, StateKeyNid, TypeNid};
use sqlx::Row;

async fn row_counts(db: &Db) -> (i64, i64, i64) {
    let mut conn = db.conn().await.unwrap();
    let blocks: i64 =
        sqlx::query("SELECT COUNT(*) FROM state_blocks").fetch_one(&mut *conn).await.unwrap().get(0);
    let snapshots: i64 =
        sqlx::query("SELECT COUNT(*) FROM state_snapshots").fetch_one(&mut *conn).await.unwrap().get(0);
    let (_, block_bytes, _, snapshot_bytes) =
        ganglion_storage::state::state_storage_bytes(&mut conn).await.unwrap();
    (blocks + snapshots, block_bytes, snapshot_bytes)
}

async fn check(db: Db) {
    let caches = Caches::new();
    let room = RoomNid(1);
    let members = 10_000;
    // Build the room's state in batches of 500 joins (fast to set up), then change one member.
    let mut snapshot = Snapshot::empty();
    let mut conn = db.conn().await.unwrap();
    for chunk in (1..=members).collect::<Vec<i64>>().chunks(500) {
        let changes: Vec<StateEntry> = chunk
            .iter()
            .map(|user| StateEntry {
                type_nid: TypeNid(1),
                state_key_nid: StateKeyNid(*user),
                event_nid: EventNid(*user),
            })
            .collect();
        snapshot = caches.write_snapshot(&mut conn, room, &snapshot, &changes).await.unwrap();
    }
    drop(conn);
    assert_eq!(snapshot.len(), members as usize);
    let (rows_before, block_bytes_before, snapshot_bytes_before) = row_counts(&db).await;

    let mut conn = db.conn().await.unwrap();
    let change =
        StateEntry { type_nid: TypeNid(1), state_key_nid: StateKeyNid(42), event_nid: EventNid(20_042) };
    let next = caches.write_snapshot(&mut conn, room, &snapshot, &[change]).await.unwrap();
    drop(conn);
    let (rows_after, block_bytes_after, snapshot_bytes_after) = row_counts(&db).await;
    assert_eq!(rows_after - rows_before, 2, "one block and one snapshot row");
    let written = (block_bytes_after - block_bytes_before) + (snapshot_bytes_after - snapshot_bytes_before);
    let full_copy = members * 24;
    assert!(written * 20 < full_copy, "wrote {written} bytes; a full copy is {full_copy}");

    // The new snapshot reads back with the change and everything else unchanged.
    caches.clear();
    let mut conn = db.conn().await.unwrap();
    let loaded = caches.snapshot(&mut conn, next.nid.unwrap()).await.unwrap();
    assert_eq!(loaded.len(), members as usize);
    assert_eq!(loaded.get(TypeNid(1), StateKeyNid(42)), Some(EventNid(20_042)));
    assert_eq!(loaded.get(TypeNid(1), StateKeyNid(43)), Some(EventNid(43)));
    let old = caches.snapshot(&mut conn, snapshot.nid.unwrap()).await.unwrap();
    assert_eq!(old.get(TypeNid(1), StateKeyNid(42)), Some(EventNid(42)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_change_in_large_room_writes_two_rows_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/s.db?mode=rwc", dir.path().display()), 4).await.unwrap();
    check(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_change_in_large_room_writes_two_rows_postgres() {
    let url = tokio::task::spawn_blocking(|| {
        ganglion_testkit::Postgres::shared().unwrap().create_database().unwrap()
    })
    .await
    .unwrap();
    check(Db::connect(&url, 4).await.unwrap()).await;
}
