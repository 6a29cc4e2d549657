//! Replication over Redis Streams, for cluster mode.
//!
//! The master publishes each committed row on one Redis Stream per stream ([`RedisBus`]);
//! workers follow them with blocking reads ([`Follower`]). Redis only carries wake-ups and
//! recent rows: rows of the database-backed streams (all but typing) have the
//! Redis entry id `<position>-0`, so a worker resumes exactly where it left off, and whenever it
//! sees a gap, reconnects or starts, it reads what it missed from the database by position.
//! Typing (held in the master's memory) and cache invalidations have no table: a worker that
//! may have missed some asks the master for the typing state and drops all of its caches.
//!
//! Entry fields are short and readable with `redis-cli XRANGE`: `p` position, `r` room id,
//! `u` user ids (JSON array), `n` event nid, `e` the master's epoch, `s` invalidation sequence,
//! `w` what to invalidate, `t` publish time (µs since the Unix epoch, for replication lag), `ev`
//! the event's stored row (a JSON array), so workers cache new events without reading them back.

mod follower;
mod outage;
mod publisher;

pub use follower::{Follower, FollowerHooks, LagStats, TypingState};
pub use publisher::RedisBus;

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use ganglion_storage::{events::EventRow, streams::ReceiptRow};
use ganglion_types::{EventNid, RoomNid, SnapshotNid, StateKeyNid, StreamKind, TypeNid};
use serde_json::{Value, json};

/// Streams whose rows live in the database, in the order a worker reads them.
const DB_STREAMS: [StreamKind; 6] = [
    StreamKind::Events,
    StreamKind::Receipts,
    StreamKind::AccountData,
    StreamKind::ToDevice,
    StreamKind::DeviceLists,
    StreamKind::Presence,
];

fn key_of(kind: StreamKind) -> &'static str {
    match kind {
        StreamKind::Events => "ganglion:events",
        StreamKind::Receipts => "ganglion:receipts",
        StreamKind::Typing => "ganglion:typing",
        StreamKind::AccountData => "ganglion:account_data",
        StreamKind::ToDevice => "ganglion:to_device",
        StreamKind::DeviceLists => "ganglion:device_lists",
        StreamKind::Presence => "ganglion:presence",
    }
}

const CACHES_KEY: &str = "ganglion:caches";

/// Tells whether Redis answers, for a process's readiness.
#[derive(Clone)]
pub struct RedisProbe {
    client: redis::Client,
}

impl RedisProbe {
    pub fn new(redis_url: &str) -> Result<RedisProbe, redis::RedisError> {
        Ok(RedisProbe { client: redis::Client::open(redis_url)? })
    }

    /// `Ok` when a new connection to Redis answers a PING within a second.
    pub async fn check(&self) -> Result<(), String> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(1)))
            .set_response_timeout(Some(std::time::Duration::from_secs(1)));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|error| error.to_string())?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(|error| error.to_string())
    }
}

/// An event row as the `ev` field: `[nid, pos, id, room, depth, type, state_key, sender, ts,
/// snapshot, replaces, redacted_by, json]`.
fn encode_event(row: &EventRow) -> String {
    json!([
        row.event_nid.0,
        row.stream_pos,
        row.event_id,
        row.room_nid.0,
        row.depth,
        row.type_nid.0,
        row.state_key_nid.map(|n| n.0),
        row.sender,
        row.origin_server_ts,
        row.snapshot_nid.0,
        row.replaces_nid.map(|n| n.0),
        row.redacted_by,
        row.json,
    ])
    .to_string()
}

/// The inverse of [`encode_event`]; `None` for anything else (the worker then reads the
/// database when it needs the event).
fn decode_event(field: &str) -> Option<EventRow> {
    let Value::Array(items) = serde_json::from_str::<Value>(field).ok()? else { return None };
    let [nid, pos, id, room, depth, kind, state_key, sender, ts, snapshot, replaces, redacted_by, json] =
        <[Value; 13]>::try_from(items).ok()?;
    let opt_int = |v: &Value| if v.is_null() { Some(None) } else { v.as_i64().map(Some) };
    Some(EventRow {
        event_nid: EventNid(nid.as_i64()?),
        stream_pos: pos.as_i64()?,
        event_id: id.as_str()?.to_owned(),
        room_nid: RoomNid(room.as_i64()?),
        depth: depth.as_i64()?,
        type_nid: TypeNid(kind.as_i64()?),
        state_key_nid: opt_int(&state_key)?.map(StateKeyNid),
        sender: sender.as_str()?.to_owned(),
        origin_server_ts: ts.as_i64()?,
        snapshot_nid: SnapshotNid(snapshot.as_i64()?),
        replaces_nid: opt_int(&replaces)?.map(EventNid),
        redacted_by: if redacted_by.is_null() { None } else { Some(redacted_by.as_str()?.to_owned()) },
        json: json.as_str()?.to_owned(),
    })
}

/// A receipts entry's `rc` field: the receipt but for its room and position (`r`, `p`).
fn encode_receipt(receipt: &ReceiptRow) -> String {
    json!([receipt.user_id, receipt.receipt_type, receipt.thread_id, receipt.event_id, receipt.ts])
        .to_string()
}

fn decode_receipt(field: &str, room_id: &str, stream_pos: i64) -> Option<ReceiptRow> {
    let (user_id, receipt_type, thread_id, event_id, ts) = serde_json::from_str(field).ok()?;
    Some(ReceiptRow {
        room_id: room_id.to_owned(),
        user_id,
        receipt_type,
        thread_id,
        event_id,
        ts,
        stream_pos,
    })
}

/// An event entry's `pa` field, whom the event notified: `[thread, [[user, highlight], …]]`.
fn encode_push(push: &crate::Notified) -> String {
    let users: Vec<(&str, bool)> =
        push.users.iter().map(|(user, highlight)| (user.as_ref(), *highlight)).collect();
    json!([push.thread_id.as_ref(), users]).to_string()
}

fn decode_push(field: &str) -> Option<crate::Notified> {
    let (thread_id, users): (String, Vec<(String, bool)>) = serde_json::from_str(field).ok()?;
    Some(crate::Notified {
        thread_id: Arc::from(thread_id),
        users: users.into_iter().map(|(user, highlight)| (Arc::from(user), highlight)).collect(),
    })
}

/// The (device id, transaction id) of an event entry's `tx` field.
fn encode_txn((device_id, txn_id): &(Arc<str>, Arc<str>)) -> String {
    json!([device_id.as_ref(), txn_id.as_ref()]).to_string()
}

fn decode_txn(field: &str) -> Option<(String, String)> {
    serde_json::from_str(field).ok()
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests;
