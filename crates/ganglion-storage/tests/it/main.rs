//! Storage conformance: every test runs on SQLite and on a throwaway PostgreSQL.

use ganglion_storage::{
    accounts,
    events::{self, EventRow},
    rooms, state, streams,
};
use ganglion_types::{EventNid, RoomNid, SnapshotNid, StateKeyNid, TypeNid};

/// Runs `body` once per backend, each on a fresh database with `connections` connections
/// (4 unless given).
macro_rules! on_both_backends {
    ($name:ident, |$db:ident| $body:block) => {
        on_both_backends!($name, connections = 4, |$db| $body);
    };
    ($name:ident, connections = $connections:expr, |$db:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/test.db?mode=rwc", dir.path().display());
                let $db = ganglion_storage::Db::connect(&url, $connections).await.unwrap();
                assert_eq!($db.backend, ganglion_storage::Backend::Sqlite);
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let url = tokio::task::spawn_blocking(|| {
                    let postgres = ganglion_testkit::Postgres::shared().unwrap();
                    postgres.create_database().unwrap()
                })
                .await
                .unwrap();
                let $db = ganglion_storage::Db::connect(&url, $connections).await.unwrap();
                assert_eq!($db.backend, ganglion_storage::Backend::Postgres);
                $body
            }
        }
    };
}

mod auth_chains;
mod federation_reads;
mod key_backup;
mod keys;
mod media;
mod presence;
mod push_actions;
mod remote_members;
mod to_device;

on_both_backends!(migrations_are_idempotent, |db| {
    let url_again = db.clone();
    drop(url_again);
    // Connecting again re-runs the migration check without re-applying anything.
    let mut conn = db.conn().await.unwrap();
    let applied: Vec<(i64,)> = sqlx::query_as("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(applied, (1..=26).map(|version| (version,)).collect::<Vec<(i64,)>>());
});

on_both_backends!(users_devices_and_tokens, |db| {
    let mut conn = db.conn().await.unwrap();
    assert!(accounts::insert_user(&mut conn, "@a:x", Some("hash"), 1).await.unwrap());
    assert!(!accounts::insert_user(&mut conn, "@a:x", None, 2).await.unwrap());
    assert_eq!(accounts::password_hash_of_user(&mut conn, "@a:x").await.unwrap().as_deref(), Some("hash"));
    accounts::upsert_device(&mut conn, "@a:x", "DEV", Some("phone"), 5).await.unwrap();
    accounts::upsert_device(&mut conn, "@a:x", "DEV", None, 6).await.unwrap();
    accounts::insert_access_token(&mut conn, "tok", "@a:x", "DEV").await.unwrap();
    assert_eq!(
        accounts::session_by_token(&mut conn, "tok").await.unwrap(),
        Some(("@a:x".to_owned(), "DEV".to_owned()))
    );
    let devices = accounts::devices_of_user(&mut conn, "@a:x").await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].display_name.as_deref(), Some("phone"));
    let users = ["@a:x".to_owned(), "@nobody:x".to_owned()];
    assert_eq!(
        accounts::device_names_of_users(&mut conn, &users).await.unwrap(),
        vec![("@a:x".to_owned(), "DEV".to_owned(), Some("phone".to_owned()))]
    );
    accounts::delete_device(&mut conn, "@a:x", "DEV").await.unwrap();
    assert_eq!(accounts::session_by_token(&mut conn, "tok").await.unwrap(), None);
    assert_eq!(accounts::insert_filter(&mut conn, "@a:x", "{}").await.unwrap(), 0);
    assert_eq!(accounts::insert_filter(&mut conn, "@a:x", "{\"a\":1}").await.unwrap(), 1);
    assert_eq!(accounts::filter_by_id(&mut conn, "@a:x", 1).await.unwrap().as_deref(), Some("{\"a\":1}"));
});

