//! Server-side key backup: each user's numbered backup versions and the room keys stored in
//! them. Which of two keys for a session is better is the caller's decision; this module stores
//! what it is given.

use sqlx::Row;

use crate::{Conn, Result};

/// A backup version that was not deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupVersionRow {
    pub version: i64,
    pub algorithm: String,
    pub auth_data_json: String,
    pub etag: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupKeyRow {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub session_data_json: String,
}

const VERSION_COLUMNS: &str = "version, algorithm, auth_data_json, etag";

fn version_from_row(row: sqlx::any::AnyRow) -> BackupVersionRow {
    BackupVersionRow {
        version: row.get(0),
        algorithm: row.get(1),
        auth_data_json: row.get(2),
        etag: row.get(3),
    }
}

const KEY_COLUMNS: &str =
    "room_id, session_id, first_message_index, forwarded_count, is_verified, session_data_json";

fn key_from_row(row: sqlx::any::AnyRow) -> BackupKeyRow {
    BackupKeyRow {
        room_id: row.get(0),
        session_id: row.get(1),
        first_message_index: row.get(2),
        forwarded_count: row.get(3),
        is_verified: row.get::<i64, _>(4) != 0,
        session_data_json: row.get(5),
    }
}

/// Creates a backup version and returns its number: one more than any the user ever had,
/// deleted ones included.
pub async fn insert_backup_version(
    conn: &mut Conn,
    user_id: &str,
    algorithm: &str,
    auth_data_json: &str,
) -> Result<i64> {
    let row = sqlx::query(
        "INSERT INTO backup_versions (user_id, version, algorithm, auth_data_json)
         SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3 FROM backup_versions WHERE user_id = $1
         RETURNING version",
    )
    .bind(user_id)
    .bind(algorithm)
    .bind(auth_data_json)
    .fetch_one(conn)
    .await?;
    Ok(row.get(0))
}

/// The user's newest backup version that was not deleted.
pub async fn latest_backup_version(conn: &mut Conn, user_id: &str) -> Result<Option<BackupVersionRow>> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM backup_versions WHERE user_id = $1 AND deleted = 0 ORDER BY version DESC LIMIT 1"
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_optional(conn).await?.map(version_from_row))
}

/// A backup version by number; `None` when it never existed or was deleted.
pub async fn backup_version(
    conn: &mut Conn,
    user_id: &str,
    version: i64,
) -> Result<Option<BackupVersionRow>> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM backup_versions WHERE user_id = $1 AND version = $2 AND deleted = 0"
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(version)
        .fetch_optional(conn)
        .await?
        .map(version_from_row))
}

/// Whether the user ever had this version, deleted or not: deleting a deleted version succeeds,
/// deleting one that never existed does not.
pub async fn backup_version_existed(conn: &mut Conn, user_id: &str, version: i64) -> Result<bool> {
    let row = sqlx::query("SELECT 1 FROM backup_versions WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

/// Replaces a version's `auth_data`; returns false when there is no such (undeleted) version.
pub async fn set_backup_auth_data(
    conn: &mut Conn,
    user_id: &str,
    version: i64,
    auth_data_json: &str,
) -> Result<bool> {
    let result = sqlx::query(
        "UPDATE backup_versions SET auth_data_json = $1 WHERE user_id = $2 AND version = $3 AND deleted = 0",
    )
    .bind(auth_data_json)
    .bind(user_id)
    .bind(version)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Marks a version deleted and deletes its keys; returns false when there was no such
/// (undeleted) version. Call inside a transaction.
pub async fn delete_backup_version(conn: &mut Conn, user_id: &str, version: i64) -> Result<bool> {
    let result = sqlx::query(
        "UPDATE backup_versions SET deleted = 1 WHERE user_id = $1 AND version = $2 AND deleted = 0",
    )
    .bind(user_id)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    if result.rows_affected() == 0 {
        return Ok(false);
    }
    delete_backup_keys_of_version(conn, user_id, version).await?;
    Ok(true)
}

/// Advances a version's etag (its keys changed) and returns the new one; `None` when there is
/// no such (undeleted) version.
pub async fn bump_backup_etag(conn: &mut Conn, user_id: &str, version: i64) -> Result<Option<i64>> {
    let row = sqlx::query(
        "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2 AND deleted = 0 RETURNING etag",
    )
    .bind(user_id)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| row.get(0)))
}

/// Stores a session's key in a version, replacing any stored one.
pub async fn upsert_backup_key(
    conn: &mut Conn,
    user_id: &str,
    version: i64,
    key: &BackupKeyRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data_json)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET first_message_index = excluded.first_message_index,
             forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, session_data_json = excluded.session_data_json",
    )
    .bind(user_id)
    .bind(version)
    .bind(key.room_id.as_str())
    .bind(key.session_id.as_str())
    .bind(key.first_message_index)
    .bind(key.forwarded_count)
    .bind(key.is_verified as i64)
    .bind(key.session_data_json.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// Every key of a version, ordered by room and session.
pub async fn backup_keys_of_version(
    conn: &mut Conn,
    user_id: &str,
    version: i64,
) -> Result<Vec<BackupKeyRow>> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM backup_keys WHERE user_id = $1 AND version = $2 ORDER BY room_id, session_id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(version).fetch_all(conn).await?;
    Ok(rows.into_iter().map(key_from_row).collect())
}

/// The keys of one room in a version, ordered by session.
pub async fn backup_keys_of_room(
    conn: &mut Conn,
    user_id: &str,
    version: i64,
    room_id: &str,
) -> Result<Vec<BackupKeyRow>> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM backup_keys WHERE user_id = $1 AND version = $2 AND room_id = $3 ORDER BY session_id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(version)
        .bind(room_id)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(key_from_row).collect())
}

pub async fn backup_key(
    conn: &mut Conn,
    user_id: &str,
    version: i64,
    room_id: &str,
    session_id: &str,
) -> Result<Option<BackupKeyRow>> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM backup_keys WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(version)
        .bind(room_id)
        .bind(session_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(key_from_row))
}

/// Deletes every key of a version; how many.
pub async fn delete_backup_keys_of_version(conn: &mut Conn, user_id: &str, version: i64) -> Result<u64> {
    let result = sqlx::query("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

/// Deletes the keys of one room in a version; how many.
pub async fn delete_backup_keys_of_room(
    conn: &mut Conn,
    user_id: &str,
    version: i64,
    room_id: &str,
) -> Result<u64> {
    let result = sqlx::query("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2 AND room_id = $3")
        .bind(user_id)
        .bind(version)
        .bind(room_id)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

/// Deletes one session's key in a version; how many (0 or 1).
pub async fn delete_backup_key(
    conn: &mut Conn,
    user_id: &str,
    version: i64,
    room_id: &str,
    session_id: &str,
) -> Result<u64> {
    let result = sqlx::query(
        "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
    )
    .bind(user_id)
    .bind(version)
    .bind(room_id)
    .bind(session_id)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

pub async fn backup_key_count(conn: &mut Conn, user_id: &str, version: i64) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .fetch_one(conn)
        .await?;
    Ok(row.get(0))
}
