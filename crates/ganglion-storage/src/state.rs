//! Compressed state storage: interned event types and state keys, state blocks and snapshots.
//!
//! A snapshot is a list of `(bucket, block)` pairs, one per non-empty hash bucket of
//! `(type, state_key)`. A state change rewrites only the blocks of the buckets it touches, so one
//! membership change in a 10,000-member room writes one block row and one snapshot row.
//! Materialising and caching snapshots is `ganglion-state`'s job; this module stores the pieces.

use std::collections::HashMap;

use ganglion_types::{BlockNid, EventNid, RoomNid, SnapshotNid, StateKeyNid, TypeNid};
use sqlx::Row;

use crate::{Conn, Result, StorageError};

/// One `(type, state_key) -> event` entry of a room's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateEntry {
    pub type_nid: TypeNid,
    pub state_key_nid: StateKeyNid,
    pub event_nid: EventNid,
}

const ENTRY_BYTES: usize = 24;
const BUCKET_BYTES: usize = 10;

pub fn encode_entries(entries: &[StateEntry]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for entry in entries {
        bytes.extend_from_slice(&entry.type_nid.0.to_le_bytes());
        bytes.extend_from_slice(&entry.state_key_nid.0.to_le_bytes());
        bytes.extend_from_slice(&entry.event_nid.0.to_le_bytes());
    }
    bytes
}

pub fn decode_entries(bytes: &[u8]) -> Result<Vec<StateEntry>> {
    if !bytes.len().is_multiple_of(ENTRY_BYTES) {
        return Err(StorageError::Corrupt("state block length".into()));
    }
    Ok(bytes
        .chunks_exact(ENTRY_BYTES)
        .map(|chunk| StateEntry {
            type_nid: TypeNid(i64_at(chunk, 0)),
            state_key_nid: StateKeyNid(i64_at(chunk, 8)),
            event_nid: EventNid(i64_at(chunk, 16)),
        })
        .collect())
}

pub fn encode_buckets(buckets: &[(u16, BlockNid)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(buckets.len() * BUCKET_BYTES);
    for (bucket, block) in buckets {
        bytes.extend_from_slice(&bucket.to_le_bytes());
        bytes.extend_from_slice(&block.0.to_le_bytes());
    }
    bytes
}

pub fn decode_buckets(bytes: &[u8]) -> Result<Vec<(u16, BlockNid)>> {
    if !bytes.len().is_multiple_of(BUCKET_BYTES) {
        return Err(StorageError::Corrupt("state snapshot length".into()));
    }
    Ok(bytes
        .chunks_exact(BUCKET_BYTES)
        .map(|chunk| (u16::from_le_bytes([chunk[0], chunk[1]]), BlockNid(i64_at(chunk, 2))))
        .collect())
}

fn i64_at(bytes: &[u8], offset: usize) -> i64 {
    let mut buffer = [0u8; 8];
    buffer.copy_from_slice(&bytes[offset..offset + 8]);
    i64::from_le_bytes(buffer)
}

pub async fn type_nid_by_name(conn: &mut Conn, event_type: &str) -> Result<Option<TypeNid>> {
    let row = sqlx::query("SELECT type_nid FROM event_types WHERE event_type = $1")
        .bind(event_type)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| TypeNid(row.get(0))))
}

/// The NID of an event type, interning it if new.
pub async fn type_nid_or_insert(conn: &mut Conn, event_type: &str) -> Result<TypeNid> {
    sqlx::query("INSERT INTO event_types (event_type) VALUES ($1) ON CONFLICT (event_type) DO NOTHING")
        .bind(event_type)
        .execute(&mut *conn)
        .await?;
    type_nid_by_name(conn, event_type)
        .await?
        .ok_or_else(|| StorageError::Corrupt("event type vanished".into()))
}

pub async fn state_key_nid_by_name(conn: &mut Conn, state_key: &str) -> Result<Option<StateKeyNid>> {
    let row = sqlx::query("SELECT state_key_nid FROM state_keys WHERE state_key = $1")
        .bind(state_key)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| StateKeyNid(row.get(0))))
}

/// The NID of a state key, interning it if new.
pub async fn state_key_nid_or_insert(conn: &mut Conn, state_key: &str) -> Result<StateKeyNid> {
    sqlx::query("INSERT INTO state_keys (state_key) VALUES ($1) ON CONFLICT (state_key) DO NOTHING")
        .bind(state_key)
        .execute(&mut *conn)
        .await?;
    state_key_nid_by_name(conn, state_key)
        .await?
        .ok_or_else(|| StorageError::Corrupt("state key vanished".into()))
}

