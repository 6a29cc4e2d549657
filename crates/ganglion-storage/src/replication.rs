//! What a worker reads to catch up on a stream by position: one compact row per stream row,
//! enough to record it and wake the right listeners. The full rows are read when a request
//! needs them.

use ganglion_types::EventNid;
use sqlx::Row;

use crate::{Conn, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStreamRow {
    pub stream_pos: i64,
    pub event_nid: EventNid,
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
}

/// Events with `after < stream_pos <= up_to`, oldest first, at most `limit`.
pub async fn event_rows_between(
    conn: &mut Conn,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<EventStreamRow>> {
    let rows = sqlx::query(
        "SELECT e.stream_pos, e.event_nid, e.event_id, r.room_id, t.event_type, k.state_key
         FROM events e
         JOIN rooms r ON r.room_nid = e.room_nid
         JOIN event_types t ON t.type_nid = e.type_nid
         LEFT JOIN state_keys k ON k.state_key_nid = e.state_key_nid
         WHERE e.stream_pos > $1 AND e.stream_pos <= $2
         ORDER BY e.stream_pos LIMIT $3",
    )
    .bind(after)
    .bind(up_to)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| EventStreamRow {
            stream_pos: row.get(0),
            event_nid: EventNid(row.get(1)),
            event_id: row.get(2),
            room_id: row.get(3),
            event_type: row.get(4),
            state_key: row.get(5),
        })
        .collect())
}

/// The event that `redaction_event_id` redacted, if it is stored here.
pub async fn event_redacted_by(conn: &mut Conn, redaction_event_id: &str) -> Result<Option<EventNid>> {
    let row = sqlx::query("SELECT event_nid FROM events WHERE redacted_by = $1")
        .bind(redaction_event_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| EventNid(row.get(0))))
}

/// `(stream_pos, room_id, user_id)` of receipts with `after < stream_pos <= up_to`.
pub async fn receipt_rows_between(
    conn: &mut Conn,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<(i64, String, String)>> {
    let rows = sqlx::query(
        "SELECT stream_pos, room_id, user_id FROM receipts WHERE stream_pos > $1 AND stream_pos <= $2
         ORDER BY stream_pos LIMIT $3",
    )
    .bind(after)
    .bind(up_to)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
}

/// `(stream_pos, user_id)` of account data with `after < stream_pos <= up_to`.
pub async fn account_data_rows_between(
    conn: &mut Conn,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>> {
    let rows = sqlx::query(
        "SELECT stream_pos, user_id FROM account_data WHERE stream_pos > $1 AND stream_pos <= $2
         ORDER BY stream_pos LIMIT $3",
    )
    .bind(after)
    .bind(up_to)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// `(stream_pos, user_id, device_id)` of to-device messages with `after < stream_pos <= up_to`,
/// for waking the recipient. Delivered messages are deleted and leave no row, so a reader that
/// must reach the stream's end takes it from `to_device::max_to_device_stream_pos`.
pub async fn to_device_rows_between(
    conn: &mut Conn,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<(i64, String, String)>> {
    let rows = sqlx::query(
        "SELECT stream_pos, user_id, device_id FROM to_device_messages WHERE stream_pos > $1 AND stream_pos <= $2
         ORDER BY stream_pos LIMIT $3",
    )
    .bind(after)
    .bind(up_to)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
}

/// `(stream_pos, user_id)` of device-list changes with `after < stream_pos <= up_to`.
pub async fn device_list_rows_between(
    conn: &mut Conn,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>> {
    let rows = sqlx::query(
        "SELECT stream_pos, user_id FROM device_list_changes WHERE stream_pos > $1 AND stream_pos <= $2
         ORDER BY stream_pos LIMIT $3",
    )
    .bind(after)
    .bind(up_to)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// `(stream_pos, user_id)` of presence rows with `after < stream_pos <= up_to`.
pub async fn presence_rows_between(
    conn: &mut Conn,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>> {
    let rows = sqlx::query(
        "SELECT stream_pos, user_id FROM presence WHERE stream_pos > $1 AND stream_pos <= $2
         ORDER BY stream_pos LIMIT $3",
    )
    .bind(after)
    .bind(up_to)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}
