//! What the push rules decided for each new event (`push_notices`: one row per event naming
//! the users it notified), and what is read from it: unread counts for `/sync`,
//! `/notifications`, and (by position) what the pushers deliver.
//!
//! A notification is unread while its position is after the user's newest read receipt
//! (`m.read` or `m.read.private`) that is unthreaded or of the notification's own thread.

use std::collections::HashMap;

use ganglion_types::{EventNid, RoomNid};
use serde_json::Value;
use sqlx::Row;

use crate::{Conn, Result, state::placeholders, state::row_placeholders};

/// The thread id of events outside any thread, as threaded receipts name it.
pub const MAIN_THREAD: &str = "main";

/// One event's notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushNoticeRow {
    pub stream_pos: i64,
    pub room_nid: RoomNid,
    pub event_nid: EventNid,
    /// The thread root's event id, or `main`.
    pub thread_id: String,
    /// JSON: `{user id: [highlight (0 or 1), index into actions]}`.
    pub users: String,
    /// JSON: the distinct action lists.
    pub actions: String,
    pub ts: i64,
}

impl PushNoticeRow {
    /// Whether the event notified `user_id`: `(highlight, the matched rule's actions)`.
    pub fn for_user(&self, user_id: &str) -> Option<(bool, Value)> {
        // Most rows name other users: a substring test spares parsing them.
        if !self.users.contains(user_id) {
            return None;
        }
        let users: HashMap<String, (u8, usize)> = serde_json::from_str(&self.users).ok()?;
        let (highlight, index) = users.get(user_id)?;
        let actions: Vec<Value> = serde_json::from_str(&self.actions).ok()?;
        Some((*highlight == 1, actions.get(*index).cloned().unwrap_or(Value::Array(Vec::new()))))
    }
}

/// Rows per statement: SQLite looks a `$N` parameter up by a linear scan, so a statement's
/// binding costs the square of its parameters.
const ROWS_PER_INSERT: usize = 32;

pub async fn insert_push_notices(conn: &mut Conn, rows: &[PushNoticeRow]) -> Result<()> {
    const COLUMNS: usize = 7;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO push_notices (stream_pos, room_nid, event_nid, thread_id, users, actions, ts) VALUES {}",
            row_placeholders(chunk.len(), COLUMNS)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            query = query
                .bind(row.stream_pos)
                .bind(row.room_nid.0)
                .bind(row.event_nid.0)
                .bind(row.thread_id.as_str())
                .bind(row.users.as_str())
                .bind(row.actions.as_str())
                .bind(row.ts);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

fn notice(row: sqlx::any::AnyRow) -> PushNoticeRow {
    PushNoticeRow {
        stream_pos: row.get(0),
        room_nid: RoomNid(row.get(1)),
        event_nid: EventNid(row.get(2)),
        thread_id: row.get(3),
        users: row.get(4),
        actions: row.get(5),
        ts: row.get(6),
    }
}

const NOTICE_COLUMNS: &str = "stream_pos, room_nid, event_nid, thread_id, users, actions, ts";

/// How far the user has read in each of `rooms`: `(room, thread) -> position` of the newest
/// read receipt's event, the unthreaded receipt under thread `""`.
pub async fn read_positions(
    conn: &mut Conn,
    user_id: &str,
    rooms: &[RoomNid],
) -> Result<HashMap<(RoomNid, String), i64>> {
    let mut read = HashMap::new();
    for chunk in rooms.chunks(500) {
        let sql = format!(
            "SELECT ro.room_nid, r.thread_id, MAX(e.stream_pos) FROM rooms ro
             JOIN receipts r ON r.room_id = ro.room_id JOIN events e ON e.event_id = r.event_id
             WHERE r.user_id = $1 AND r.receipt_type IN ('m.read', 'm.read.private') AND ro.room_nid IN ({})
             GROUP BY ro.room_nid, r.thread_id",
            placeholders(chunk.len(), 2)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id);
        for room in chunk {
            query = query.bind(room.0);
        }
        for row in query.fetch_all(&mut *conn).await? {
            read.insert((RoomNid(row.get(0)), row.get::<String, _>(1)), row.get::<i64, _>(2));
        }
    }
    Ok(read)
}

/// Whether the notification at `position` of `thread` in `room` is read.
fn is_read(read: &HashMap<(RoomNid, String), i64>, room: RoomNid, thread: &str, position: i64) -> bool {
    let unthreaded = read.get(&(room, String::new())).copied().unwrap_or(0);
    let threaded = read.get(&(room, thread.to_owned())).copied().unwrap_or(0);
    position <= unthreaded.max(threaded)
}

/// Unread notifications and highlights of one thread of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadCount {
    pub room_nid: RoomNid,
    pub thread_id: String,
    pub notifications: i64,
    pub highlights: i64,
}

