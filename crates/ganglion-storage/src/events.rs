//! Persisted events (PDUs as exact canonical JSON) and client transaction ids.

use ganglion_types::{EventNid, RoomNid, SnapshotNid, StateKeyNid, TypeNid};
use sqlx::Row;

use crate::{
    Conn, Result,
    state::{placeholders, row_placeholders},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub event_nid: EventNid,
    pub stream_pos: i64,
    pub event_id: String,
    pub room_nid: RoomNid,
    pub depth: i64,
    pub type_nid: TypeNid,
    pub state_key_nid: Option<StateKeyNid>,
    pub sender: String,
    pub origin_server_ts: i64,
    pub json: String,
    pub snapshot_nid: SnapshotNid,
    pub replaces_nid: Option<EventNid>,
    pub redacted_by: Option<String>,
}

pub(crate) const EVENT_COLUMNS: &str = "event_nid, stream_pos, event_id, room_nid, depth, type_nid, state_key_nid, sender, \
     origin_server_ts, json, snapshot_nid, replaces_nid, redacted_by";

/// [`EVENT_COLUMNS`] of the events table under `alias`, for joins.
pub(crate) fn event_columns_of(alias: &str) -> String {
    EVENT_COLUMNS
        .split(", ")
        .map(|column| format!("{alias}.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn event_from_row(row: sqlx::any::AnyRow) -> EventRow {
    EventRow {
        event_nid: EventNid(row.get(0)),
        stream_pos: row.get(1),
        event_id: row.get(2),
        room_nid: RoomNid(row.get(3)),
        depth: row.get(4),
        type_nid: TypeNid(row.get(5)),
        state_key_nid: row.get::<Option<i64>, _>(6).map(StateKeyNid),
        sender: row.get(7),
        origin_server_ts: row.get(8),
        json: row.get(9),
        snapshot_nid: SnapshotNid(row.get(10)),
        replaces_nid: row.get::<Option<i64>, _>(11).map(EventNid),
        redacted_by: row.get(12),
    }
}

/// Rows for `event_nid`s the writer allocated itself (one above [`max_event_nid`] and on), so
/// a batch of events costs one statement per 500 rows instead of one round trip per event.
pub async fn insert_events(conn: &mut Conn, rows: &[std::sync::Arc<EventRow>]) -> Result<()> {
    const COLUMNS: usize = 12;
    for chunk in rows.chunks(500) {
        let sql = format!(
            "INSERT INTO events (event_nid, stream_pos, event_id, room_nid, depth, type_nid, state_key_nid, sender, origin_server_ts, json, snapshot_nid, replaces_nid) VALUES {}",
            row_placeholders(chunk.len(), COLUMNS)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            query = query
                .bind(row.event_nid.0)
                .bind(row.stream_pos)
                .bind(row.event_id.as_str())
                .bind(row.room_nid.0)
                .bind(row.depth)
                .bind(row.type_nid.0)
                .bind(row.state_key_nid.map(|nid| nid.0))
                .bind(row.sender.as_str())
                .bind(row.origin_server_ts)
                .bind(row.json.as_str())
                .bind(row.snapshot_nid.0)
                .bind(row.replaces_nid.map(|nid| nid.0));
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The room's timeline event (not an outlier) nearest to `ts`: the first sent at or after it, or with `!forward` the last sent at or before it; as
/// `(event id, origin_server_ts)`.
pub async fn event_nearest_to_ts(
    conn: &mut Conn,
    room_nid: RoomNid,
    ts: i64,
    forward: bool,
) -> Result<Option<(String, i64)>> {
    let sql = if forward {
        "SELECT event_id, origin_server_ts FROM events WHERE room_nid = $1 AND outlier = 0 \
         AND origin_server_ts >= $2 ORDER BY origin_server_ts, stream_pos LIMIT 1"
    } else {
        "SELECT event_id, origin_server_ts FROM events WHERE room_nid = $1 AND outlier = 0 \
         AND origin_server_ts <= $2 ORDER BY origin_server_ts DESC, stream_pos DESC LIMIT 1"
    };
    let row = sqlx::query(sql).bind(room_nid.0).bind(ts).fetch_optional(conn).await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// The highest event NID handed out so far (0 for none).
pub async fn max_event_nid(conn: &mut Conn) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(event_nid), 0) FROM events").fetch_one(conn).await?;
    Ok(row.get(0))
}

pub async fn event_by_id(conn: &mut Conn, event_id: &str) -> Result<Option<EventRow>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1");
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(event_id).fetch_optional(conn).await?.map(event_from_row))
}

pub async fn events_by_nid(conn: &mut Conn, nids: &[EventNid]) -> Result<Vec<EventRow>> {
    let mut events = Vec::with_capacity(nids.len());
    for chunk in nids.chunks(500) {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_nid IN ({})",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for nid in chunk {
            query = query.bind(nid.0);
        }
        events.extend(query.fetch_all(&mut *conn).await?.into_iter().map(event_from_row));
    }
    Ok(events)
}

/// The timeline events at the stream positions `positions` (unknown ones skipped).
pub async fn events_at_positions(conn: &mut Conn, positions: &[i64]) -> Result<Vec<EventRow>> {
    let mut events = Vec::with_capacity(positions.len());
    for chunk in positions.chunks(500) {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_pos IN ({}) AND outlier = 0",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for position in chunk {
            query = query.bind(*position);
        }
        events.extend(query.fetch_all(&mut *conn).await?.into_iter().map(event_from_row));
    }
    Ok(events)
}

