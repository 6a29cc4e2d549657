//! Key backup writes on a real (SQLite) database: which version takes keys, the replacement
//! rule, and when the etag moves.

use std::sync::Arc;

use ganglion_events::ruma::{OwnedUserId, UInt, owned_room_id, owned_user_id};
use ganglion_keys::{BackupKey, BackupSession, RoomKey};
use ganglion_replication::{InProcessBus, Notifier, Positions, RecentEvents, TypingStore};
use ganglion_rpc::{
    CreateBackupVersion, DeleteBackupKeys, DeleteBackupVersion, KeyBackup, PutBackupKeys, RoomKeysUpdate,
    UpdateBackupVersion,
};
use ganglion_storage::{Db, key_backup as store};
use ganglion_types::{ErrorClass, SyncToken};

use crate::MasterService;

const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

/// A master on a fresh SQLite database in `dir`.
async fn master(dir: &tempfile::TempDir) -> (Arc<MasterService>, Db) {
    let url = format!("sqlite://{}/test.db?mode=rwc", dir.path().display());
    let db = Db::connect(&url, 4).await.unwrap();
    let positions = Arc::new(Positions::new(SyncToken::default()));
    let recent = Arc::new(RecentEvents::new(SyncToken::default()));
    let bus = Arc::new(InProcessBus::new(positions.clone(), Notifier::new(), recent));
    let service = MasterService::new(
        db.clone(),
        Arc::new(ganglion_state::Caches::new()),
        Arc::new(ganglion_events::ServerKey::ephemeral("test")),
        Arc::new(ganglion_config::Config::embedded_default()),
        bus,
        Arc::new(TypingStore::new()),
        positions,
    )
    .await
    .unwrap();
    (service, db)
}

fn alice() -> OwnedUserId {
    owned_user_id!("@alice:test")
}

async fn create(master: &MasterService) -> i64 {
    let request =
        CreateBackupVersion { user_id: alice(), algorithm: ALGORITHM.to_owned(), auth_data: "{}".to_owned() };
    master.create_backup_version(request).await.unwrap()
}

fn key(session_id: &str, is_verified: bool, first_message_index: u32, forwarded_count: u32) -> RoomKey {
    RoomKey {
        room_id: owned_room_id!("!room:test"),
        session_id: session_id.to_owned(),
        key: BackupKey {
            session: BackupSession {
                is_verified,
                first_message_index: UInt::from(first_message_index),
                forwarded_count: UInt::from(forwarded_count),
            },
            session_data: format!(r#"{{"copy":"{is_verified}/{first_message_index}/{forwarded_count}"}}"#),
        },
    }
}

async fn put(master: &MasterService, version: i64, keys: Vec<RoomKey>) -> Result<RoomKeysUpdate, ErrorClass> {
    let request = PutBackupKeys { user_id: alice(), version, keys };
    master.put_backup_keys(request).await.map_err(|error| error.class)
}

/// The stored `session_data` of a session in `version`.
async fn stored(db: &Db, version: i64, session_id: &str) -> Option<String> {
    let mut conn = db.conn().await.unwrap();
    let row = store::backup_key(&mut conn, "@alice:test", version, "!room:test", session_id).await.unwrap();
    row.map(|row| row.session_data_json)
}

#[tokio::test]
async fn only_the_current_version_takes_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (master, _db) = master(&dir).await;
    assert_eq!(put(&master, 1, vec![key("s", false, 0, 0)]).await, Err(ErrorClass::NotFound));
    assert_eq!((create(&master).await, create(&master).await), (1, 2));

    let wrong = ErrorClass::WrongRoomKeysVersion { current_version: "2".to_owned() };
    assert_eq!(put(&master, 1, vec![key("s", false, 0, 0)]).await, Err(wrong));
    assert_eq!(put(&master, 3, vec![key("s", false, 0, 0)]).await, Err(ErrorClass::NotFound));
    assert_eq!(put(&master, 2, vec![key("s", false, 0, 0)]).await, Ok(RoomKeysUpdate { etag: 1, count: 1 }));

    // Once the current version is deleted, the one before is current again.
    master.delete_backup_version(DeleteBackupVersion { user_id: alice(), version: 2 }).await.unwrap();
    assert_eq!(put(&master, 1, vec![key("s", false, 0, 0)]).await, Ok(RoomKeysUpdate { etag: 1, count: 1 }));
    assert_eq!(put(&master, 2, vec![key("s", false, 0, 0)]).await, Err(ErrorClass::NotFound));
}

