//! The presence stream: the latest presence of each user. An update moves the user's row to a
//! new position from the stream's single writer, as receipts do.

use sqlx::Row;

use crate::{Conn, Result, state::placeholders};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRow {
    pub user_id: String,
    /// `online`, `unavailable` or `offline`.
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub currently_active: bool,
    pub stream_pos: i64,
}

const PRESENCE_COLUMNS: &str = "user_id, state, status_msg, last_active_ts, currently_active, stream_pos";

fn presence_from_row(row: sqlx::any::AnyRow) -> PresenceRow {
    PresenceRow {
        user_id: row.get(0),
        state: row.get(1),
        status_msg: row.get(2),
        last_active_ts: row.get(3),
        currently_active: row.get::<i64, _>(4) != 0,
        stream_pos: row.get(5),
    }
}

pub async fn upsert_presence(conn: &mut Conn, presence: &PresenceRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active, stream_pos) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
             last_active_ts = excluded.last_active_ts, currently_active = excluded.currently_active, stream_pos = excluded.stream_pos",
    )
    .bind(presence.user_id.as_str())
    .bind(presence.state.as_str())
    .bind(presence.status_msg.as_deref())
    .bind(presence.last_active_ts)
    .bind(presence.currently_active as i64)
    .bind(presence.stream_pos)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn presence_of_user(conn: &mut Conn, user_id: &str) -> Result<Option<PresenceRow>> {
    let sql = format!("SELECT {PRESENCE_COLUMNS} FROM presence WHERE user_id = $1");
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_optional(conn).await?.map(presence_from_row))
}

/// The presence of those of `users` whose row is in `after < stream_pos <= up_to`, by position.
pub async fn presence_between(
    conn: &mut Conn,
    users: &[String],
    after: i64,
    up_to: i64,
) -> Result<Vec<PresenceRow>> {
    let mut presence = Vec::new();
    for chunk in users.chunks(500) {
        let sql = format!(
            "SELECT {PRESENCE_COLUMNS} FROM presence WHERE stream_pos > $1 AND stream_pos <= $2 AND user_id IN ({})
             ORDER BY stream_pos",
            placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(up_to);
        for user in chunk {
            query = query.bind(user.as_str());
        }
        presence.extend(query.fetch_all(&mut *conn).await?.into_iter().map(presence_from_row));
    }
    presence.sort_unstable_by_key(|row| row.stream_pos);
    Ok(presence)
}

/// The presence rows in `after < stream_pos <= up_to` of `user_id` and of every user who shares
/// a joined room with them, by position: what a `/sync` of `user_id` shows, in one query.
pub async fn presence_of_room_mates_between(
    conn: &mut Conn,
    user_id: &str,
    after: i64,
    up_to: i64,
) -> Result<Vec<PresenceRow>> {
    let sql = format!(
        "SELECT {PRESENCE_COLUMNS} FROM presence WHERE stream_pos > $1 AND stream_pos <= $2 AND (user_id = $3 OR user_id IN (
             SELECT other.user_id FROM memberships mine JOIN memberships other ON other.room_nid = mine.room_nid
             WHERE mine.user_id = $3 AND mine.membership = 'join' AND other.membership = 'join'
         ))
         ORDER BY stream_pos"
    );
    let rows =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(up_to).bind(user_id).fetch_all(conn).await?;
    Ok(rows.into_iter().map(presence_from_row).collect())
}

/// Every user whose stored presence is not `offline`: the master's timeouts start from them.
pub async fn presence_not_offline(conn: &mut Conn) -> Result<Vec<PresenceRow>> {
    let sql = format!("SELECT {PRESENCE_COLUMNS} FROM presence WHERE state <> 'offline'");
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(presence_from_row)
        .collect())
}

pub async fn max_presence_stream_pos(conn: &mut Conn) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(stream_pos), 0) FROM presence").fetch_one(conn).await?;
    Ok(row.get(0))
}