/// The user's unread counts in `rooms` as of events position `up_to`, per room and thread;
/// threads with none are left out. Reads each room's notices after the user's unthreaded
/// receipt only.
pub async fn unread_counts(
    conn: &mut Conn,
    user_id: &str,
    rooms: &[RoomNid],
    up_to: i64,
) -> Result<Vec<UnreadCount>> {
    let read = read_positions(conn, user_id, rooms).await?;
    let mut counts: HashMap<(RoomNid, String), (i64, i64)> = HashMap::new();
    for chunk in rooms.chunks(100) {
        let ranges: Vec<String> = (0..chunk.len())
            .map(|index| format!("(room_nid = ${} AND stream_pos > ${})", 2 * index + 2, 2 * index + 3))
            .collect();
        let sql = format!(
            "SELECT {NOTICE_COLUMNS} FROM push_notices WHERE stream_pos <= $1 AND ({})",
            ranges.join(" OR ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(up_to);
        for room in chunk {
            let unthreaded = read.get(&(*room, String::new())).copied().unwrap_or(0);
            query = query.bind(room.0).bind(unthreaded);
        }
        for row in query.fetch_all(&mut *conn).await?.into_iter().map(notice) {
            if is_read(&read, row.room_nid, &row.thread_id, row.stream_pos) {
                continue;
            }
            if let Some((highlight, _)) = row.for_user(user_id) {
                let count = counts.entry((row.room_nid, row.thread_id)).or_default();
                count.0 += 1;
                count.1 += i64::from(highlight);
            }
        }
    }
    Ok(counts
        .into_iter()
        .map(|((room_nid, thread_id), (notifications, highlights))| UnreadCount {
            room_nid,
            thread_id,
            notifications,
            highlights,
        })
        .collect())
}

/// The rooms the user is joined to.
async fn joined_rooms(conn: &mut Conn, user_id: &str) -> Result<Vec<RoomNid>> {
    let rows = sqlx::query("SELECT room_nid FROM memberships WHERE user_id = $1 AND membership = 'join'")
        .bind(user_id)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|row| RoomNid(row.get(0))).collect())
}

/// The rooms the user is joined to that have an unread notification as of `up_to`: the badge
/// a push gateway shows counts them. Each room is looked at from its newest notice naming the
/// user down, so a room is settled by its first unread one and a long unread backlog costs
/// nothing.
pub async fn unread_rooms_of_user(conn: &mut Conn, user_id: &str, up_to: i64) -> Result<Vec<RoomNid>> {
    const PAGE: i64 = 16;
    let rooms = joined_rooms(conn, user_id).await?;
    let read = read_positions(conn, user_id, &rooms).await?;
    // The user's key in `users`, as a LIKE pattern (`!` escapes): a superset test, checked by
    // `for_user`, that keeps rows naming only others in the database.
    let key = serde_json::to_string(user_id).unwrap_or_default();
    let escaped = key.replace('!', "!!").replace('%', "!%").replace('_', "!_");
    let pattern = format!("%{escaped}:%");
    let mut unread = Vec::new();
    for room in rooms {
        let unthreaded = read.get(&(room, String::new())).copied().unwrap_or(0);
        let mut below = up_to + 1;
        'pages: loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {NOTICE_COLUMNS} FROM push_notices WHERE room_nid = $1 AND stream_pos > $2
                 AND stream_pos < $3 AND users LIKE $4 ESCAPE '!' ORDER BY stream_pos DESC LIMIT {PAGE}"
            )))
            .bind(room.0)
            .bind(unthreaded)
            .bind(below)
            .bind(pattern.as_str())
            .fetch_all(&mut *conn)
            .await?;
            let full = rows.len() as i64 == PAGE;
            for row in rows.into_iter().map(notice) {
                below = row.stream_pos;
                if !is_read(&read, row.room_nid, &row.thread_id, row.stream_pos)
                    && row.for_user(user_id).is_some()
                {
                    unread.push(room);
                    break 'pages;
                }
            }
            if !full {
                break;
            }
        }
    }
    Ok(unread)
}

