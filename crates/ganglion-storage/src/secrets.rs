//! Secrets shared by every process of a cluster, one per purpose, created once.

use sqlx::Row;

use crate::{Conn, Result};

pub async fn secret_named(conn: &mut Conn, name: &str) -> Result<Option<String>> {
    let row = sqlx::query("SELECT secret FROM server_secrets WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// Stores `secret` under `name` unless one is there already (two processes generating one at
/// once), and returns the one stored.
pub async fn secret_named_or_insert(
    conn: &mut Conn,
    name: &str,
    secret: &str,
    now_ms: i64,
) -> Result<String> {
    sqlx::query(
        "INSERT INTO server_secrets (name, secret, created_ts) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(secret)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    let row =
        sqlx::query("SELECT secret FROM server_secrets WHERE name = $1").bind(name).fetch_one(conn).await?;
    Ok(row.get(0))
}
