//! Federation's own tables: the outboxes of EDUs and PDUs for other servers, and the
//! transactions other servers sent.

use sqlx::Row;

use ganglion_types::EventNid;

use crate::{Conn, Result};

/// An EDU waiting for its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub destination: String,
    pub edu_type: String,
    pub content_json: String,
    /// When it was queued (ms since the epoch).
    pub created_ts: i64,
}

/// Queues EDUs `(destination, edu type, content)`; call inside the transaction that makes them.
pub async fn insert_outbox_edus(
    conn: &mut Conn,
    edus: &[(String, String, String)],
    now_ms: i64,
) -> Result<()> {
    for (destination, edu_type, content_json) in edus {
        sqlx::query(
            "INSERT INTO federation_outbox (destination, edu_type, content_json, created_ts) VALUES ($1, $2, $3, $4)",
        )
        .bind(destination)
        .bind(edu_type)
        .bind(content_json)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Every destination with queued EDUs or PDUs.
pub async fn outbox_destinations(conn: &mut Conn) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT destination FROM federation_outbox UNION SELECT destination FROM federation_pdu_outbox",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// The oldest queued EDUs of `destination`, at most `limit`, in queue order.
pub async fn outbox_edus_for(conn: &mut Conn, destination: &str, limit: i64) -> Result<Vec<OutboxRow>> {
    let rows = sqlx::query(
        "SELECT id, destination, edu_type, content_json, created_ts FROM federation_outbox \
         WHERE destination = $1 ORDER BY id LIMIT $2",
    )
    .bind(destination)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| OutboxRow {
            id: row.get(0),
            destination: row.get(1),
            edu_type: row.get(2),
            content_json: row.get(3),
            created_ts: row.get(4),
        })
        .collect())
}

/// Queues our events for other servers, `(destination, event)`; call inside the transaction
/// that persists the events.
/// A PDU to queue: its destination, its event and the `traceparent` of the request that made it.
pub type QueuedPdu = (String, EventNid, Option<std::sync::Arc<str>>);

pub async fn insert_outbox_pdus(conn: &mut Conn, pdus: &[QueuedPdu], now_ms: i64) -> Result<()> {
    for chunk in pdus.chunks(200) {
        let sql = format!(
            "INSERT INTO federation_pdu_outbox (destination, event_nid, created_ts, traceparent) VALUES {}",
            crate::state::row_placeholders(chunk.len(), 4)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (destination, event_nid, traceparent) in chunk {
            query =
                query.bind(destination.as_str()).bind(event_nid.0).bind(now_ms).bind(traceparent.as_deref());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A PDU waiting for its destination: the outbox row and the event's signed JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxPdu {
    pub id: i64,
    pub event_id: String,
    pub json: String,
    pub traceparent: Option<String>,
}

/// The oldest queued PDUs of `destination`, at most `limit`, in the order they were persisted.
pub async fn outbox_pdus_for(conn: &mut Conn, destination: &str, limit: i64) -> Result<Vec<OutboxPdu>> {
    let rows = sqlx::query(
        "SELECT o.id, e.event_id, e.json, o.traceparent FROM federation_pdu_outbox o JOIN events e ON e.event_nid = o.event_nid \
         WHERE o.destination = $1 ORDER BY o.id LIMIT $2",
    )
    .bind(destination)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| OutboxPdu {
            id: row.get(0),
            event_id: row.get(1),
            json: row.get(2),
            traceparent: row.get(3),
        })
        .collect())
}

/// Deletes PDUs their destination took (or refused for good).
pub async fn delete_outbox_pdus(conn: &mut Conn, ids: &[i64]) -> Result<()> {
    for chunk in ids.chunks(500) {
        let sql = format!(
            "DELETE FROM federation_pdu_outbox WHERE id IN ({})",
            crate::state::placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Deletes EDUs their destination took.
pub async fn delete_outbox_edus(conn: &mut Conn, ids: &[i64]) -> Result<()> {
    for id in ids {
        sqlx::query("DELETE FROM federation_outbox WHERE id = $1").bind(id).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Deletes the queued EDUs of `edu_type` queued before `before_ts`, whatever their
/// destination; how many.
pub async fn delete_outbox_edus_queued_before(
    conn: &mut Conn,
    edu_type: &str,
    before_ts: i64,
) -> Result<u64> {
    let done = sqlx::query("DELETE FROM federation_outbox WHERE edu_type = $1 AND created_ts < $2")
        .bind(edu_type)
        .bind(before_ts)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// The answer given to the transaction `txn_id` of `origin`, if it came before.
pub async fn inbound_transaction_response(
    conn: &mut Conn,
    origin: &str,
    txn_id: &str,
) -> Result<Option<String>> {
    let row = sqlx::query(
        "SELECT response_json FROM federation_inbound_transactions WHERE origin = $1 AND txn_id = $2",
    )
    .bind(origin)
    .bind(txn_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| row.get(0)))
}

/// Records the answer to a transaction (the first one wins if two arrive at once).
pub async fn insert_inbound_transaction(
    conn: &mut Conn,
    origin: &str,
    txn_id: &str,
    response_json: &str,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO federation_inbound_transactions (origin, txn_id, response_json, received_ts) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (origin, txn_id) DO NOTHING",
    )
    .bind(origin)
    .bind(txn_id)
    .bind(response_json)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the stripped state another server sent with its invite of one of our users.
pub async fn insert_remote_invite_state(
    conn: &mut Conn,
    event_nid: EventNid,
    state_json: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO remote_invite_states (event_nid, state_json) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(event_nid.0)
    .bind(state_json)
    .execute(conn)
    .await?;
    Ok(())
}

/// The stripped state of a remote invite, when `event_nid` is one.
pub async fn remote_invite_state(conn: &mut Conn, event_nid: EventNid) -> Result<Option<String>> {
    let row = sqlx::query("SELECT state_json FROM remote_invite_states WHERE event_nid = $1")
        .bind(event_nid.0)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| row.get(0)))
}