pub async fn events_by_id(conn: &mut Conn, ids: &[String]) -> Result<Vec<EventRow>> {
    let mut events = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({})",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.as_str());
        }
        events.extend(query.fetch_all(&mut *conn).await?.into_iter().map(event_from_row));
    }
    Ok(events)
}

/// Events of a room with `after < stream_pos <= up_to`: the first `limit` in ascending order, or
/// with `newest_first` the last `limit` in descending order.
pub async fn events_in_room(
    conn: &mut Conn,
    room_nid: RoomNid,
    after: i64,
    up_to: i64,
    limit: i64,
    newest_first: bool,
) -> Result<Vec<EventRow>> {
    let order = if newest_first { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE room_nid = $1 AND stream_pos > $2 AND stream_pos <= $3 AND outlier = 0 \
         ORDER BY stream_pos {order} LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(room_nid.0)
        .bind(after)
        .bind(up_to)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(event_from_row).collect())
}

/// The rooms among `rooms` with events in `after < stream_pos <= up_to`.
pub async fn rooms_with_events_between(
    conn: &mut Conn,
    rooms: &[RoomNid],
    after: i64,
    up_to: i64,
) -> Result<Vec<RoomNid>> {
    let mut changed = Vec::new();
    for chunk in rooms.chunks(500) {
        let sql = format!(
            "SELECT DISTINCT room_nid FROM events WHERE stream_pos > $1 AND stream_pos <= $2 AND room_nid IN ({})",
            placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(up_to);
        for nid in chunk {
            query = query.bind(nid.0);
        }
        changed.extend(query.fetch_all(&mut *conn).await?.into_iter().map(|row| RoomNid(row.get(0))));
    }
    Ok(changed)
}

/// The latest event of a room at or before `up_to`.
pub async fn latest_event_in_room_at(
    conn: &mut Conn,
    room_nid: RoomNid,
    up_to: i64,
) -> Result<Option<EventRow>> {
    Ok(events_in_room(conn, room_nid, 0, up_to, 1, true).await?.into_iter().next())
}

/// Marks an event redacted. Redaction strips `m.relates_to` and the searchable text, so the
/// event's relation and its search row go too.
pub async fn set_redacted_by(conn: &mut Conn, event_id: &str, redaction_event_id: &str) -> Result<()> {
    sqlx::query("UPDATE events SET redacted_by = $1 WHERE event_id = $2 AND redacted_by IS NULL")
        .bind(redaction_event_id)
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    crate::relations::delete_relation_of(&mut *conn, event_id).await?;
    crate::search::delete_search_row_of(conn, event_id).await
}

pub async fn max_event_stream_pos(conn: &mut Conn) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(stream_pos), 0) FROM events").fetch_one(conn).await?;
    Ok(row.get(0))
}