on_both_backends!(events_are_read_back_by_position, |db| {
    let mut conn = db.conn().await.unwrap();
    let room = rooms::insert_room(&mut conn, "!r:x", "12", false).await.unwrap();
    let kind = state::type_nid_or_insert(&mut conn, "m.room.message").await.unwrap();
    assert_eq!(state::type_nid_or_insert(&mut conn, "m.room.message").await.unwrap(), kind);
    let row = |position: i64, event_id: &str| {
        std::sync::Arc::new(EventRow {
            event_nid: EventNid(position),
            stream_pos: position,
            event_id: event_id.to_owned(),
            room_nid: room,
            depth: position,
            type_nid: kind,
            state_key_nid: None,
            sender: "@a:x".to_owned(),
            origin_server_ts: position,
            json: format!("{{\"n\":{position}}}"),
            snapshot_nid: SnapshotNid(1),
            replaces_nid: None,
            redacted_by: None,
        })
    };
    // One statement for several rows, with the NIDs the writer hands out.
    let rows: Vec<_> = (1..=5_i64).map(|position| row(position, &format!("$e{position}"))).collect();
    events::insert_events(&mut conn, &rows).await.unwrap();
    assert_eq!(events::max_event_nid(&mut conn).await.unwrap(), 5);
    assert_eq!(events::event_by_id(&mut conn, "$e4").await.unwrap().unwrap().json, "{\"n\":4}");
    let newest = events::events_in_room(&mut conn, room, 1, 4, 2, true).await.unwrap();
    assert_eq!(newest.iter().map(|e| e.stream_pos).collect::<Vec<_>>(), vec![4, 3]);
    let oldest = events::events_in_room(&mut conn, room, 1, 4, 2, false).await.unwrap();
    assert_eq!(oldest.iter().map(|e| e.stream_pos).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(events::max_event_stream_pos(&mut conn).await.unwrap(), 5);
    assert_eq!(
        events::rooms_with_events_between(&mut conn, &[room, RoomNid(999)], 4, 5).await.unwrap(),
        vec![room]
    );
    assert!(events::rooms_with_events_between(&mut conn, &[room], 5, 9).await.unwrap().is_empty());
    // Event n was sent at n: the nearest to a time either way, outliers left out.
    for (ts, forward, expected) in
        [(3, true, Some(3)), (3, false, Some(3)), (6, true, None), (6, false, Some(5)), (0, false, None)]
    {
        assert_eq!(
            events::event_nearest_to_ts(&mut conn, room, ts, forward).await.unwrap(),
            expected.map(|n: i64| (format!("$e{n}"), n)),
            "{ts} {forward}"
        );
    }
    events::mark_outliers(&mut conn, &[EventNid(5)]).await.unwrap();
    assert_eq!(
        events::event_nearest_to_ts(&mut conn, room, 6, false).await.unwrap(),
        Some(("$e4".to_owned(), 4))
    );
    events::set_redacted_by(&mut conn, "$e2", "$r").await.unwrap();
    assert_eq!(
        events::event_by_id(&mut conn, "$e2").await.unwrap().unwrap().redacted_by.as_deref(),
        Some("$r")
    );
    let key = |txn: &str| ("@a:x".to_owned(), "DEV".to_owned(), txn.to_owned());
    events::insert_txns(&mut conn, &[(key("t1"), "$e3".to_owned()), (key("t2"), "$e4".to_owned())])
        .await
        .unwrap();
    let mut found = events::event_ids_by_txns(&mut conn, &[key("t2"), key("t9"), key("t1")]).await.unwrap();
    found.sort();
    assert_eq!(found, vec![(key("t1"), "$e3".to_owned()), (key("t2"), "$e4".to_owned())]);
    // A duplicate event id is refused, not silently merged.
    let duplicate = row(6, "$e1");
    assert!(events::insert_events(&mut conn, &[duplicate]).await.unwrap_err().is_unique_violation());
});

on_both_backends!(room_heads_move_with_their_bump_stamps, |db| {
    let mut conn = db.conn().await.unwrap();
    let first = rooms::insert_room(&mut conn, "!a:x", "12", false).await.unwrap();
    let second = rooms::insert_room(&mut conn, "!b:x", "12", false).await.unwrap();
    assert_eq!(rooms::room_by_nid(&mut conn, first).await.unwrap().unwrap().bump_stream_pos, 0);
    rooms::set_room_heads(
        &mut conn,
        &[
            (first, EventNid(7), SnapshotNid(1), 3, 7, r#"["$a"]"#.to_owned()),
            (second, EventNid(9), SnapshotNid(2), 4, 8, r#"["$b","$c"]"#.to_owned()),
        ],
    )
    .await
    .unwrap();
    let mut stamps = rooms::bump_stamps_of_rooms(&mut conn, &[second, first, RoomNid(999)]).await.unwrap();
    stamps.sort();
    assert_eq!(stamps, vec![(first, 7), (second, 8)]);
    let head = rooms::room_by_nid(&mut conn, second).await.unwrap().unwrap();
    assert_eq!((head.latest_event_nid, head.max_depth, head.bump_stream_pos), (Some(EventNid(9)), 4, 8));
    assert_eq!(head.forward_extremities.as_deref(), Some(r#"["$b","$c"]"#));
});

on_both_backends!(state_blocks_round_trip, |db| {
    let mut conn = db.conn().await.unwrap();
    let entries = vec![
        state::StateEntry { type_nid: TypeNid(1), state_key_nid: StateKeyNid(2), event_nid: EventNid(3) },
        state::StateEntry {
            type_nid: TypeNid(4),
            state_key_nid: StateKeyNid(5),
            event_nid: EventNid(i64::MAX),
        },
    ];
    let block = state::insert_state_block(&mut conn, &entries).await.unwrap();
    let snapshot = state::insert_state_snapshot(&mut conn, RoomNid(1), &[(7, block)]).await.unwrap();
    assert_eq!(state::state_snapshot_buckets(&mut conn, snapshot).await.unwrap(), vec![(7, block)]);
    let blocks = state::state_blocks_by_nid(&mut conn, &[block]).await.unwrap();
    assert_eq!(blocks[&block], entries);
});

on_both_backends!(receipts_and_account_data_keep_the_latest_row, |db| {
    let mut conn = db.conn().await.unwrap();
    let receipt = |event: &str, position| streams::ReceiptRow {
        room_id: "!r:x".into(),
        user_id: "@a:x".into(),
        receipt_type: "m.read".into(),
        thread_id: String::new(),
        event_id: event.into(),
        ts: 1,
        stream_pos: position,
    };
    streams::upsert_receipt(&mut conn, &receipt("$1", 1)).await.unwrap();
    streams::upsert_receipt(&mut conn, &receipt("$2", 2)).await.unwrap();
    let rows = streams::receipts_between(&mut conn, &["!r:x".to_owned()], 0, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event_id, "$2");
    assert!(streams::receipts_between(&mut conn, &["!r:x".to_owned()], 2, 10).await.unwrap().is_empty());
    streams::upsert_account_data(&mut conn, "@a:x", "", "m.direct", "{}", 1).await.unwrap();
    streams::upsert_account_data(&mut conn, "@a:x", "", "m.direct", "{\"x\":1}", 3).await.unwrap();
    let rows = streams::account_data_between(&mut conn, "@a:x", 1, 3).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].content, "{\"x\":1}");
    assert_eq!(streams::max_account_data_stream_pos(&mut conn).await.unwrap(), 3);
});

on_both_backends!(a_rolled_back_transaction_leaves_nothing, |db| {
    {
        let mut tx = db.begin().await.unwrap();
        accounts::insert_user(&mut tx, "@ghost:x", None, 1).await.unwrap();
        rooms::insert_room(&mut tx, "!ghost:x", "12", false).await.unwrap();
        // Dropped without commit.
    }
    let mut conn = db.conn().await.unwrap();
    assert!(!accounts::user_exists(&mut conn, "@ghost:x").await.unwrap());
    assert!(rooms::room_by_id(&mut conn, "!ghost:x").await.unwrap().is_none());
});

on_both_backends!(memberships_track_the_current_state, |db| {
    let mut conn = db.conn().await.unwrap();
    let room = rooms::insert_room(&mut conn, "!m:x", "12", true).await.unwrap();
    rooms::upsert_membership(&mut conn, room, "@a:x", "join", EventNid(1), 1).await.unwrap();
    rooms::upsert_membership(&mut conn, room, "@b:x", "invite", EventNid(2), 2).await.unwrap();
    rooms::upsert_membership(&mut conn, room, "@b:x", "join", EventNid(3), 3).await.unwrap();
    assert_eq!(rooms::joined_member_count(&mut conn, room).await.unwrap(), 2);
    rooms::upsert_membership(&mut conn, room, "@a:x", "leave", EventNid(4), 4).await.unwrap();
    rooms::set_membership_forgotten(&mut conn, room, "@a:x").await.unwrap();
    let mine = rooms::memberships_of_user(&mut conn, "@a:x").await.unwrap();
    assert_eq!(mine.len(), 1);
    assert!(mine[0].forgotten);
    assert_eq!(rooms::public_room_ids(&mut conn, 10, 0).await.unwrap(), vec!["!m:x".to_owned()]);
    assert!(rooms::insert_alias(&mut conn, "#a:x", "!m:x", "@a:x").await.unwrap());
    assert!(!rooms::insert_alias(&mut conn, "#a:x", "!m:x", "@b:x").await.unwrap());
    assert_eq!(rooms::room_id_by_alias(&mut conn, "#a:x").await.unwrap().as_deref(), Some("!m:x"));
    // Many at once (a joined room's state), over the memberships there already, 450 in three
    // statements.
    let mut many: Vec<(String, String, EventNid, i64)> =
        (0..450).map(|n| (format!("@u{n}:y"), "join".to_owned(), EventNid(100 + n), 100 + n)).collect();
    many.push(("@b:x".to_owned(), "leave".to_owned(), EventNid(999), 999));
    rooms::upsert_memberships(&mut conn, room, &many).await.unwrap();
    assert_eq!(rooms::joined_member_count(&mut conn, room).await.unwrap(), 450);
    let bob = rooms::membership_of_user_in_room(&mut conn, room, "@b:x").await.unwrap().unwrap();
    assert_eq!((bob.membership.as_str(), bob.event_nid), ("leave", EventNid(999)));
    // State keys interned in bulk: the known keep their NIDs, the new get theirs.
    let known = state::state_key_nid_or_insert(&mut conn, "@u1:y").await.unwrap();
    let keys: Vec<String> = (0..600).map(|n| format!("@u{n}:y")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let nids = state::state_key_nids_or_insert(&mut conn, &keys).await.unwrap();
    assert_eq!(nids.len(), 600);
    assert_eq!(nids["@u1:y"], known);
    assert_eq!(nids["@u599:y"], state::state_key_nid_or_insert(&mut conn, "@u599:y").await.unwrap());
});

on_both_backends!(server_keys_take_the_newest_answers_validity, |db| {
    use ganglion_storage::server_keys::{self, StoredServerKey};
    let mut conn = db.conn().await.unwrap();
    let key = |valid_until_ts| StoredServerKey {
        key_id: "ed25519:a".into(),
        verify_key: "AAAA".into(),
        valid_until_ts,
    };
    assert!(server_keys::keys_of_server(&mut conn, "remote.example").await.unwrap().is_empty());
    assert_eq!(server_keys::key_response_of_server(&mut conn, "remote.example").await.unwrap(), None);
    server_keys::store_server_keys(&mut conn, "remote.example", &[key(1000)], "{\"first\":1}", 1000, 10)
        .await
        .unwrap();
    // The server retired the key at 500: its newer answer says so.
    server_keys::store_server_keys(&mut conn, "remote.example", &[key(500)], "{\"second\":1}", 2000, 20)
        .await
        .unwrap();
    assert_eq!(server_keys::keys_of_server(&mut conn, "remote.example").await.unwrap(), vec![key(500)]);
    assert_eq!(
        server_keys::key_response_of_server(&mut conn, "remote.example").await.unwrap(),
        Some(("{\"second\":1}".to_owned(), 2000))
    );
    assert!(server_keys::keys_of_server(&mut conn, "other.example").await.unwrap().is_empty());
});

on_both_backends!(the_federation_outbox_keeps_order_until_delivered, |db| {
    use ganglion_storage::federation;
    let mut conn = db.conn().await.unwrap();
    let edu = |destination: &str, n: u32| {
        (destination.to_owned(), "m.direct_to_device".to_owned(), format!("{{\"n\":{n}}}"))
    };
    federation::insert_outbox_edus(
        &mut conn,
        &[edu("a.example", 1), edu("b.example", 2), edu("a.example", 3)],
        7,
    )
    .await
    .unwrap();
    let mut destinations = federation::outbox_destinations(&mut conn).await.unwrap();
    destinations.sort();
    assert_eq!(destinations, vec!["a.example", "b.example"]);
    let queued = federation::outbox_edus_for(&mut conn, "a.example", 10).await.unwrap();
    let order: Vec<&str> = queued.iter().map(|row| row.content_json.as_str()).collect();
    assert_eq!(order, vec!["{\"n\":1}", "{\"n\":3}"]);
    assert_eq!(federation::outbox_edus_for(&mut conn, "a.example", 1).await.unwrap().len(), 1);
    let b = federation::outbox_edus_for(&mut conn, "b.example", 10).await.unwrap();
    federation::delete_outbox_edus(&mut conn, &[queued[0].id, queued[1].id]).await.unwrap();
    assert!(federation::outbox_edus_for(&mut conn, "a.example", 10).await.unwrap().is_empty());
    assert_eq!(federation::outbox_destinations(&mut conn).await.unwrap(), vec!["b.example"]);
    assert_eq!(federation::outbox_edus_for(&mut conn, "b.example", 10).await.unwrap(), b);

    assert_eq!(federation::inbound_transaction_response(&mut conn, "a.example", "t1").await.unwrap(), None);
    federation::insert_inbound_transaction(&mut conn, "a.example", "t1", "{\"pdus\":{}}", 1).await.unwrap();
    // A second answer to the same transaction does not replace the first.
    federation::insert_inbound_transaction(&mut conn, "a.example", "t1", "{\"other\":1}", 2).await.unwrap();
    assert_eq!(
        federation::inbound_transaction_response(&mut conn, "a.example", "t1").await.unwrap().as_deref(),
        Some("{\"pdus\":{}}")
    );
    assert_eq!(federation::inbound_transaction_response(&mut conn, "b.example", "t1").await.unwrap(), None);
});