#[tokio::test]
async fn a_stored_key_is_replaced_only_by_a_better_one() {
    let dir = tempfile::tempdir().unwrap();
    let (master, db) = master(&dir).await;
    let version = create(&master).await;
    let update = put(&master, version, vec![key("s", false, 5, 2), key("t", true, 0, 0)]).await.unwrap();
    assert_eq!(update, RoomKeysUpdate { etag: 1, count: 2 });

    // Worse or equal: nothing is stored and the etag stays.
    for worse in [key("s", false, 6, 0), key("s", false, 5, 3), key("s", false, 5, 2)] {
        assert_eq!(put(&master, version, vec![worse]).await.unwrap(), update);
    }
    assert_eq!(stored(&db, version, "s").await.unwrap(), r#"{"copy":"false/5/2"}"#);
    // Better by forwards, then by index, then by being verified.
    let mut etag = update.etag;
    for (better, copy) in [
        (key("s", false, 5, 1), "false/5/1"),
        (key("s", false, 4, 9), "false/4/9"),
        (key("s", true, 9, 9), "true/9/9"),
    ] {
        etag += 1;
        assert_eq!(put(&master, version, vec![better]).await.unwrap(), RoomKeysUpdate { etag, count: 2 });
        assert_eq!(stored(&db, version, "s").await.unwrap(), format!(r#"{{"copy":"{copy}"}}"#));
    }
    // A verified key is not replaced by an unverified one with a lower index.
    assert_eq!(put(&master, version, vec![key("s", false, 0, 0)]).await.unwrap().etag, etag);
}

#[tokio::test]
async fn concurrent_uploads_keep_the_best_key() {
    let dir = tempfile::tempdir().unwrap();
    let (master, db) = master(&dir).await;
    let version = create(&master).await;
    let uploads = (0..20u32).map(|index| {
        let master = master.clone();
        tokio::spawn(
            async move { put(&master, version, vec![key("s", false, 20 - index, 0)]).await.unwrap() },
        )
    });
    for upload in uploads.collect::<Vec<_>>() {
        upload.await.unwrap();
    }
    assert_eq!(stored(&db, version, "s").await.unwrap(), r#"{"copy":"false/1/0"}"#);
}

#[tokio::test]
async fn deleting_keys_moves_the_etag_only_when_something_went() {
    let dir = tempfile::tempdir().unwrap();
    let (master, db) = master(&dir).await;
    let version = create(&master).await;
    put(&master, version, vec![key("s", false, 0, 0), key("t", false, 0, 0)]).await.unwrap();
    let delete = |room: bool, session_id: Option<&str>| DeleteBackupKeys {
        user_id: alice(),
        version,
        room_id: room.then(|| owned_room_id!("!room:test")),
        session_id: session_id.map(str::to_owned),
    };
    let update = master.delete_backup_keys(delete(true, Some("s"))).await.unwrap();
    assert_eq!(update, RoomKeysUpdate { etag: 2, count: 1 });
    assert_eq!(master.delete_backup_keys(delete(true, Some("s"))).await.unwrap(), update);
    assert_eq!(stored(&db, version, "s").await, None);
    let update = master.delete_backup_keys(delete(false, None)).await.unwrap();
    assert_eq!(update, RoomKeysUpdate { etag: 3, count: 0 });

    // Any existing version's keys may be deleted, the current one or not.
    let newer = create(&master).await;
    assert_eq!(master.delete_backup_keys(delete(true, None)).await.unwrap(), update);
    let missing = DeleteBackupKeys { version: newer + 1, ..delete(false, None) };
    assert_eq!(master.delete_backup_keys(missing).await.unwrap_err().class, ErrorClass::NotFound);
}

#[tokio::test]
async fn versions_update_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (master, db) = master(&dir).await;
    let version = create(&master).await;
    put(&master, version, vec![key("s", false, 0, 0)]).await.unwrap();
    let update = |version: i64, algorithm: &str| UpdateBackupVersion {
        user_id: alice(),
        version,
        algorithm: algorithm.to_owned(),
        auth_data: r#"{"public_key":"new"}"#.to_owned(),
    };
    let error = master.update_backup_version(update(version, "m.other")).await.unwrap_err();
    assert_eq!((error.class, error.message.as_str()), (ErrorClass::InvalidParam, "Algorithm does not match"));
    let error = master.update_backup_version(update(version + 1, ALGORITHM)).await.unwrap_err();
    assert_eq!(error.class, ErrorClass::NotFound);
    master.update_backup_version(update(version, ALGORITHM)).await.unwrap();
    let mut conn = db.conn().await.unwrap();
    let row = store::backup_version(&mut conn, "@alice:test", version).await.unwrap().unwrap();
    assert_eq!(row.auth_data_json, r#"{"public_key":"new"}"#);

    let delete = |version: i64| DeleteBackupVersion { user_id: alice(), version };
    master.delete_backup_version(delete(version)).await.unwrap();
    assert_eq!(store::backup_key_count(&mut conn, "@alice:test", version).await.unwrap(), 0);
    // Deleting it again succeeds, as the spec asks; a version never made is 404.
    master.delete_backup_version(delete(version)).await.unwrap();
    assert_eq!(
        master.delete_backup_version(delete(version + 1)).await.unwrap_err().class,
        ErrorClass::NotFound
    );
    let error = master.update_backup_version(update(version, ALGORITHM)).await.unwrap_err();
    assert_eq!(error.class, ErrorClass::NotFound);
    // Numbers are never handed out twice.
    assert_eq!(create(&master).await, version + 1);
}