/// The lowest position of any event: below 0 once history was fetched from other servers
/// (backfilled events take positions below every other, oldest lowest).
pub async fn min_event_stream_pos(conn: &mut Conn) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MIN(stream_pos), 0) FROM events").fetch_one(conn).await?;
    Ok(row.get(0))
}

/// The room's timeline event at the lowest position: the oldest of its history this server has.
pub async fn oldest_event_in_room(conn: &mut Conn, room_nid: RoomNid) -> Result<Option<EventRow>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE room_nid = $1 AND outlier = 0 ORDER BY stream_pos ASC LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_nid.0).fetch_optional(conn).await?;
    Ok(row.map(event_from_row))
}

/// Takes events out of their room's timeline (kept for its state and auth chain only).
/// Marks another server's soft-failed event (kept to be found by id): an outlier that history
/// never takes into the timeline (`outlier = 2`; other outliers are 1).
pub async fn mark_soft_failed(conn: &mut Conn, nid: EventNid) -> Result<()> {
    sqlx::query("UPDATE events SET outlier = 2 WHERE event_nid = $1").bind(nid.0).execute(conn).await?;
    Ok(())
}

/// Takes an outlier (an event fetched for a room's state or auth chain, not a soft-failed one)
/// into the room's timeline at `stream_pos`, below the rest: the room's history reached it.
/// Whether it was such an outlier.
pub async fn promote_outlier(conn: &mut Conn, nid: EventNid, stream_pos: i64) -> Result<bool> {
    let done =
        sqlx::query("UPDATE events SET outlier = 0, stream_pos = $2 WHERE event_nid = $1 AND outlier = 1")
            .bind(nid.0)
            .bind(stream_pos)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether the event with `nid` is kept only for its part in a room's state or auth chain: one
/// that came with a join (or with the state at a gap) and that fetched history has not reached.
pub async fn is_outlier(conn: &mut Conn, nid: EventNid) -> Result<bool> {
    let row = sqlx::query("SELECT event_nid FROM events WHERE event_nid = $1 AND outlier = 1")
        .bind(nid.0)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

/// The timeline events of `room_nid` below position `below` that set the state
/// `(kind, state_key)`, newest first. History fetched from other servers changes no state, so
/// its events are not linked by `replaces_nid`: this is how the state they set is found.
pub async fn history_state_events(
    conn: &mut Conn,
    room_nid: RoomNid,
    kind: &str,
    state_key: &str,
    below: i64,
) -> Result<Vec<EventRow>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE room_nid = $1 AND stream_pos < $2 AND outlier = 0 \
         AND type_nid = (SELECT type_nid FROM event_types WHERE event_type = $3) \
         AND state_key_nid = (SELECT state_key_nid FROM state_keys WHERE state_key = $4) \
         ORDER BY stream_pos DESC"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(room_nid.0)
        .bind(below)
        .bind(kind)
        .bind(state_key)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(event_from_row).collect())
}

