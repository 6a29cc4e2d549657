//! End-to-end encryption keys: device keys, one-time and fallback keys, cross-signing keys and
//! the signatures on them, and the device-lists stream that tells other users when a user's
//! devices or keys changed. The master writes all of them; any role reads them. JSON is stored
//! as given and compared as text, so callers pass canonical JSON.

use sqlx::Row;

use crate::{Conn, Result, StorageError, state::placeholders};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKeysRow {
    pub user_id: String,
    pub device_id: String,
    pub keys_json: String,
}

pub async fn upsert_device_keys(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
    keys_json: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO device_keys (user_id, device_id, keys_json) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, device_id) DO UPDATE SET keys_json = excluded.keys_json",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(keys_json)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn device_keys_json(conn: &mut Conn, user_id: &str, device_id: &str) -> Result<Option<String>> {
    let row = sqlx::query("SELECT keys_json FROM device_keys WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// The device keys of every device of `users`, ordered by user and device.
pub async fn device_keys_of_users(conn: &mut Conn, users: &[String]) -> Result<Vec<DeviceKeysRow>> {
    let mut keys = Vec::new();
    for chunk in users.chunks(500) {
        let sql = format!(
            "SELECT user_id, device_id, keys_json FROM device_keys WHERE user_id IN ({}) ORDER BY user_id, device_id",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for user in chunk {
            query = query.bind(user.as_str());
        }
        keys.extend(query.fetch_all(&mut *conn).await?.into_iter().map(|row| DeviceKeysRow {
            user_id: row.get(0),
            device_id: row.get(1),
            keys_json: row.get(2),
        }));
    }
    Ok(keys)
}

/// Deletes a device's identity, one-time and fallback keys (the device was deleted). Call
/// inside a transaction.
pub async fn delete_keys_of_device(conn: &mut Conn, user_id: &str, device_id: &str) -> Result<()> {
    for table in ["device_keys", "one_time_keys", "fallback_keys"] {
        let sql = format!("DELETE FROM {table} WHERE user_id = $1 AND device_id = $2");
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(device_id).execute(&mut *conn).await?;
    }
    Ok(())
}

/// A one-time or fallback key of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeKey {
    pub algorithm: String,
    pub key_id: String,
    pub key_json: String,
}

/// Stores a device's new one-time keys, unless one of them reuses a stored key id with a
/// different value: then nothing is stored and the stored keys in conflict are returned, for the
/// caller to refuse the upload. Keys already stored with the same value are skipped.
pub async fn insert_one_time_keys(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
    keys: &[OneTimeKey],
) -> Result<Vec<OneTimeKey>> {
    let mut conflicts = Vec::new();
    for chunk in keys.chunks(500) {
        let sql = format!(
            "SELECT algorithm, key_id, key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id IN ({})",
            placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(device_id);
        for key in chunk {
            query = query.bind(key.key_id.as_str());
        }
        for row in query.fetch_all(&mut *conn).await? {
            let stored = OneTimeKey { algorithm: row.get(0), key_id: row.get(1), key_json: row.get(2) };
            let differs = chunk.iter().any(|key| {
                key.algorithm == stored.algorithm
                    && key.key_id == stored.key_id
                    && key.key_json != stored.key_json
            });
            if differs {
                conflicts.push(stored);
            }
        }
    }
    if !conflicts.is_empty() {
        return Ok(conflicts);
    }
    for chunk in keys.chunks(500) {
        let rows = (0..chunk.len())
            .map(|index| format!("({})", placeholders(5, index * 5 + 1)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json) VALUES {rows}
             ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for key in chunk {
            query = query
                .bind(user_id)
                .bind(device_id)
                .bind(key.algorithm.as_str())
                .bind(key.key_id.as_str())
                .bind(key.key_json.as_str());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(Vec::new())
}

/// `(algorithm, count)` of a device's unclaimed one-time keys, by algorithm.
pub async fn one_time_key_counts(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2
         GROUP BY algorithm ORDER BY algorithm",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// A device's key state as every sync reports it, in one query: its unclaimed one-time keys by
/// algorithm, and the algorithms of its unused fallback keys.
pub async fn device_key_state(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
) -> Result<(Vec<(String, i64)>, Vec<String>)> {
    let rows = sqlx::query(
        "SELECT CAST(0 AS BIGINT), algorithm, COUNT(*) FROM one_time_keys
         WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
         UNION ALL
         SELECT CAST(1 AS BIGINT), algorithm, CAST(0 AS BIGINT) FROM fallback_keys
         WHERE user_id = $1 AND device_id = $2 AND used = 0
         ORDER BY 1, 2",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_all(conn)
    .await?;
    let (mut counts, mut fallback) = (Vec::new(), Vec::new());
    for row in rows {
        let (kind, algorithm): (i64, String) = (row.get(0), row.get(1));
        if kind == 0 {
            counts.push((algorithm, row.get(2)));
        } else {
            fallback.push(algorithm);
        }
    }
    Ok((counts, fallback))
}

/// Removes and returns one of a device's one-time keys of `algorithm`; `None` when it has none.
pub async fn claim_one_time_key(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<OneTimeKey>> {
    // Invariant: a key is handed out at most once. The DELETE removes the row it returns, so
    // two claims can never both return it. On PostgreSQL a concurrent claim may delete the key
    // this statement chose before it could: it then waits for that claim to commit and deletes
    // nothing. Each such miss means another claim succeeded, so retrying while keys remain ends.
    loop {
        let claimed = sqlx::query(
            "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = (
                 SELECT key_id FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
                 ORDER BY key_id LIMIT 1
             ) RETURNING key_id, key_json",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = claimed {
            return Ok(Some(OneTimeKey {
                algorithm: algorithm.to_owned(),
                key_id: row.get(0),
                key_json: row.get(1),
            }));
        }
        let remaining = sqlx::query(
            "SELECT 1 FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 LIMIT 1",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .fetch_optional(&mut *conn)
        .await?;
        if remaining.is_none() {
            return Ok(None);
        }
    }
}

/// Sets a device's fallback key for `key.algorithm`. A new key replaces the previous one and
/// starts unused; uploading the stored key again (same id and value) keeps it marked used.
pub async fn upsert_fallback_key(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
    key: &OneTimeKey,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, 0)
         ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json,
             used = CASE WHEN fallback_keys.key_id = excluded.key_id AND fallback_keys.key_json = excluded.key_json
                         THEN fallback_keys.used ELSE 0 END",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(key.algorithm.as_str())
    .bind(key.key_id.as_str())
    .bind(key.key_json.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// A device's fallback key of `algorithm`, now marked used; it stays claimable until replaced.
pub async fn claim_fallback_key(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<OneTimeKey>> {
    let row = sqlx::query(
        "UPDATE fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
         RETURNING key_id, key_json",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(algorithm)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| OneTimeKey {
        algorithm: algorithm.to_owned(),
        key_id: row.get(0),
        key_json: row.get(1),
    }))
}

/// The algorithms of a device's fallback keys that were never claimed, sorted.
pub async fn unused_fallback_key_types(
    conn: &mut Conn,
    user_id: &str,
    device_id: &str,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0 ORDER BY algorithm",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrossSigningKeyType {
    Master,
    SelfSigning,
    UserSigning,
}

impl CrossSigningKeyType {
    pub const fn all() -> [CrossSigningKeyType; 3] {
        [CrossSigningKeyType::Master, CrossSigningKeyType::SelfSigning, CrossSigningKeyType::UserSigning]
    }

    /// The name used in the table, as in the spec's `usage`.
    pub fn as_str(self) -> &'static str {
        match self {
            CrossSigningKeyType::Master => "master",
            CrossSigningKeyType::SelfSigning => "self_signing",
            CrossSigningKeyType::UserSigning => "user_signing",
        }
    }

    pub fn from_name(name: &str) -> Option<CrossSigningKeyType> {
        CrossSigningKeyType::all().into_iter().find(|key_type| key_type.as_str() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossSigningKeyRow {
    pub user_id: String,
    pub key_type: CrossSigningKeyType,
    pub keys_json: String,
}

pub async fn upsert_cross_signing_key(
    conn: &mut Conn,
    user_id: &str,
    key_type: CrossSigningKeyType,
    keys_json: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO cross_signing_keys (user_id, key_type, keys_json) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, key_type) DO UPDATE SET keys_json = excluded.keys_json",
    )
    .bind(user_id)
    .bind(key_type.as_str())
    .bind(keys_json)
    .execute(conn)
    .await?;
    Ok(())
}

/// The cross-signing keys of `users`, ordered by user and key type.
pub async fn cross_signing_keys_of_users(
    conn: &mut Conn,
    users: &[String],
) -> Result<Vec<CrossSigningKeyRow>> {
    let mut keys = Vec::new();
    for chunk in users.chunks(500) {
        let sql = format!(
            "SELECT user_id, key_type, keys_json FROM cross_signing_keys WHERE user_id IN ({}) ORDER BY user_id, key_type",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for user in chunk {
            query = query.bind(user.as_str());
        }
        for row in query.fetch_all(&mut *conn).await? {
            let name: String = row.get(1);
            let key_type = CrossSigningKeyType::from_name(&name)
                .ok_or_else(|| StorageError::Corrupt(format!("cross-signing key type {name:?}")))?;
            keys.push(CrossSigningKeyRow { user_id: row.get(0), key_type, keys_json: row.get(2) });
        }
    }
    Ok(keys)
}

/// A signature by `signer_key_id` of `signer_user_id` on `target_key_id` (a device id or a
/// cross-signing public key) of `target_user_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySignatureRow {
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub target_user_id: String,
    pub target_key_id: String,
    pub signature: String,
}

pub async fn upsert_key_signature(conn: &mut Conn, signature: &KeySignatureRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO key_signatures (signer_user_id, signer_key_id, target_user_id, target_key_id, signature) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (signer_user_id, signer_key_id, target_user_id, target_key_id) DO UPDATE SET signature = excluded.signature",
    )
    .bind(signature.signer_user_id.as_str())
    .bind(signature.signer_key_id.as_str())
    .bind(signature.target_user_id.as_str())
    .bind(signature.target_key_id.as_str())
    .bind(signature.signature.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// The signatures on keys of `users`, whoever made them, ordered by target then signer.
pub async fn signatures_on_keys_of_users(conn: &mut Conn, users: &[String]) -> Result<Vec<KeySignatureRow>> {
    let mut signatures = Vec::new();
    for chunk in users.chunks(500) {
        let sql = format!(
            "SELECT signer_user_id, signer_key_id, target_user_id, target_key_id, signature FROM key_signatures
             WHERE target_user_id IN ({}) ORDER BY target_user_id, target_key_id, signer_user_id, signer_key_id",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for user in chunk {
            query = query.bind(user.as_str());
        }
        signatures.extend(query.fetch_all(&mut *conn).await?.into_iter().map(|row| KeySignatureRow {
            signer_user_id: row.get(0),
            signer_key_id: row.get(1),
            target_user_id: row.get(2),
            target_key_id: row.get(3),
            signature: row.get(4),
        }));
    }
    Ok(signatures)
}

// The device-lists stream: one row per change, at a position from the stream's single writer.

pub async fn insert_device_list_change(conn: &mut Conn, user_id: &str, stream_pos: i64) -> Result<()> {
    sqlx::query("INSERT INTO device_list_changes (stream_pos, user_id) VALUES ($1, $2)")
        .bind(stream_pos)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// `(user_id, latest position)` of each user whose devices changed in
/// `after < stream_pos <= up_to`, by position.
pub async fn users_with_device_list_changes_between(
    conn: &mut Conn,
    after: i64,
    up_to: i64,
) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT user_id, MAX(stream_pos) AS latest FROM device_list_changes WHERE stream_pos > $1 AND stream_pos <= $2
         GROUP BY user_id ORDER BY latest",
    )
    .bind(after)
    .bind(up_to)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// As [`users_with_device_list_changes_between`], among `users` only.
pub async fn users_with_device_list_changes_among(
    conn: &mut Conn,
    users: &[String],
    after: i64,
    up_to: i64,
) -> Result<Vec<(String, i64)>> {
    let mut changed = Vec::new();
    for chunk in users.chunks(500) {
        let sql = format!(
            "SELECT user_id, MAX(stream_pos) FROM device_list_changes
             WHERE stream_pos > $1 AND stream_pos <= $2 AND user_id IN ({}) GROUP BY user_id",
            placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(up_to);
        for user in chunk {
            query = query.bind(user.as_str());
        }
        changed.extend(
            query.fetch_all(&mut *conn).await?.into_iter().map(|row| (row.get::<String, _>(0), row.get(1))),
        );
    }
    changed.sort_unstable_by_key(|(_, latest)| *latest);
    Ok(changed)
}

pub async fn max_device_list_stream_pos(conn: &mut Conn) -> Result<i64> {
    let row =
        sqlx::query("SELECT COALESCE(MAX(stream_pos), 0) FROM device_list_changes").fetch_one(conn).await?;
    Ok(row.get(0))
}