/// The NIDs of `state_keys`, interning the new ones: two statements per 500 keys.
pub async fn state_key_nids_or_insert(
    conn: &mut Conn,
    state_keys: &[&str],
) -> Result<HashMap<String, StateKeyNid>> {
    let mut nids = HashMap::with_capacity(state_keys.len());
    for chunk in state_keys.chunks(500) {
        let sql = format!(
            "INSERT INTO state_keys (state_key) VALUES {} ON CONFLICT (state_key) DO NOTHING",
            row_placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for key in chunk {
            query = query.bind(*key);
        }
        query.execute(&mut *conn).await?;
        let sql = format!(
            "SELECT state_key, state_key_nid FROM state_keys WHERE state_key IN ({})",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for key in chunk {
            query = query.bind(*key);
        }
        for row in query.fetch_all(&mut *conn).await? {
            nids.insert(row.get(0), StateKeyNid(row.get(1)));
        }
    }
    Ok(nids)
}

pub async fn event_type_names_by_nid(conn: &mut Conn, nids: &[TypeNid]) -> Result<HashMap<TypeNid, String>> {
    let mut names = HashMap::with_capacity(nids.len());
    for chunk in nids.chunks(500) {
        let sql = format!(
            "SELECT type_nid, event_type FROM event_types WHERE type_nid IN ({})",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for nid in chunk {
            query = query.bind(nid.0);
        }
        for row in query.fetch_all(&mut *conn).await? {
            names.insert(TypeNid(row.get(0)), row.get(1));
        }
    }
    Ok(names)
}

pub async fn state_key_names_by_nid(
    conn: &mut Conn,
    nids: &[StateKeyNid],
) -> Result<HashMap<StateKeyNid, String>> {
    let mut names = HashMap::with_capacity(nids.len());
    for chunk in nids.chunks(500) {
        let sql = format!(
            "SELECT state_key_nid, state_key FROM state_keys WHERE state_key_nid IN ({})",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for nid in chunk {
            query = query.bind(nid.0);
        }
        for row in query.fetch_all(&mut *conn).await? {
            names.insert(StateKeyNid(row.get(0)), row.get(1));
        }
    }
    Ok(names)
}

pub async fn insert_state_block(conn: &mut Conn, entries: &[StateEntry]) -> Result<BlockNid> {
    let row = sqlx::query("INSERT INTO state_blocks (entries) VALUES ($1) RETURNING block_nid")
        .bind(encode_entries(entries))
        .fetch_one(conn)
        .await?;
    Ok(BlockNid(row.get(0)))
}

pub async fn state_blocks_by_nid(
    conn: &mut Conn,
    nids: &[BlockNid],
) -> Result<HashMap<BlockNid, Vec<StateEntry>>> {
    let mut blocks = HashMap::with_capacity(nids.len());
    for chunk in nids.chunks(500) {
        let sql = format!(
            "SELECT block_nid, entries FROM state_blocks WHERE block_nid IN ({})",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for nid in chunk {
            query = query.bind(nid.0);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let bytes: Vec<u8> = row.get(1);
            blocks.insert(BlockNid(row.get(0)), decode_entries(&bytes)?);
        }
    }
    Ok(blocks)
}

pub async fn insert_state_snapshot(
    conn: &mut Conn,
    room_nid: RoomNid,
    buckets: &[(u16, BlockNid)],
) -> Result<SnapshotNid> {
    let row =
        sqlx::query("INSERT INTO state_snapshots (room_nid, buckets) VALUES ($1, $2) RETURNING snapshot_nid")
            .bind(room_nid.0)
            .bind(encode_buckets(buckets))
            .fetch_one(conn)
            .await?;
    Ok(SnapshotNid(row.get(0)))
}

pub async fn state_snapshot_buckets(conn: &mut Conn, nid: SnapshotNid) -> Result<Vec<(u16, BlockNid)>> {
    let row = sqlx::query("SELECT buckets FROM state_snapshots WHERE snapshot_nid = $1")
        .bind(nid.0)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| StorageError::Corrupt(format!("missing state snapshot {nid}")))?;
    let bytes: Vec<u8> = row.get(0);
    decode_buckets(&bytes)
}

/// Total bytes stored in state blocks and snapshots, for the compression benchmark.
pub async fn state_storage_bytes(conn: &mut Conn) -> Result<(i64, i64, i64, i64)> {
    let blocks = sqlx::query("SELECT COUNT(*), COALESCE(SUM(LENGTH(entries)), 0) FROM state_blocks")
        .fetch_one(&mut *conn)
        .await?;
    let snapshots = sqlx::query("SELECT COUNT(*), COALESCE(SUM(LENGTH(buckets)), 0) FROM state_snapshots")
        .fetch_one(&mut *conn)
        .await?;
    Ok((blocks.get(0), blocks.get(1), snapshots.get(0), snapshots.get(1)))
}

/// `$start, $start+1, …` for an `IN (…)` list of `count` values.
pub(crate) fn placeholders(count: usize, start: usize) -> String {
    (start..start + count).map(|index| format!("${index}")).collect::<Vec<_>>().join(", ")
}

/// `($1, $2), ($3, $4), …`: `rows` parenthesised groups of `columns` placeholders, for multi-row
/// `VALUES` lists.
pub(crate) fn row_placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", placeholders(columns, row * columns + 1)))
        .collect::<Vec<_>>()
        .join(", ")
}
