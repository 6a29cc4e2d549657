//! Server-side key backup: each user's backup versions and the room keys stored in them.
//!
//! Not a stream: each write commits in one transaction before the master answers, and workers
//! read backups from the database. Keys are written only into the user's current (newest)
//! version, and a stored session key is replaced only by a better one (`better_session`).

use std::hash::{DefaultHasher, Hash, Hasher};

use ganglion_events::ruma::UInt;
use ganglion_keys::{BackupSession, better_session};
use ganglion_rpc::{
    CreateBackupVersion, DeleteBackupKeys, DeleteBackupVersion, MasterError, MasterResult, PutBackupKeys,
    RoomKeysUpdate, UpdateBackupVersion,
};
use ganglion_storage::{
    StorageError,
    key_backup::{self as store, BackupKeyRow, BackupVersionRow},
};
use ganglion_types::ErrorClass;
use tokio::sync::{Mutex, MutexGuard};

use crate::{MasterService, internal};

const STRIPES: usize = 64;

/// One user's backup writes at a time: two devices upload the keys of a new session at about the
/// same moment, and each upload reads the stored key before deciding to replace it.
///
/// Invariant: every backup write holds its user's stripe from its first read to its commit, so
/// the compare-and-replace of a session key and the numbering of a new version never interleave
/// (PostgreSQL's default isolation would let them). Users share stripes; that only serialises
/// a few unrelated writes.
pub(crate) struct BackupLocks {
    stripes: Vec<Mutex<()>>,
}

impl BackupLocks {
    pub(crate) fn new() -> BackupLocks {
        BackupLocks { stripes: (0..STRIPES).map(|_| Mutex::new(())).collect() }
    }

    async fn lock(&self, user_id: &str) -> MutexGuard<'_, ()> {
        let mut hasher = DefaultHasher::new();
        user_id.hash(&mut hasher);
        self.stripes[(hasher.finish() % STRIPES as u64) as usize].lock().await
    }
}

fn unknown_version() -> MasterError {
    MasterError::not_found("Unknown backup version")
}

async fn commit(tx: ganglion_storage::Tx) -> MasterResult<()> {
    tx.commit().await.map_err(|e| internal(StorageError::from(e)))
}

pub(crate) async fn create_version(svc: &MasterService, r: CreateBackupVersion) -> MasterResult<i64> {
    let user_id = r.user_id.as_str();
    let _turn = svc.backups.lock(user_id).await;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    let version =
        store::insert_backup_version(&mut tx, user_id, &r.algorithm, &r.auth_data).await.map_err(internal)?;
    commit(tx).await?;
    tracing::info!(user_id, version, "created a key backup version");
    Ok(version)
}

pub(crate) async fn update_version(svc: &MasterService, r: UpdateBackupVersion) -> MasterResult<()> {
    let user_id = r.user_id.as_str();
    let _turn = svc.backups.lock(user_id).await;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    let stored = store::backup_version(&mut tx, user_id, r.version).await.map_err(internal)?;
    let stored = stored.ok_or_else(unknown_version)?;
    if stored.algorithm != r.algorithm {
        return Err(MasterError::invalid_param("Algorithm does not match"));
    }
    store::set_backup_auth_data(&mut tx, user_id, r.version, &r.auth_data).await.map_err(internal)?;
    commit(tx).await
}

/// Deletes the version and its keys. A version deleted before is deleted already, which the spec
/// counts as success; only a version that never existed is 404.
pub(crate) async fn delete_version(svc: &MasterService, r: DeleteBackupVersion) -> MasterResult<()> {
    let user_id = r.user_id.as_str();
    let _turn = svc.backups.lock(user_id).await;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    if !store::delete_backup_version(&mut tx, user_id, r.version).await.map_err(internal)?
        && !store::backup_version_existed(&mut tx, user_id, r.version).await.map_err(internal)?
    {
        return Err(unknown_version());
    }
    commit(tx).await?;
    tracing::info!(user_id, version = r.version, "deleted a key backup version");
    Ok(())
}

