//! Federation's own tables: the outbox of EDUs for other servers, and the transactions other
//! servers sent.

use sqlx::Row;

use crate::{Conn, Result};

/// An EDU waiting for its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub destination: String,
    pub edu_type: String,
    pub content_json: String,
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

/// Every destination with queued EDUs.
pub async fn outbox_destinations(conn: &mut Conn) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT DISTINCT destination FROM federation_outbox").fetch_all(conn).await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// The oldest queued EDUs of `destination`, at most `limit`, in queue order.
pub async fn outbox_edus_for(conn: &mut Conn, destination: &str, limit: i64) -> Result<Vec<OutboxRow>> {
    let rows = sqlx::query(
        "SELECT id, destination, edu_type, content_json FROM federation_outbox WHERE destination = $1 \
         ORDER BY id LIMIT $2",
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
        })
        .collect())
}

/// Deletes EDUs their destination took.
pub async fn delete_outbox_edus(conn: &mut Conn, ids: &[i64]) -> Result<()> {
    for id in ids {
        sqlx::query("DELETE FROM federation_outbox WHERE id = $1").bind(id).execute(&mut *conn).await?;
    }
    Ok(())
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
