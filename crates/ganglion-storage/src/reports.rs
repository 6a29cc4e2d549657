//! Users' reports of events, rooms and users, for the server's operators; and the OpenID tokens
//! users hand to other servers to prove who they are.

use sqlx::Row;

use crate::{Conn, Result};

/// A report as filed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub report_id: i64,
    /// `event`, `room` or `user`.
    pub kind: String,
    pub reporter: String,
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    pub user_id: Option<String>,
    pub reason: String,
    pub score: Option<i64>,
    pub received_ts: i64,
}

/// Files a report (`report_id` and `received_ts` of `row` are ignored: the database numbers
/// it, and it is received now).
pub async fn insert_report(conn: &mut Conn, row: &ReportRow, now_ms: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO reports (kind, reporter, room_id, event_id, user_id, reason, score, received_ts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(row.kind.as_str())
    .bind(row.reporter.as_str())
    .bind(row.room_id.as_deref())
    .bind(row.event_id.as_deref())
    .bind(row.user_id.as_deref())
    .bind(row.reason.as_str())
    .bind(row.score)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// The newest `limit` reports, newest first.
pub async fn newest_reports(conn: &mut Conn, limit: i64) -> Result<Vec<ReportRow>> {
    let rows = sqlx::query(
        "SELECT report_id, kind, reporter, room_id, event_id, user_id, reason, score, received_ts \
         FROM reports ORDER BY report_id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ReportRow {
            report_id: row.get(0),
            kind: row.get(1),
            reporter: row.get(2),
            room_id: row.get(3),
            event_id: row.get(4),
            user_id: row.get(5),
            reason: row.get(6),
            score: row.get(7),
            received_ts: row.get(8),
        })
        .collect())
}

/// Stores an OpenID token, dropping the expired ones.
pub async fn insert_openid_token(
    conn: &mut Conn,
    token: &str,
    user_id: &str,
    expires_ts: i64,
    now_ms: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM openid_tokens WHERE expires_ts <= $1").bind(now_ms).execute(&mut *conn).await?;
    sqlx::query("INSERT INTO openid_tokens (token, user_id, expires_ts) VALUES ($1, $2, $3)")
        .bind(token)
        .bind(user_id)
        .bind(expires_ts)
        .execute(conn)
        .await?;
    Ok(())
}

/// The user an unexpired OpenID token was issued to.
pub async fn user_of_openid_token(conn: &mut Conn, token: &str, now_ms: i64) -> Result<Option<String>> {
    let row = sqlx::query("SELECT user_id FROM openid_tokens WHERE token = $1 AND expires_ts > $2")
        .bind(token)
        .bind(now_ms)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| row.get(0)))
}
