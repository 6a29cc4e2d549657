//! Rows of the receipts and account-data streams. Each table keeps the latest row per key; an
//! update moves the row to a new stream position, which is all an incremental sync needs.

use sqlx::Row;

use crate::{Conn, Result, state::placeholders};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRow {
    pub room_id: String,
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
    pub stream_pos: i64,
}

pub async fn upsert_receipt(conn: &mut Conn, receipt: &ReceiptRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos",
    )
    .bind(&receipt.room_id)
    .bind(&receipt.user_id)
    .bind(&receipt.receipt_type)
    .bind(&receipt.thread_id)
    .bind(&receipt.event_id)
    .bind(receipt.ts)
    .bind(receipt.stream_pos)
    .execute(conn)
    .await?;
    Ok(())
}

/// Receipts in `rooms` whose position is in `after < stream_pos <= up_to`.
pub async fn receipts_between(
    conn: &mut Conn,
    rooms: &[String],
    after: i64,
    up_to: i64,
) -> Result<Vec<ReceiptRow>> {
    let mut receipts = Vec::new();
    for chunk in rooms.chunks(500) {
        let sql = format!(
            "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos FROM receipts
             WHERE stream_pos > $1 AND stream_pos <= $2 AND room_id IN ({}) ORDER BY stream_pos",
            placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(up_to);
        for room in chunk {
            query = query.bind(room.as_str());
        }
        receipts.extend(query.fetch_all(&mut *conn).await?.into_iter().map(|row| ReceiptRow {
            room_id: row.get(0),
            user_id: row.get(1),
            receipt_type: row.get(2),
            thread_id: row.get(3),
            event_id: row.get(4),
            ts: row.get(5),
            stream_pos: row.get(6),
        }));
    }
    Ok(receipts)
}

pub async fn max_receipt_stream_pos(conn: &mut Conn) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(stream_pos), 0) FROM receipts").fetch_one(conn).await?;
    Ok(row.get(0))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDataRow {
    /// Empty for global account data.
    pub room_id: String,
    pub data_type: String,
    pub content: String,
    pub stream_pos: i64,
}

pub async fn upsert_account_data(
    conn: &mut Conn,
    user_id: &str,
    room_id: &str,
    data_type: &str,
    content: &str,
    stream_pos: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO account_data (user_id, room_id, data_type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos",
    )
    .bind(user_id)
    .bind(room_id)
    .bind(data_type)
    .bind(content)
    .bind(stream_pos)
    .execute(conn)
    .await?;
    Ok(())
}

/// A user's account data rows in `after < stream_pos <= up_to`.
pub async fn account_data_between(
    conn: &mut Conn,
    user_id: &str,
    after: i64,
    up_to: i64,
) -> Result<Vec<AccountDataRow>> {
    let rows = sqlx::query(
        "SELECT room_id, data_type, content, stream_pos FROM account_data WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3
         ORDER BY stream_pos",
    )
    .bind(user_id)
    .bind(after)
    .bind(up_to)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| AccountDataRow {
            room_id: row.get(0),
            data_type: row.get(1),
            content: row.get(2),
            stream_pos: row.get(3),
        })
        .collect())
}

pub async fn account_data_content(
    conn: &mut Conn,
    user_id: &str,
    room_id: &str,
    data_type: &str,
) -> Result<Option<String>> {
    let row = sqlx::query(
        "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
    )
    .bind(user_id)
    .bind(room_id)
    .bind(data_type)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| row.get(0)))
}

pub async fn max_account_data_stream_pos(conn: &mut Conn) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(stream_pos), 0) FROM account_data").fetch_one(conn).await?;
    Ok(row.get(0))
}

// Membership reads of the sync role (the memberships table is written with the events stream).

/// A user's membership row with its room's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRoomRow {
    pub room_nid: ganglion_types::RoomNid,
    pub room_id: String,
    pub membership: String,
    pub event_nid: ganglion_types::EventNid,
    pub stream_pos: i64,
    pub forgotten: bool,
}

/// Every room a user has a membership in, with the room id, in one query.
pub async fn rooms_of_user(conn: &mut Conn, user_id: &str) -> Result<Vec<UserRoomRow>> {
    let rows = sqlx::query(
        "SELECT m.room_nid, r.room_id, m.membership, m.event_nid, m.stream_pos, m.forgotten
         FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid WHERE m.user_id = $1",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| UserRoomRow {
            room_nid: ganglion_types::RoomNid(row.get(0)),
            room_id: row.get(1),
            membership: row.get(2),
            event_nid: ganglion_types::EventNid(row.get(3)),
            stream_pos: row.get(4),
            forgotten: row.get::<i64, _>(5) != 0,
        })
        .collect())
}