/// Stores each key unless the stored one for its session is at least as good; the etag advances
/// when anything was stored. Only the current version takes keys: an older one that still exists
/// is 403 `M_WRONG_ROOM_KEYS_VERSION` naming the current one, a missing one 404 (as Synapse).
pub(crate) async fn put_keys(svc: &MasterService, r: PutBackupKeys) -> MasterResult<RoomKeysUpdate> {
    let user_id = r.user_id.as_str();
    let _turn = svc.backups.lock(user_id).await;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    let current = store::latest_backup_version(&mut tx, user_id).await.map_err(internal)?;
    let current = match current {
        Some(current) if current.version == r.version => current,
        Some(current)
            if store::backup_version(&mut tx, user_id, r.version).await.map_err(internal)?.is_some() =>
        {
            let current_version = current.version.to_string();
            let class = ErrorClass::WrongRoomKeysVersion { current_version };
            return Err(MasterError::new(class, "Wrong backup version."));
        }
        _ => return Err(unknown_version()),
    };
    let mut changed = false;
    for key in r.keys {
        let room_id = key.room_id.as_str();
        let stored = store::backup_key(&mut tx, user_id, r.version, room_id, &key.session_id)
            .await
            .map_err(internal)?;
        let replaces = match stored {
            Some(stored) => better_session(&session_of(&stored)?, &key.key.session),
            None => true,
        };
        if replaces {
            let session = key.key.session;
            let row = BackupKeyRow {
                room_id: room_id.to_owned(),
                session_id: key.session_id,
                first_message_index: stored_count(session.first_message_index),
                forwarded_count: stored_count(session.forwarded_count),
                is_verified: session.is_verified,
                session_data_json: key.key.session_data,
            };
            store::upsert_backup_key(&mut tx, user_id, r.version, &row).await.map_err(internal)?;
            changed = true;
        }
    }
    let update = room_keys_update(&mut tx, user_id, &current, changed).await?;
    commit(tx).await?;
    Ok(update)
}

/// Deletes every key of the version, of one room, or one session's key. Any existing version
/// will do, the current one or not: clearing out an old backup is no mistake (as Synapse; the
/// spec names no 403 here).
pub(crate) async fn delete_keys(svc: &MasterService, r: DeleteBackupKeys) -> MasterResult<RoomKeysUpdate> {
    let user_id = r.user_id.as_str();
    let _turn = svc.backups.lock(user_id).await;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    let version = store::backup_version(&mut tx, user_id, r.version).await.map_err(internal)?;
    let version = version.ok_or_else(unknown_version)?;
    let deleted = match (&r.room_id, &r.session_id) {
        (None, _) => store::delete_backup_keys_of_version(&mut tx, user_id, r.version).await,
        (Some(room_id), None) => {
            store::delete_backup_keys_of_room(&mut tx, user_id, r.version, room_id.as_str()).await
        }
        (Some(room_id), Some(session_id)) => {
            store::delete_backup_key(&mut tx, user_id, r.version, room_id.as_str(), session_id).await
        }
    }
    .map_err(internal)?;
    let update = room_keys_update(&mut tx, user_id, &version, deleted > 0).await?;
    commit(tx).await?;
    Ok(update)
}

/// The version's etag and count after a write; the etag advances only when the keys `changed`.
async fn room_keys_update(
    tx: &mut sqlx::AnyConnection,
    user_id: &str,
    version: &BackupVersionRow,
    changed: bool,
) -> MasterResult<RoomKeysUpdate> {
    let etag = if changed {
        let etag = store::bump_backup_etag(tx, user_id, version.version).await.map_err(internal)?;
        etag.ok_or_else(unknown_version)?
    } else {
        version.etag
    };
    let count = store::backup_key_count(tx, user_id, version.version).await.map_err(internal)?;
    Ok(RoomKeysUpdate { etag, count: u64::try_from(count).unwrap_or_default() })
}

/// The metadata of a stored key, which came from a checked `UInt` and so converts back.
fn session_of(stored: &BackupKeyRow) -> MasterResult<BackupSession> {
    let count = |value: i64| {
        UInt::try_from(value)
            .map_err(|_| MasterError::internal(format!("stored backup key count {value} is invalid")))
    };
    Ok(BackupSession {
        is_verified: stored.is_verified,
        first_message_index: count(stored.first_message_index)?,
        forwarded_count: count(stored.forwarded_count)?,
    })
}

/// A `UInt` is at most 2^53 - 1, so it always fits a `BIGINT`.
fn stored_count(value: UInt) -> i64 {
    i64::try_from(u64::from(value)).unwrap_or(i64::MAX)
}
