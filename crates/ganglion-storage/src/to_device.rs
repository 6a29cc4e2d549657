//! The to-device stream: messages queued for one device until it confirms them, and the
//! transaction ids that make `sendToDevice` idempotent. Positions come from the stream's single
//! writer, one per message row.

use sqlx::Row;

use crate::{Conn, Result, state::placeholders};

/// The name of the to-device stream in `stream_positions`.
const STREAM: &str = "to_device";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToDeviceRow {
    pub stream_pos: i64,
    /// The recipient.
    pub user_id: String,
    pub device_id: String,
    pub sender: String,
    pub event_type: String,
    pub content_json: String,
    pub message_id: String,
}

/// Inserts messages, each at its own position. Call inside a transaction.
pub async fn insert_to_device_messages(conn: &mut Conn, messages: &[ToDeviceRow]) -> Result<()> {
    let Some(highest) = messages.iter().map(|message| message.stream_pos).max() else {
        return Ok(());
    };
    // Delivered messages are deleted, so the table's own maximum can go backwards; the mark
    // cannot.
    sqlx::query(
        "INSERT INTO stream_positions (stream, stream_pos) VALUES ($1, $2)
         ON CONFLICT (stream) DO UPDATE SET stream_pos = excluded.stream_pos
         WHERE excluded.stream_pos > stream_positions.stream_pos",
    )
    .bind(STREAM)
    .bind(highest)
    .execute(&mut *conn)
    .await?;
    for chunk in messages.chunks(500) {
        let rows = (0..chunk.len())
            .map(|index| format!("({})", placeholders(7, index * 7 + 1)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO to_device_messages (stream_pos, user_id, device_id, sender, event_type, content_json, message_id)
             VALUES {rows}"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for message in chunk {
            query = query
                .bind(message.stream_pos)
                .bind(message.user_id.as_str())
                .bind(message.device_id.as_str())
                .bind(message.sender.as_str())
                .bind(message.event_type.as_str())
                .bind(message.content_json.as_str())
                .bind(message.message_id.as_str());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A device's messages with `after < stream_pos <= up_to`, oldest first, at most `limit`.
pub async fn to_device_messages_for(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<ToDeviceRow>> {
    let rows = sqlx::query(
        "SELECT stream_pos, user_id, device_id, sender, event_type, content_json, message_id FROM to_device_messages
         WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4
         ORDER BY stream_pos LIMIT $5",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(after)
    .bind(up_to)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ToDeviceRow {
            stream_pos: row.get(0),
            user_id: row.get(1),
            device_id: row.get(2),
            sender: row.get(3),
            event_type: row.get(4),
            content_json: row.get(5),
            message_id: row.get(6),
        })
        .collect())
}

/// Deletes a device's messages at or before `up_to` (the device has seen them); how many.
pub async fn delete_to_device_messages_up_to(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
    up_to: i64,
) -> Result<u64> {
    let result = sqlx::query(
        "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(up_to)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Deletes every message queued for a device (the device was deleted); how many.
pub async fn delete_to_device_messages_of_device(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
) -> Result<u64> {
    let result = sqlx::query("DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

/// The highest position the to-device stream ever reached, delivered messages included.
pub async fn max_to_device_stream_pos(conn: &mut Conn) -> Result<i64> {
    let row = sqlx::query(
        "SELECT COALESCE(MAX(stream_pos), 0) FROM (
             SELECT stream_pos FROM stream_positions WHERE stream = $1
             UNION ALL
             SELECT MAX(stream_pos) FROM to_device_messages
         ) AS positions",
    )
    .bind(STREAM)
    .fetch_one(conn)
    .await?;
    Ok(row.get(0))
}

/// Records a `sendToDevice` transaction id; returns false when the device already used it. Call
/// in the transaction that inserts the messages, so a failed send can be retried.
pub async fn insert_to_device_txn(
    conn: &mut Conn,
    sender_user: &str,
    sender_device: &str,
    txn_id: &str,
) -> Result<bool> {
    let result = sqlx::query(
        "INSERT INTO to_device_txns (sender_user, sender_device, txn_id) VALUES ($1, $2, $3)
         ON CONFLICT (sender_user, sender_device, txn_id) DO NOTHING",
    )
    .bind(sender_user)
    .bind(sender_device)
    .bind(txn_id)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}