/// `(joined, invited)` member counts of a room.
pub async fn member_counts_of_room(conn: &mut Conn, room_nid: ganglion_types::RoomNid) -> Result<(i64, i64)> {
    let rows = sqlx::query(
        "SELECT membership, COUNT(*) FROM memberships WHERE room_nid = $1 AND membership IN ('join', 'invite')
         GROUP BY membership",
    )
    .bind(room_nid.0)
    .fetch_all(conn)
    .await?;
    let (mut joined, mut invited) = (0, 0);
    for row in rows {
        match row.get::<String, _>(0).as_str() {
            "join" => joined = row.get(1),
            _ => invited = row.get(1),
        }
    }
    Ok((joined, invited))
}

/// Up to `limit` members of a room other than `except_user` with one of `memberships`, oldest
/// membership first: the room summary's heroes.
pub async fn heroes_of_room(
    conn: &mut Conn,
    room_nid: ganglion_types::RoomNid,
    except_user: &str,
    memberships: &[&str],
    limit: i64,
) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT user_id FROM memberships WHERE room_nid = $1 AND user_id <> $2 AND membership IN ({})
         ORDER BY stream_pos LIMIT $3",
        placeholders(memberships.len(), 4)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_nid.0).bind(except_user).bind(limit);
    for membership in memberships {
        query = query.bind(*membership);
    }
    Ok(query.fetch_all(conn).await?.into_iter().map(|row| row.get(0)).collect())
}

/// A user's membership rows (as [`rooms_of_user`]) and, for each room the user is joined to
/// (or whose row moved past `up_to`), its newest `per_room` events with
/// `after < stream_pos <= up_to` as `(room_nid, event_nid, stream_pos)`, newest first within a
/// room: an incremental sync's two reads in one round trip.
pub async fn rooms_of_user_with_newest_events(
    conn: &mut Conn,
    user_id: &str,
    after: i64,
    up_to: i64,
    per_room: i64,
) -> Result<(Vec<UserRoomRow>, Vec<(ganglion_types::RoomNid, ganglion_types::EventNid, i64)>)> {
    let rows = sqlx::query(
        "SELECT CAST(0 AS BIGINT), m.room_nid, r.room_id, m.membership, m.event_nid, m.stream_pos, m.forgotten
         FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid WHERE m.user_id = $1
         UNION ALL
         SELECT CAST(1 AS BIGINT), ranked.room_nid, NULL, NULL, ranked.event_nid, ranked.stream_pos, 0 FROM (
             SELECT e.room_nid, e.event_nid, e.stream_pos,
                    ROW_NUMBER() OVER (PARTITION BY e.room_nid ORDER BY e.stream_pos DESC) AS newest_rank
             FROM events e WHERE e.stream_pos > $2 AND e.stream_pos <= $3 AND e.room_nid IN (
                 SELECT room_nid FROM memberships WHERE user_id = $1 AND (membership = 'join' OR stream_pos > $3)
             )
         ) AS ranked WHERE ranked.newest_rank <= $4",
    )
    .bind(user_id)
    .bind(after)
    .bind(up_to)
    .bind(per_room)
    .fetch_all(conn)
    .await?;
    let mut rooms = Vec::new();
    let mut events = Vec::new();
    for row in rows {
        let room_nid = ganglion_types::RoomNid(row.get(1));
        if row.get::<i64, _>(0) == 0 {
            rooms.push(UserRoomRow {
                room_nid,
                room_id: row.get(2),
                membership: row.get(3),
                event_nid: ganglion_types::EventNid(row.get(4)),
                stream_pos: row.get(5),
                forgotten: row.get::<i64, _>(6) != 0,
            });
        } else {
            events.push((room_nid, ganglion_types::EventNid(row.get(4)), row.get(5)));
        }
    }
    // Newest first within each room, whatever order the union came back in.
    events.sort_unstable_by_key(|(room_nid, _, stream_pos)| (*room_nid, std::cmp::Reverse(*stream_pos)));
    Ok((rooms, events))
}