/// One of the user's notifications, with whether a receipt has read it since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    pub stream_pos: i64,
    pub room_id: String,
    pub event_nid: EventNid,
    /// The matched rule's actions.
    pub actions: Value,
    pub ts: i64,
    pub read: bool,
}

/// Rows of the user's rooms one `/notifications` page looks through at most: a page of a
/// user whom few events notify ends early, with a token to go on from.
const MAX_SCANNED: usize = 5_000;

/// The user's notifications in the rooms they are joined to, before position `before` (all
/// with `None`), newest first, at most `limit`; only highlights with `only_highlight`. Also the
/// position to go on from when there may be more.
pub async fn notifications_of_user(
    conn: &mut Conn,
    user_id: &str,
    before: Option<i64>,
    limit: usize,
    only_highlight: bool,
) -> Result<(Vec<NotificationRow>, Option<i64>)> {
    let rooms = joined_rooms(conn, user_id).await?;
    if rooms.is_empty() {
        return Ok((Vec::new(), None));
    }
    let read = read_positions(conn, user_id, &rooms).await?;
    let mut room_ids: HashMap<RoomNid, String> = HashMap::new();
    let mut found = Vec::new();
    let mut cursor = before.unwrap_or(i64::MAX);
    let mut scanned = 0;
    const PAGE: i64 = 200;
    loop {
        let sql = format!(
            "SELECT n.stream_pos, n.room_nid, n.event_nid, n.thread_id, n.users, n.actions, n.ts, ro.room_id
             FROM push_notices n JOIN rooms ro ON ro.room_nid = n.room_nid
             WHERE n.stream_pos < $1 AND n.room_nid IN ({}) ORDER BY n.stream_pos DESC LIMIT {PAGE}",
            placeholders(rooms.len(), 2)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(cursor);
        for room in &rooms {
            query = query.bind(room.0);
        }
        let rows = query.fetch_all(&mut *conn).await?;
        let page_len = rows.len();
        for row in rows {
            room_ids.entry(RoomNid(row.get(1))).or_insert_with(|| row.get(7));
            let row = notice(row);
            cursor = row.stream_pos;
            scanned += 1;
            let Some((highlight, actions)) = row.for_user(user_id) else { continue };
            if only_highlight && !highlight {
                continue;
            }
            found.push(NotificationRow {
                stream_pos: row.stream_pos,
                room_id: room_ids.get(&row.room_nid).cloned().unwrap_or_default(),
                event_nid: row.event_nid,
                actions,
                ts: row.ts,
                read: is_read(&read, row.room_nid, &row.thread_id, row.stream_pos),
            });
            if found.len() == limit {
                return Ok((found, Some(cursor)));
            }
        }
        if (page_len as i64) < PAGE {
            return Ok((found, None));
        }
        if scanned >= MAX_SCANNED {
            return Ok((found, Some(cursor)));
        }
    }
}

/// The notices with `after < position <= up_to`, oldest first, at most `limit`.
pub async fn notices_between(
    conn: &mut Conn,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<PushNoticeRow>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {NOTICE_COLUMNS} FROM push_notices WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos LIMIT $3"
    )))
    .bind(after)
    .bind(up_to)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(notice).collect())
}

/// Users whose read receipts moved after receipts position `after`, and the newest position
/// seen (`after` when none moved).
pub async fn users_with_receipts_after(conn: &mut Conn, after: i64) -> Result<(Vec<String>, i64)> {
    let rows = sqlx::query(
        "SELECT user_id, stream_pos FROM receipts WHERE stream_pos > $1 AND receipt_type IN ('m.read', 'm.read.private')",
    )
    .bind(after)
    .fetch_all(conn)
    .await?;
    let newest = rows.iter().map(|row| row.get::<i64, _>(1)).max().unwrap_or(after);
    Ok((rows.into_iter().map(|row| row.get(0)).collect(), newest))
}

/// Users whose membership of a room changed in events positions `(after, up_to]`.
pub async fn users_with_membership_changes(conn: &mut Conn, after: i64, up_to: i64) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT user_id FROM memberships WHERE stream_pos > $1 AND stream_pos <= $2")
        .bind(after)
        .bind(up_to)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}