/// Marks events kept only for their part in a room's state or auth chain (`outlier = 1`).
pub async fn mark_outliers(conn: &mut Conn, nids: &[EventNid]) -> Result<()> {
    for chunk in nids.chunks(500) {
        let sql = format!(
            "UPDATE events SET outlier = 1 WHERE event_nid IN ({})",
            crate::state::placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for nid in chunk {
            query = query.bind(nid.0);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A client transaction id: (user id, device id, transaction id).
pub type TxnKey = (String, String, String);

/// The events already sent under any of `keys`, in one query per 300 keys.
pub async fn event_ids_by_txns(conn: &mut Conn, keys: &[TxnKey]) -> Result<Vec<(TxnKey, String)>> {
    let mut found = Vec::new();
    for chunk in keys.chunks(300) {
        let sql = format!(
            "SELECT user_id, device_id, txn_id, event_id FROM event_txns WHERE (user_id, device_id, txn_id) IN (VALUES {})",
            row_placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (user_id, device_id, txn_id) in chunk {
            query = query.bind(user_id.as_str()).bind(device_id.as_str()).bind(txn_id.as_str());
        }
        found.extend(
            query
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|row| ((row.get(0), row.get(1), row.get(2)), row.get(3))),
        );
    }
    Ok(found)
}

/// Records the events sent under client transaction ids: (key, event id) pairs.
pub async fn insert_txns(conn: &mut Conn, txns: &[(TxnKey, String)]) -> Result<()> {
    for chunk in txns.chunks(500) {
        let sql = format!(
            "INSERT INTO event_txns (user_id, device_id, txn_id, event_id) VALUES {}",
            row_placeholders(chunk.len(), 4)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for ((user_id, device_id, txn_id), event_id) in chunk {
            query = query
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(txn_id.as_str())
                .bind(event_id.as_str());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The transaction id a device used for an event, to echo back in `unsigned.transaction_id`.
pub async fn txn_ids_of_events(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
    event_ids: &[String],
) -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for chunk in event_ids.chunks(500) {
        let sql = format!(
            "SELECT event_id, txn_id FROM event_txns WHERE user_id = $1 AND device_id = $2 AND event_id IN ({})",
            placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(device_id);
        for id in chunk {
            query = query.bind(id.as_str());
        }
        found.extend(query.fetch_all(&mut *conn).await?.into_iter().map(|row| (row.get(0), row.get(1))));
    }
    Ok(found)
}

/// `(event_nid, stream_pos)` of a room's events with `after < stream_pos <= up_to`, newest
/// first, at most `limit`: a timeline window without loading the events' JSON.
pub async fn event_nids_in_room_newest_first(
    conn: &mut Conn,
    room_nid: RoomNid,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<(EventNid, i64)>> {
    let rows = sqlx::query(
        "SELECT event_nid, stream_pos FROM events WHERE room_nid = $1 AND stream_pos > $2 AND stream_pos <= $3
         ORDER BY stream_pos DESC LIMIT $4",
    )
    .bind(room_nid.0)
    .bind(after)
    .bind(up_to)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (EventNid(row.get(0)), row.get(1))).collect())
}

/// Records the state after an event in the event graph, where it is not its row's snapshot.
pub async fn insert_state_after(
    conn: &mut Conn,
    event_nid: EventNid,
    snapshot_nid: SnapshotNid,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO event_state_after (event_nid, snapshot_nid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(event_nid.0)
    .bind(snapshot_nid.0)
    .execute(conn)
    .await?;
    Ok(())
}

/// The state after an event in the event graph when it differs from its row's snapshot.
pub async fn state_after_nid(conn: &mut Conn, event_nid: EventNid) -> Result<Option<SnapshotNid>> {
    let row = sqlx::query("SELECT snapshot_nid FROM event_state_after WHERE event_nid = $1")
        .bind(event_nid.0)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| SnapshotNid(row.get(0))))
}

/// Records another server's event the auth rules refused, with why.
pub async fn insert_rejected_event(conn: &mut Conn, event_id: &str, reason: &str, now_ms: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO rejected_events (event_id, reason, rejected_ts) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(event_id)
    .bind(reason)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Why an event was rejected, if it was.
pub async fn rejection_of(conn: &mut Conn, event_id: &str) -> Result<Option<String>> {
    let row = sqlx::query("SELECT reason FROM rejected_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| row.get(0)))
}
