//! Server-side key backup: versions, their etags and the keys at each level.

use ganglion_storage::key_backup::{self, BackupKeyRow};

fn session(room_id: &str, session_id: &str, first_message_index: i64) -> BackupKeyRow {
    BackupKeyRow {
        room_id: room_id.into(),
        session_id: session_id.into(),
        first_message_index,
        forwarded_count: 0,
        is_verified: false,
        session_data_json: format!("{{\"i\":{first_message_index}}}"),
    }
}

on_both_backends!(backup_versions_are_numbered_and_never_reused, |db| {
    let mut conn = db.conn().await.unwrap();
    assert_eq!(key_backup::latest_backup_version(&mut conn, "@a:x").await.unwrap(), None);
    assert_eq!(key_backup::insert_backup_version(&mut conn, "@a:x", "alg", "{\"a\":1}").await.unwrap(), 1);
    assert_eq!(key_backup::insert_backup_version(&mut conn, "@a:x", "alg", "{\"a\":2}").await.unwrap(), 2);
    // Numbers are per user.
    assert_eq!(key_backup::insert_backup_version(&mut conn, "@b:x", "alg", "{}").await.unwrap(), 1);
    let latest = key_backup::latest_backup_version(&mut conn, "@a:x").await.unwrap().unwrap();
    assert_eq!(
        (latest.version, latest.algorithm.as_str(), latest.auth_data_json.as_str(), latest.etag),
        (2, "alg", "{\"a\":2}", 0)
    );
    assert_eq!(
        key_backup::backup_version(&mut conn, "@a:x", 1).await.unwrap().unwrap().auth_data_json,
        "{\"a\":1}"
    );
    assert_eq!(key_backup::backup_version(&mut conn, "@a:x", 9).await.unwrap(), None);

    assert!(key_backup::set_backup_auth_data(&mut conn, "@a:x", 1, "{\"a\":3}").await.unwrap());
    assert!(!key_backup::set_backup_auth_data(&mut conn, "@a:x", 9, "{}").await.unwrap());
    assert_eq!(
        key_backup::backup_version(&mut conn, "@a:x", 1).await.unwrap().unwrap().auth_data_json,
        "{\"a\":3}"
    );
    assert_eq!(key_backup::bump_backup_etag(&mut conn, "@a:x", 2).await.unwrap(), Some(1));
    assert_eq!(key_backup::bump_backup_etag(&mut conn, "@a:x", 2).await.unwrap(), Some(2));
    assert_eq!(key_backup::bump_backup_etag(&mut conn, "@a:x", 9).await.unwrap(), None);
    assert_eq!(key_backup::backup_version(&mut conn, "@a:x", 2).await.unwrap().unwrap().etag, 2);

    key_backup::upsert_backup_key(&mut conn, "@a:x", 2, &session("!r:x", "s1", 0)).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    assert!(key_backup::delete_backup_version(&mut tx, "@a:x", 2).await.unwrap());
    tx.commit().await.unwrap();
    assert!(!key_backup::delete_backup_version(&mut conn, "@a:x", 2).await.unwrap());
    // Deleted versions still existed; a number never handed out did not.
    assert!(key_backup::backup_version_existed(&mut conn, "@a:x", 2).await.unwrap());
    assert!(key_backup::backup_version_existed(&mut conn, "@a:x", 1).await.unwrap());
    assert!(!key_backup::backup_version_existed(&mut conn, "@a:x", 9).await.unwrap());
    assert!(!key_backup::backup_version_existed(&mut conn, "@b:x", 2).await.unwrap());
    assert_eq!(key_backup::backup_key_count(&mut conn, "@a:x", 2).await.unwrap(), 0);
    assert_eq!(key_backup::backup_version(&mut conn, "@a:x", 2).await.unwrap(), None);
    assert!(!key_backup::set_backup_auth_data(&mut conn, "@a:x", 2, "{}").await.unwrap());
    assert_eq!(key_backup::bump_backup_etag(&mut conn, "@a:x", 2).await.unwrap(), None);
    assert_eq!(key_backup::latest_backup_version(&mut conn, "@a:x").await.unwrap().unwrap().version, 1);
    // A deleted version's number is not handed out again.
    assert_eq!(key_backup::insert_backup_version(&mut conn, "@a:x", "alg", "{}").await.unwrap(), 3);
});

on_both_backends!(backup_keys_at_each_level, |db| {
    let mut conn = db.conn().await.unwrap();
    let version = key_backup::insert_backup_version(&mut conn, "@a:x", "alg", "{}").await.unwrap();
    let other = key_backup::insert_backup_version(&mut conn, "@a:x", "alg", "{}").await.unwrap();
    key_backup::upsert_backup_key(&mut conn, "@a:x", version, &session("!r:x", "s2", 5)).await.unwrap();
    key_backup::upsert_backup_key(&mut conn, "@a:x", version, &session("!r:x", "s1", 0)).await.unwrap();
    key_backup::upsert_backup_key(&mut conn, "@a:x", version, &session("!q:x", "s1", 0)).await.unwrap();
    key_backup::upsert_backup_key(&mut conn, "@a:x", other, &session("!r:x", "s1", 0)).await.unwrap();
    let better = BackupKeyRow { forwarded_count: 2, is_verified: true, ..session("!r:x", "s2", 1) };
    key_backup::upsert_backup_key(&mut conn, "@a:x", version, &better).await.unwrap();
    assert_eq!(key_backup::backup_key_count(&mut conn, "@a:x", version).await.unwrap(), 3);
    assert_eq!(
        key_backup::backup_key(&mut conn, "@a:x", version, "!r:x", "s2").await.unwrap(),
        Some(better.clone())
    );
    assert_eq!(key_backup::backup_key(&mut conn, "@a:x", version, "!r:x", "s9").await.unwrap(), None);
    assert_eq!(
        key_backup::backup_keys_of_room(&mut conn, "@a:x", version, "!r:x").await.unwrap(),
        vec![session("!r:x", "s1", 0), better.clone()]
    );
    assert_eq!(
        key_backup::backup_keys_of_version(&mut conn, "@a:x", version).await.unwrap(),
        vec![session("!q:x", "s1", 0), session("!r:x", "s1", 0), better]
    );

    assert_eq!(key_backup::delete_backup_key(&mut conn, "@a:x", version, "!r:x", "s2").await.unwrap(), 1);
    assert_eq!(key_backup::delete_backup_key(&mut conn, "@a:x", version, "!r:x", "s2").await.unwrap(), 0);
    assert_eq!(key_backup::delete_backup_keys_of_room(&mut conn, "@a:x", version, "!r:x").await.unwrap(), 1);
    assert_eq!(
        key_backup::backup_keys_of_version(&mut conn, "@a:x", version).await.unwrap(),
        vec![session("!q:x", "s1", 0)]
    );
    assert_eq!(key_backup::delete_backup_keys_of_version(&mut conn, "@a:x", version).await.unwrap(), 1);
    assert_eq!(key_backup::backup_key_count(&mut conn, "@a:x", version).await.unwrap(), 0);
    // The other version is untouched.
    assert_eq!(key_backup::backup_key_count(&mut conn, "@a:x", other).await.unwrap(), 1);
});
