//! Rooms, their heads (latest event, current state snapshot), aliases and memberships.

use ganglion_types::{EventNid, RoomNid, SnapshotNid};
use sqlx::Row;

use crate::{
    Conn, Result,
    state::{placeholders, row_placeholders},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    pub room_nid: RoomNid,
    pub room_id: String,
    pub room_version: String,
    pub is_public: bool,
    pub latest_event_nid: Option<EventNid>,
    pub current_snapshot_nid: Option<SnapshotNid>,
    pub max_depth: i64,
    /// Stream position of the room's newest event that bumps it up a room list.
    pub bump_stream_pos: i64,
    /// The room's forward extremities as a JSON array of event ids; `None` means the latest
    /// event alone.
    pub forward_extremities: Option<String>,
}

const ROOM_COLUMNS: &str = "room_nid, room_id, room_version, is_public, latest_event_nid, current_snapshot_nid, max_depth, bump_stream_pos, forward_extremities";

fn room_from_row(row: sqlx::any::AnyRow) -> RoomRow {
    RoomRow {
        room_nid: RoomNid(row.get(0)),
        room_id: row.get(1),
        room_version: row.get(2),
        is_public: row.get::<i64, _>(3) != 0,
        latest_event_nid: row.get::<Option<i64>, _>(4).map(EventNid),
        current_snapshot_nid: row.get::<Option<i64>, _>(5).map(SnapshotNid),
        max_depth: row.get(6),
        bump_stream_pos: row.get(7),
        forward_extremities: row.get(8),
    }
}

pub async fn insert_room(
    conn: &mut Conn,
    room_id: &str,
    room_version: &str,
    is_public: bool,
) -> Result<RoomNid> {
    let row = sqlx::query(
        "INSERT INTO rooms (room_id, room_version, is_public) VALUES ($1, $2, $3) RETURNING room_nid",
    )
    .bind(room_id)
    .bind(room_version)
    .bind(is_public as i64)
    .fetch_one(conn)
    .await?;
    Ok(RoomNid(row.get(0)))
}

pub async fn room_by_id(conn: &mut Conn, room_id: &str) -> Result<Option<RoomRow>> {
    let sql = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE room_id = $1");
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id).fetch_optional(conn).await?.map(room_from_row))
}

pub async fn room_by_nid(conn: &mut Conn, room_nid: RoomNid) -> Result<Option<RoomRow>> {
    let sql = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE room_nid = $1");
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_nid.0).fetch_optional(conn).await?.map(room_from_row))
}

pub async fn rooms_by_nid(conn: &mut Conn, nids: &[RoomNid]) -> Result<Vec<RoomRow>> {
    let mut rooms = Vec::with_capacity(nids.len());
    for chunk in nids.chunks(500) {
        let sql =
            format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE room_nid IN ({})", placeholders(chunk.len(), 1));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for nid in chunk {
            query = query.bind(nid.0);
        }
        rooms.extend(query.fetch_all(&mut *conn).await?.into_iter().map(room_from_row));
    }
    Ok(rooms)
}

/// A room's head after a batch: (room, latest event, current snapshot, max depth, bump stamp,
/// forward extremities as a JSON array).
pub type RoomHeadRow = (RoomNid, EventNid, SnapshotNid, i64, i64, String);

