//! What the push rules decided for each user an event notifies, and the counts and lists read
//! from that: unread counts for `/sync`, `/notifications`, and (by position) the pushers.
//!
//! A row is unread while its position is after the user's newest read receipt (`m.read` or
//! `m.read.private`) that is unthreaded or of the row's own thread.

use ganglion_types::{EventNid, RoomNid};
use sqlx::Row;

use crate::{Conn, Result, state::placeholders};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushActionRow {
    pub user_id: String,
    pub stream_pos: i64,
    pub room_nid: RoomNid,
    pub event_nid: EventNid,
    /// The thread root's event id, or `main`.
    pub thread_id: String,
    pub highlight: bool,
    /// The actions of the rule that matched, as JSON.
    pub actions: String,
    pub ts: i64,
}

/// The thread id of events outside any thread, as threaded receipts name it.
pub const MAIN_THREAD: &str = "main";

/// Writes the rows in one statement whatever their number, as one JSON parameter: a batch of
/// sends in a 50-member room makes hundreds, and a round trip or a bound parameter each (SQLite
/// looks a `$N` up by a linear scan) cost more than the rows.
pub async fn insert_push_actions(conn: &mut Conn, rows: &[PushActionRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let values: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!([
                row.user_id,
                row.stream_pos,
                row.room_nid.0,
                row.event_nid.0,
                row.thread_id,
                i64::from(row.highlight),
                row.actions,
                row.ts
            ])
        })
        .collect();
    let sql = if conn.backend_name() == "PostgreSQL" {
        "INSERT INTO push_actions (user_id, stream_pos, room_nid, event_nid, thread_id, highlight, actions, ts)
         SELECT e->>0, (e->>1)::BIGINT, (e->>2)::BIGINT, (e->>3)::BIGINT, e->>4, (e->>5)::BIGINT, e->>6, (e->>7)::BIGINT
         FROM jsonb_array_elements(CAST($1 AS JSONB)) AS e"
    } else {
        "INSERT INTO push_actions (user_id, stream_pos, room_nid, event_nid, thread_id, highlight, actions, ts)
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7
         FROM json_each($1)"
    };
    sqlx::query(sql).bind(serde_json::Value::Array(values).to_string()).execute(conn).await?;
    Ok(())
}

/// The position of the user's newest read receipt covering a row of `a` (the alias of
/// `push_actions`, joined with `rooms` as `ro`), or 0.
const READ_UP_TO: &str =
    "COALESCE((SELECT MAX(e.stream_pos) FROM receipts r JOIN events e ON e.event_id = r.event_id
    WHERE r.room_id = ro.room_id AND r.user_id = a.user_id AND r.receipt_type IN ('m.read', 'm.read.private')
    AND (r.thread_id = '' OR r.thread_id = a.thread_id)), 0)";

/// Unread notifications and highlights of one thread of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadCount {
    pub room_nid: RoomNid,
    pub thread_id: String,
    pub notifications: i64,
    pub highlights: i64,
}

/// The user's unread counts in `rooms` as of events position `up_to`, per room and thread;
/// threads with none are left out.
pub async fn unread_counts(
    conn: &mut Conn,
    user_id: &str,
    rooms: &[RoomNid],
    up_to: i64,
) -> Result<Vec<UnreadCount>> {
    let mut counts = Vec::new();
    for chunk in rooms.chunks(500) {
        let sql = format!(
            "SELECT a.room_nid, a.thread_id, COUNT(*), COUNT(CASE WHEN a.highlight = 1 THEN 1 END) FROM push_actions a
             JOIN rooms ro ON ro.room_nid = a.room_nid
             WHERE a.user_id = $1 AND a.stream_pos <= $2 AND a.room_nid IN ({}) AND a.stream_pos > {READ_UP_TO}
             GROUP BY a.room_nid, a.thread_id",
            placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(up_to);
        for room in chunk {
            query = query.bind(room.0);
        }
        counts.extend(query.fetch_all(&mut *conn).await?.into_iter().map(|row| UnreadCount {
            room_nid: RoomNid(row.get(0)),
            thread_id: row.get(1),
            notifications: row.get(2),
            highlights: row.get(3),
        }));
    }
    Ok(counts)
}

/// One of the user's notifications, with whether a receipt has read it since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    pub stream_pos: i64,
    pub room_id: String,
    pub event_nid: EventNid,
    pub actions: String,
    pub ts: i64,
    pub read: bool,
}

/// The user's notifications before position `before` (all with `None`), newest first, at most
/// `limit`; only highlights with `only_highlight`.
pub async fn notifications_of_user(
    conn: &mut Conn,
    user_id: &str,
    before: Option<i64>,
    limit: i64,
    only_highlight: bool,
) -> Result<Vec<NotificationRow>> {
    let highlight = if only_highlight { "AND a.highlight = 1" } else { "" };
    let sql = format!(
        "SELECT a.stream_pos, ro.room_id, a.event_nid, a.actions, a.ts, CASE WHEN a.stream_pos <= {READ_UP_TO} THEN 1 ELSE 0 END FROM push_actions a
         JOIN rooms ro ON ro.room_nid = a.room_nid
         WHERE a.user_id = $1 AND a.stream_pos < $2 {highlight}
         ORDER BY a.stream_pos DESC LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| NotificationRow {
            stream_pos: row.get(0),
            room_id: row.get(1),
            event_nid: EventNid(row.get(2)),
            actions: row.get(3),
            ts: row.get(4),
            read: row.get::<i64, _>(5) == 1,
        })
        .collect())
}

/// The user's push actions with `after < position <= up_to`, oldest first, at most `limit`.
pub async fn push_actions_between(
    conn: &mut Conn,
    user_id: &str,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<PushActionRow>> {
    let rows = sqlx::query(
        "SELECT user_id, stream_pos, room_nid, event_nid, thread_id, highlight, actions, ts FROM push_actions
         WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos LIMIT $4",
    )
    .bind(user_id)
    .bind(after)
    .bind(up_to)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| PushActionRow {
            user_id: row.get(0),
            stream_pos: row.get(1),
            room_nid: RoomNid(row.get(2)),
            event_nid: EventNid(row.get(3)),
            thread_id: row.get(4),
            highlight: row.get::<i64, _>(5) == 1,
            actions: row.get(6),
            ts: row.get(7),
        })
        .collect())
}

/// How many of the rooms the user is joined to have an unread notification: the badge a push
/// gateway shows.
pub async fn unread_rooms_of_user(conn: &mut Conn, user_id: &str) -> Result<i64> {
    let sql = format!(
        "SELECT COUNT(*) FROM memberships m JOIN rooms ro ON ro.room_nid = m.room_nid
         WHERE m.user_id = $1 AND m.membership = 'join' AND EXISTS (
             SELECT 1 FROM push_actions a WHERE a.user_id = m.user_id AND a.room_nid = m.room_nid
             AND a.stream_pos > {READ_UP_TO})"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_one(conn).await?;
    Ok(row.get(0))
}
