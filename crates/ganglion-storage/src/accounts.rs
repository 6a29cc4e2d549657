//! Users, devices, access tokens, profiles and stored sync filters.

use sqlx::Row;

use crate::{Conn, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// Inserts a user; returns false when the id is taken.
pub async fn insert_user(
    conn: &mut Conn,
    user_id: &str,
    password_hash: Option<&str>,
    now: i64,
) -> Result<bool> {
    let result = sqlx::query(
        "INSERT INTO users (user_id, password_hash, created_ts) VALUES ($1, $2, $3) ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(password_hash)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn user_exists(conn: &mut Conn, user_id: &str) -> Result<bool> {
    let row =
        sqlx::query("SELECT 1 FROM users WHERE user_id = $1").bind(user_id).fetch_optional(conn).await?;
    Ok(row.is_some())
}

/// The password hash of an active user; `None` for unknown or deactivated users.
pub async fn password_hash_of_user(conn: &mut Conn, user_id: &str) -> Result<Option<String>> {
    let row = sqlx::query("SELECT password_hash FROM users WHERE user_id = $1 AND deactivated = 0")
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.and_then(|row| row.get::<Option<String>, _>(0)))
}

pub async fn set_password_hash(conn: &mut Conn, user_id: &str, password_hash: &str) -> Result<()> {
    sqlx::query("UPDATE users SET password_hash = $1 WHERE user_id = $2")
        .bind(password_hash)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn profile_of_user(conn: &mut Conn, user_id: &str) -> Result<Option<Profile>> {
    let row = sqlx::query("SELECT displayname, avatar_url FROM users WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| Profile { displayname: row.get(0), avatar_url: row.get(1) }))
}

pub async fn set_profile(conn: &mut Conn, user_id: &str, profile: &Profile) -> Result<()> {
    sqlx::query("UPDATE users SET displayname = $1, avatar_url = $2 WHERE user_id = $3")
        .bind(profile.displayname.as_deref())
        .bind(profile.avatar_url.as_deref())
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts a device, or renames it when it exists (a login may name an existing device).
pub async fn upsert_device(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = COALESCE(excluded.display_name, devices.display_name), last_seen_ts = excluded.last_seen_ts",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(display_name)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert_access_token(conn: &mut Conn, token: &str, user_id: &str, device_id: &str) -> Result<()> {
    sqlx::query("INSERT INTO access_tokens (token, user_id, device_id) VALUES ($1, $2, $3)")
        .bind(token)
        .bind(user_id)
        .bind(device_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The `(user_id, device_id)` an access token belongs to.
pub async fn session_by_token(conn: &mut Conn, token: &str) -> Result<Option<(String, String)>> {
    let row = sqlx::query(
        "SELECT t.user_id, t.device_id FROM access_tokens t JOIN users u ON u.user_id = t.user_id
         WHERE t.token = $1 AND u.deactivated = 0",
    )
    .bind(token)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

pub async fn delete_access_token(conn: &mut Conn, token: &str) -> Result<()> {
    sqlx::query("DELETE FROM access_tokens WHERE token = $1").bind(token).execute(conn).await?;
    Ok(())
}

/// Deletes the access tokens of one device; how many there were.
pub async fn delete_access_tokens_of_device(conn: &mut Conn, user_id: &str, device_id: &str) -> Result<u64> {
    let result = sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

/// Deletes every access token of a user, except those of `keep_device`.
pub async fn delete_access_tokens_of_user(
    conn: &mut Conn,
    user_id: &str,
    keep_device: Option<&str>,
) -> Result<()> {
    sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id <> $2")
        .bind(user_id)
        .bind(keep_device.unwrap_or(""))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn devices_of_user(conn: &mut Conn, user_id: &str) -> Result<Vec<Device>> {
    let rows = sqlx::query(
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 ORDER BY device_id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(device_from_row).collect())
}

/// `(user_id, device_id, display_name)` of every device of `users`, as `/keys/query` shows them.
pub async fn device_names_of_users(
    conn: &mut Conn,
    users: &[String],
) -> Result<Vec<(String, String, Option<String>)>> {
    let mut names = Vec::new();
    for chunk in users.chunks(500) {
        let sql = format!(
            "SELECT user_id, device_id, display_name FROM devices WHERE user_id IN ({})",
            crate::state::placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for user in chunk {
            query = query.bind(user.as_str());
        }
        names.extend(
            query.fetch_all(&mut *conn).await?.into_iter().map(|row| (row.get(0), row.get(1), row.get(2))),
        );
    }
    Ok(names)
}

pub async fn device(conn: &mut Conn, user_id: &str, device_id: &str) -> Result<Option<Device>> {
    let row = sqlx::query(
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 AND device_id = $2",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(device_from_row))
}

fn device_from_row(row: sqlx::any::AnyRow) -> Device {
    Device {
        device_id: row.get(0),
        display_name: row.get(1),
        last_seen_ts: row.get(2),
        last_seen_ip: row.get(3),
    }
}

/// Renames a device; returns false when it does not exist.
pub async fn set_device_display_name(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
    name: &str,
) -> Result<bool> {
    let result = sqlx::query("UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3")
        .bind(name)
        .bind(user_id)
        .bind(device_id)
        .execute(conn)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Deletes a device and its access tokens. Call inside a transaction.
pub async fn delete_device(conn: &mut Conn, user_id: &str, device_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Stores a filter and returns its id (per user, counting from 0).
pub async fn insert_filter(conn: &mut Conn, user_id: &str, filter_json: &str) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(filter_id), -1) + 1 FROM filters WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
    let filter_id: i64 = row.get(0);
    sqlx::query("INSERT INTO filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3)")
        .bind(user_id)
        .bind(filter_id)
        .bind(filter_json)
        .execute(conn)
        .await?;
    Ok(filter_id)
}

pub async fn filter_by_id(conn: &mut Conn, user_id: &str, filter_id: i64) -> Result<Option<String>> {
    let row = sqlx::query("SELECT filter_json FROM filters WHERE user_id = $1 AND filter_id = $2")
        .bind(user_id)
        .bind(filter_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// Locks a user's account: no password, so no login; with `erase`, no profile either.
pub async fn deactivate_user(conn: &mut Conn, user_id: &str, erase: bool) -> Result<()> {
    let sql = match erase {
        true => {
            "UPDATE users SET deactivated = 1, password_hash = NULL, displayname = NULL, avatar_url = NULL WHERE user_id = $1"
        }
        false => "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1",
    };
    sqlx::query(sql).bind(user_id).execute(conn).await?;
    Ok(())
}