/// Moves the heads of every room a batch touched, in one statement per 200 rooms.
pub async fn set_room_heads(conn: &mut Conn, heads: &[RoomHeadRow]) -> Result<()> {
    for chunk in heads.chunks(200) {
        // `VALUES` names its columns column1.. on both backends.
        let sql = format!(
            "UPDATE rooms SET latest_event_nid = heads.column2, current_snapshot_nid = heads.column3, max_depth = heads.column4, \
             bump_stream_pos = heads.column5, forward_extremities = heads.column6 \
             FROM (VALUES {}) AS heads WHERE rooms.room_nid = heads.column1",
            row_placeholders(chunk.len(), 6)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (room_nid, latest_event_nid, snapshot_nid, max_depth, bump, extremities) in chunk {
            query = query
                .bind(room_nid.0)
                .bind(latest_event_nid.0)
                .bind(snapshot_nid.0)
                .bind(*max_depth)
                .bind(*bump)
                .bind(extremities.as_str());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

pub async fn set_room_public(conn: &mut Conn, room_nid: RoomNid, is_public: bool) -> Result<()> {
    sqlx::query("UPDATE rooms SET is_public = $1 WHERE room_nid = $2")
        .bind(is_public as i64)
        .bind(room_nid.0)
        .execute(conn)
        .await?;
    Ok(())
}

/// Room ids listed in the public room directory, newest first.
pub async fn public_room_ids(conn: &mut Conn, limit: i64, offset: i64) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT room_id FROM rooms WHERE is_public = 1 ORDER BY room_nid DESC LIMIT $1 OFFSET $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

pub async fn public_room_count(conn: &mut Conn) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM rooms WHERE is_public = 1").fetch_one(conn).await?;
    Ok(row.get(0))
}

/// Inserts an alias; returns false when it is taken.
pub async fn insert_alias(conn: &mut Conn, alias: &str, room_id: &str, creator: &str) -> Result<bool> {
    let result = sqlx::query(
        "INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) ON CONFLICT (alias) DO NOTHING",
    )
    .bind(alias)
    .bind(room_id)
    .bind(creator)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn room_id_by_alias(conn: &mut Conn, alias: &str) -> Result<Option<String>> {
    let row = sqlx::query("SELECT room_id FROM room_aliases WHERE alias = $1")
        .bind(alias)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// The `(room_id, creator)` of an alias.
pub async fn alias(conn: &mut Conn, alias: &str) -> Result<Option<(String, String)>> {
    let row = sqlx::query("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
        .bind(alias)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

pub async fn delete_alias(conn: &mut Conn, alias: &str) -> Result<bool> {
    let result = sqlx::query("DELETE FROM room_aliases WHERE alias = $1").bind(alias).execute(conn).await?;
    Ok(result.rows_affected() == 1)
}

pub async fn aliases_of_room(conn: &mut Conn, room_id: &str) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
        .bind(room_id)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRow {
    pub room_nid: RoomNid,
    pub user_id: String,
    pub membership: String,
    pub event_nid: EventNid,
    pub stream_pos: i64,
    pub forgotten: bool,
}

fn membership_from_row(row: sqlx::any::AnyRow) -> MembershipRow {
    MembershipRow {
        room_nid: RoomNid(row.get(0)),
        user_id: row.get(1),
        membership: row.get(2),
        event_nid: EventNid(row.get(3)),
        stream_pos: row.get(4),
        forgotten: row.get::<i64, _>(5) != 0,
    }
}

const MEMBERSHIP_COLUMNS: &str = "room_nid, user_id, membership, event_nid, stream_pos, forgotten";

/// Records a user's current membership in a room (a new membership un-forgets the room).
pub async fn upsert_membership(
    conn: &mut Conn,
    room_nid: RoomNid,
    user_id: &str,
    membership: &str,
    event_nid: EventNid,
    stream_pos: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO memberships (room_nid, user_id, membership, event_nid, stream_pos, forgotten) VALUES ($1, $2, $3, $4, $5, 0)
         ON CONFLICT (room_nid, user_id) DO UPDATE SET membership = excluded.membership, event_nid = excluded.event_nid,
         stream_pos = excluded.stream_pos, forgotten = 0",
    )
    .bind(room_nid.0)
    .bind(user_id)
    .bind(membership)
    .bind(event_nid.0)
    .bind(stream_pos)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records many users' current memberships in a room at once: `(user id, membership, event,
/// stream position)`, each user once.
pub async fn upsert_memberships(
    conn: &mut Conn,
    room_nid: RoomNid,
    rows: &[(String, String, EventNid, i64)],
) -> Result<()> {
    for chunk in rows.chunks(200) {
        let values = (0..chunk.len())
            .map(|row| {
                let base = row * 5;
                format!("(${}, ${}, ${}, ${}, ${}, 0)", base + 1, base + 2, base + 3, base + 4, base + 5)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO memberships (room_nid, user_id, membership, event_nid, stream_pos, forgotten) VALUES {values}
             ON CONFLICT (room_nid, user_id) DO UPDATE SET membership = excluded.membership, event_nid = excluded.event_nid,
             stream_pos = excluded.stream_pos, forgotten = 0"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (user_id, membership, event_nid, stream_pos) in chunk {
            query = query
                .bind(room_nid.0)
                .bind(user_id.as_str())
                .bind(membership.as_str())
                .bind(event_nid.0)
                .bind(*stream_pos);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

pub async fn set_membership_forgotten(conn: &mut Conn, room_nid: RoomNid, user_id: &str) -> Result<()> {
    sqlx::query("UPDATE memberships SET forgotten = 1 WHERE room_nid = $1 AND user_id = $2")
        .bind(room_nid.0)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Every room a user has a membership in, whatever it is.
pub async fn memberships_of_user(conn: &mut Conn, user_id: &str) -> Result<Vec<MembershipRow>> {
    let sql = format!("SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE user_id = $1");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_all(conn).await?;
    Ok(rows.into_iter().map(membership_from_row).collect())
}

pub async fn membership_of_user_in_room(
    conn: &mut Conn,
    room_nid: RoomNid,
    user_id: &str,
) -> Result<Option<MembershipRow>> {
    let sql = format!("SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE room_nid = $1 AND user_id = $2");
    let row =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_nid.0).bind(user_id).fetch_optional(conn).await?;
    Ok(row.map(membership_from_row))
}

/// Current memberships of a room, optionally only those with `membership`.
pub async fn memberships_of_room(
    conn: &mut Conn,
    room_nid: RoomNid,
    membership: Option<&str>,
) -> Result<Vec<MembershipRow>> {
    let rows = match membership {
        Some(membership) => {
            let sql = format!(
                "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE room_nid = $1 AND membership = $2 ORDER BY user_id"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_nid.0).bind(membership).fetch_all(conn).await?
        }
        None => {
            let sql =
                format!("SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE room_nid = $1 ORDER BY user_id");
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_nid.0).fetch_all(conn).await?
        }
    };
    Ok(rows.into_iter().map(membership_from_row).collect())
}

/// Whether `user_id` and `other` are both joined to some room.
pub async fn users_share_a_room(conn: &mut Conn, user_id: &str, other: &str) -> Result<bool> {
    let row = sqlx::query(
        "SELECT 1 FROM memberships mine JOIN memberships other ON other.room_nid = mine.room_nid
         WHERE mine.user_id = $1 AND mine.membership = 'join' AND other.user_id = $2 AND other.membership = 'join'
         LIMIT 1",
    )
    .bind(user_id)
    .bind(other)
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

pub async fn joined_member_count(conn: &mut Conn, room_nid: RoomNid) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM memberships WHERE room_nid = $1 AND membership = 'join'")
        .bind(room_nid.0)
        .fetch_one(conn)
        .await?;
    Ok(row.get(0))
}

/// The rooms a user is joined or invited to: who sees the user's device list and presence.
pub async fn room_ids_shared_by_user(conn: &mut Conn, user_id: &str) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT r.room_id FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid
         WHERE m.user_id = $1 AND m.membership IN ('join', 'invite') ORDER BY r.room_id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Every user joined or invited to a room the user is joined or invited to, the user included.
pub async fn users_sharing_a_room_with(conn: &mut Conn, user_id: &str) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT DISTINCT o.user_id FROM memberships m JOIN memberships o ON o.room_nid = m.room_nid
         WHERE m.user_id = $1 AND m.membership IN ('join', 'invite') AND o.membership IN ('join', 'invite')
         ORDER BY o.user_id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    let mut users: Vec<String> = rows.into_iter().map(|row| row.get(0)).collect();
    if let Err(at) = users.binary_search_by(|user| user.as_str().cmp(user_id)) {
        users.insert(at, user_id.to_owned());
    }
    Ok(users)
}

/// `LIKE` pattern matching the user ids of `server_name`: the localpart holds no `:`, so the
/// server is what follows the first one.
fn users_of_server_pattern(server_name: &str) -> String {
    let escaped = server_name.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("@%:{escaped}")
}

/// The users joined to a room who are not users of `own_server`: whom other servers must
/// tell of the room's typing and receipts.
pub async fn remote_joined_members_of_room(
    conn: &mut Conn,
    room_nid: RoomNid,
    own_server: &str,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT user_id FROM memberships WHERE room_nid = $1 AND membership = 'join'
         AND user_id NOT LIKE $2 ESCAPE '\\' ORDER BY user_id",
    )
    .bind(room_nid.0)
    .bind(users_of_server_pattern(own_server))
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Every user of another server than `own_server` joined to a room `user_id` is joined to.
pub async fn remote_users_sharing_a_room_with(
    conn: &mut Conn,
    user_id: &str,
    own_server: &str,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT DISTINCT o.user_id FROM memberships m JOIN memberships o ON o.room_nid = m.room_nid
         WHERE m.user_id = $1 AND m.membership = 'join' AND o.membership = 'join'
         AND o.user_id NOT LIKE $2 ESCAPE '\\' ORDER BY o.user_id",
    )
    .bind(user_id)
    .bind(users_of_server_pattern(own_server))
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// The current memberships in `rooms` that changed in `after < stream_pos <= up_to`.
pub async fn membership_changes_between(
    conn: &mut Conn,
    rooms: &[RoomNid],
    after: i64,
    up_to: i64,
) -> Result<Vec<MembershipRow>> {
    let mut changes = Vec::new();
    for chunk in rooms.chunks(500) {
        let sql = format!(
            "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE stream_pos > $1 AND stream_pos <= $2
             AND room_nid IN ({}) ORDER BY stream_pos",
            crate::state::placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(up_to);
        for room in chunk {
            query = query.bind(room.0);
        }
        changes.extend(query.fetch_all(&mut *conn).await?.into_iter().map(membership_from_row));
    }
    Ok(changes)
}

/// The bump stamps (see [`RoomRow::bump_stream_pos`]) of `rooms`, in one query per 500 rooms.
pub async fn bump_stamps_of_rooms(conn: &mut Conn, rooms: &[RoomNid]) -> Result<Vec<(RoomNid, i64)>> {
    let mut stamps = Vec::with_capacity(rooms.len());
    for chunk in rooms.chunks(500) {
        let sql = format!(
            "SELECT room_nid, bump_stream_pos FROM rooms WHERE room_nid IN ({})",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for nid in chunk {
            query = query.bind(nid.0);
        }
        stamps.extend(
            query.fetch_all(&mut *conn).await?.into_iter().map(|row| (RoomNid(row.get(0)), row.get(1))),
        );
    }
    Ok(stamps)
}
