//! Other servers' signing keys and the signed answers they came in.

use sqlx::Row;

use crate::{Conn, Result};

/// One verify key of a remote server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredServerKey {
    pub key_id: String,
    /// Unpadded base64 of the ed25519 public key.
    pub verify_key: String,
    /// Signatures made after this instant are not trusted to this key.
    pub valid_until_ts: i64,
}

/// Every stored key of `server_name`.
pub async fn keys_of_server(conn: &mut Conn, server_name: &str) -> Result<Vec<StoredServerKey>> {
    let rows = sqlx::query(
        "SELECT key_id, verify_key, valid_until_ts FROM server_signing_keys WHERE server_name = $1",
    )
    .bind(server_name)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| StoredServerKey { key_id: row.get(0), verify_key: row.get(1), valid_until_ts: row.get(2) })
        .collect())
}

/// Records the keys of one signed answer of `server_name`, and the answer itself. The newest
/// answer decides a key's validity: a server that retires a key says until when it was valid.
pub async fn store_server_keys(
    conn: &mut Conn,
    server_name: &str,
    keys: &[StoredServerKey],
    response: &str,
    response_valid_until_ts: i64,
    now_ms: i64,
) -> Result<()> {
    for key in keys {
        sqlx::query(
            "INSERT INTO server_signing_keys (server_name, key_id, verify_key, valid_until_ts, fetched_ts) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (server_name, key_id) DO UPDATE SET \
             verify_key = excluded.verify_key, fetched_ts = excluded.fetched_ts, \
             valid_until_ts = excluded.valid_until_ts",
        )
        .bind(server_name)
        .bind(&key.key_id)
        .bind(&key.verify_key)
        .bind(key.valid_until_ts)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "INSERT INTO server_key_responses (server_name, response, valid_until_ts, fetched_ts) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (server_name) DO UPDATE SET response = excluded.response, \
         valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts",
    )
    .bind(server_name)
    .bind(response)
    .bind(response_valid_until_ts)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// The latest signed key answer stored for `server_name` and until when it is valid.
pub async fn key_response_of_server(conn: &mut Conn, server_name: &str) -> Result<Option<(String, i64)>> {
    let row = sqlx::query("SELECT response, valid_until_ts FROM server_key_responses WHERE server_name = $1")
        .bind(server_name)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}
