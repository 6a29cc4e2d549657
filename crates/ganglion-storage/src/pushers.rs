//! The users' pushers, and how far each one's delivery has gone.

use sqlx::Row;

use crate::{Conn, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PusherRow {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The `data` object, as JSON.
    pub data: String,
    pub created_ts: i64,
    /// The events position of the last notification handed to the gateway (or given up on).
    pub last_stream_pos: i64,
}

const COLUMNS: &str = "user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, created_ts, last_stream_pos";

fn pusher(row: sqlx::any::AnyRow) -> PusherRow {
    PusherRow {
        user_id: row.get(0),
        app_id: row.get(1),
        pushkey: row.get(2),
        kind: row.get(3),
        app_display_name: row.get(4),
        device_display_name: row.get(5),
        profile_tag: row.get(6),
        lang: row.get(7),
        data: row.get(8),
        created_ts: row.get(9),
        last_stream_pos: row.get(10),
    }
}

/// Adds or updates the user's pusher for (`app_id`, `pushkey`); unless `append`, the other
/// users' pushers with the same app and key go (the device changed hands). An update keeps the
/// pusher's delivery position.
pub async fn upsert_pusher(conn: &mut Conn, row: &PusherRow, append: bool) -> Result<()> {
    if !append {
        sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3")
            .bind(&row.app_id)
            .bind(&row.pushkey)
            .bind(&row.user_id)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO pushers ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = excluded.kind,
         app_display_name = excluded.app_display_name, device_display_name = excluded.device_display_name,
         profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data"
    )))
    .bind(&row.user_id)
    .bind(&row.app_id)
    .bind(&row.pushkey)
    .bind(&row.kind)
    .bind(&row.app_display_name)
    .bind(&row.device_display_name)
    .bind(&row.profile_tag)
    .bind(&row.lang)
    .bind(&row.data)
    .bind(row.created_ts)
    .bind(row.last_stream_pos)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the user's pusher for (`app_id`, `pushkey`); whether there was one.
pub async fn delete_pusher(conn: &mut Conn, user_id: &str, app_id: &str, pushkey: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
        .bind(user_id)
        .bind(app_id)
        .bind(pushkey)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes every pusher of the user (their account is gone).
pub async fn delete_pushers_of_user(conn: &mut Conn, user_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM pushers WHERE user_id = $1").bind(user_id).execute(conn).await?;
    Ok(())
}

pub async fn pushers_of_user(conn: &mut Conn, user_id: &str) -> Result<Vec<PusherRow>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey"
    )))
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(pusher).collect())
}

/// Every pusher behind `up_to`: those with notifications possibly left to deliver.
pub async fn pushers_behind(conn: &mut Conn, up_to: i64) -> Result<Vec<PusherRow>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM pushers WHERE last_stream_pos < $1 ORDER BY user_id, app_id, pushkey"
    )))
    .bind(up_to)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(pusher).collect())
}

/// Moves the pusher's delivery position on to `position` (never back).
pub async fn advance_pusher(
    conn: &mut Conn,
    (user_id, app_id, pushkey): (&str, &str, &str),
    position: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE pushers SET last_stream_pos = $4 WHERE user_id = $1 AND app_id = $2 AND pushkey = $3 AND last_stream_pos < $4",
    )
    .bind(user_id)
    .bind(app_id)
    .bind(pushkey)
    .bind(position)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves each pusher's delivery position on (never back), in the caller's transaction: the
/// pushers' positions go in one commit, not one each.
pub async fn advance_pushers(conn: &mut Conn, advances: &[((&str, &str, &str), i64)]) -> Result<()> {
    for &(key, position) in advances {
        advance_pusher(conn, key, position).await?;
    }
    Ok(())
}
