//! A worker's side: follows the master's streams into this process's positions, recent events,
//! typing copy and caches, and wakes its long-polls.
//!
//! Invariant: rows are recorded in position order, each exactly once, under `apply`; a row is
//! taken from Redis only when it is the next position, and anything else sends the worker to
//! the database, which holds every committed row.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ganglion_storage::{Db, replication as store};
use ganglion_types::{EventNid, StreamKind, StreamPosition, SyncToken};
use parking_lot::Mutex as SyncMutex;
use redis::{Value, aio::MultiplexedConnection};
use tokio::sync::Mutex;

use super::{CACHES_KEY, DB_STREAMS, key_of, now_us, outage::Outage};
use crate::{
    BoxFuture, Bus, CatchUp, InProcessBus, Invalidation, Notifier, Positions, RecentEvents, StreamRow,
    TypingStore,
};

/// Rows read from the database per query while catching up.
const CATCH_UP_BATCH: i64 = 1000;
/// How long one blocking read waits; when it returns empty the worker checks the database, which
/// also notices rows whose publication a crashed master never made.
const BLOCK_MS: u64 = 2000;
/// Entries per read.
const READ_COUNT: usize = 1000;
/// How long `reach` waits for Redis before reading the database itself.
const REDIS_GRACE: Duration = Duration::from_millis(20);
/// Lag samples kept for percentiles.
const LAG_SAMPLES: usize = 100_000;

/// The typing stream as the master holds it: epoch, position, rooms with their typers.
pub type TypingState = (u64, StreamPosition, Vec<(String, Vec<String>)>);

/// What the follower needs from the rest of the worker.
pub trait FollowerHooks: Send + Sync + 'static {
    /// Asks the master for its typing state; `None` when it cannot be reached.
    fn typing_snapshot(&self) -> BoxFuture<'_, Option<TypingState>>;
    /// Drops a cache entry, or every cache with `None`.
    fn invalidate(&self, what: Option<Invalidation>);
    /// A new event's row, as the writer stored it, and the (device id, transaction id) it was
    /// sent with: worth caching before readers wake.
    fn remember_event(&self, _row: ganglion_storage::events::EventRow, _txn: Option<(String, String)>) {}
}

/// Replication lag: from the master's publish to this worker's recording, per entry taken
/// from Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LagStats {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub struct Follower {
    db: Db,
    positions: Arc<Positions>,
    local: InProcessBus,
    typing: Arc<TypingStore>,
    hooks: Arc<dyn FollowerHooks>,
    redis_url: String,
    poll_interval: Duration,
    /// Held while recording rows, so that Redis and the database never record one twice.
    apply: Mutex<CacheSequence>,
    following_redis: AtomicBool,
    lags: SyncMutex<Vec<f64>>,
    /// Events invalidated (redacted) lately: a late Redis entry must not cache their old row.
    redacted: SyncMutex<std::collections::HashSet<EventNid>>,
    metrics: std::sync::OnceLock<Arc<ganglion_metrics::ReplicationMetrics>>,
}

/// The last invalidation seen: `(epoch, seq)`.
type CacheSequence = Option<(u64, u64)>;

impl Follower {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        positions: Arc<Positions>,
        notifier: Arc<Notifier>,
        recent: Arc<RecentEvents>,
        typing: Arc<TypingStore>,
        hooks: Arc<dyn FollowerHooks>,
        redis_url: String,
        poll_interval: Duration,
    ) -> Arc<Follower> {
        Arc::new(Follower {
            db,
            local: InProcessBus::new(positions.clone(), notifier, recent),
            positions,
            typing,
            hooks,
            redis_url,
            poll_interval,
            apply: Mutex::new(None),
            following_redis: AtomicBool::new(false),
            lags: SyncMutex::new(Vec::new()),
            redacted: SyncMutex::new(std::collections::HashSet::new()),
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Where to count lag, Redis connections and catch-ups (set once, before `start`).
    pub fn count_in(&self, metrics: Arc<ganglion_metrics::ReplicationMetrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Starts following: Redis when it answers, the database every `poll_interval` when not.
    pub fn start(self: &Arc<Self>) {
        let follower = self.clone();
        tokio::spawn(async move { follower.run().await });
    }

    /// Whether wake-ups currently come from Redis (false: polling the database).
    pub fn is_following_redis(&self) -> bool {
        self.following_redis.load(Ordering::Relaxed)
    }

    /// Lag percentiles since the last call, and forgets the samples.
    pub fn take_lag_stats(&self) -> LagStats {
        let mut samples = std::mem::take(&mut *self.lags.lock());
        if samples.is_empty() {
            return LagStats::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        LagStats { samples: samples.len(), p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0) }
    }

    async fn run(self: Arc<Self>) {
        let client = match redis::Client::open(self.redis_url.as_str()) {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::error!(%error, "invalid Redis URL; following the database only");
                None
            }
        };
        let mut outage = Outage::new("follower");
        loop {
            if let Some(client) = &client
                && outage.may_retry(Instant::now())
            {
                match connect(client).await {
                    Ok(connection) => {
                        if outage.recovered(Instant::now()).is_none() {
                            tracing::info!("following replication on Redis");
                        }
                        if let Err(error) = self.follow(connection).await {
                            outage.failed(Instant::now(), "lost Redis", &error);
                        }
                    }
                    Err(error) => outage.failed(Instant::now(), "cannot reach Redis", &error),
                }
            }
            self.following_redis.store(false, Ordering::Relaxed);
            self.poll_once().await;
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    /// One round without Redis: invalidations may have been missed, so sessions and key counts
    /// are read afresh; the typing state comes from the master; rows from the database.
    async fn poll_once(&self) {
        self.hooks.invalidate(Some(Invalidation::Sessions));
        self.hooks.invalidate(Some(Invalidation::AllKeyCounts));
        self.refresh_typing(false).await;
        self.catch_up_logged().await;
    }

    async fn follow(&self, mut connection: MultiplexedConnection) -> redis::RedisResult<()> {
        // Where the id-less streams end now: everything published from here on is read.
        let mut typing_id = last_id(&mut connection, key_of(StreamKind::Typing)).await?;
        let mut caches_id = last_id(&mut connection, CACHES_KEY).await?;
        *self.apply.lock().await = None;
        if let Some(metrics) = self.metrics.get() {
            metrics.redis_connected();
        }
        // Anything may have been missed while disconnected.
        self.hooks.invalidate(None);
        self.refresh_typing(true).await;
        self.catch_up_logged().await;
        self.following_redis.store(true, Ordering::Relaxed);
        let mut db_ids: HashMap<StreamKind, String> =
            DB_STREAMS.iter().map(|&kind| (kind, format!("{}-0", self.positions.get(kind).0))).collect();
        loop {
            let mut command = redis::cmd("XREAD");
            command.arg("COUNT").arg(READ_COUNT).arg("BLOCK").arg(BLOCK_MS).arg("STREAMS");
            command.arg(CACHES_KEY).arg(key_of(StreamKind::Typing));
            for kind in DB_STREAMS {
                command.arg(key_of(kind));
            }
            command.arg(&caches_id).arg(&typing_id);
            for kind in DB_STREAMS {
                command.arg(&db_ids[&kind]);
            }
            let reply: Value = command.query_async(&mut connection).await?;
            let streams = parse_read_reply(reply);
            if streams.is_empty() {
                // Quiet for a while: make sure nothing committed went unpublished.
                self.catch_up_logged().await;
                continue;
            }
            let mut entries: HashMap<String, Vec<Entry>> = HashMap::new();
            for (key, stream_entries) in streams {
                if let Some(last) = stream_entries.last() {
                    let id = last.id.clone();
                    match key.as_str() {
                        CACHES_KEY => caches_id = id,
                        k if k == key_of(StreamKind::Typing) => typing_id = id,
                        k => {
                            if let Some(kind) = DB_STREAMS.into_iter().find(|&kind| key_of(kind) == k) {
                                db_ids.insert(kind, id);
                            }
                        }
                    }
                }
                entries.insert(key, stream_entries);
            }
            self.apply_entries(entries).await;
        }
    }

    async fn apply_entries(&self, mut entries: HashMap<String, Vec<Entry>>) {
        let now = now_us();
        let mut lags = Vec::new();
        let mut gap = false;
        let mut typing_gap = false;
        {
            let mut sequence = self.apply.lock().await;
            // Invalidations first: a row recorded below must not be served from a stale cache.
            for entry in entries.remove(CACHES_KEY).unwrap_or_default() {
                let (Some(epoch), Some(seq)) = (entry.int("e"), entry.int("s")) else { continue };
                let (epoch, seq) = (epoch as u64, seq as u64);
                let in_order = matches!(*sequence, Some((e, s)) if e == epoch && s + 1 == seq);
                if !in_order && sequence.is_some() {
                    self.hooks.invalidate(None);
                }
                *sequence = Some((epoch, seq));
                match (entry.str("w"), entry.int("n")) {
                    (Some("sessions"), _) => self.hooks.invalidate(Some(Invalidation::Sessions)),
                    (Some("event"), Some(nid)) => self.forget_event(EventNid(nid)),
                    (Some("keys"), _) => {
                        if let (Some(user_id), Some(device_id)) = (entry.str("u"), entry.str("d")) {
                            self.hooks.invalidate(Some(Invalidation::KeyCounts {
                                user_id: Arc::from(user_id),
                                device_id: Arc::from(device_id),
                            }));
                        }
                    }
                    (Some("all_keys"), _) => self.hooks.invalidate(Some(Invalidation::AllKeyCounts)),
                    _ => {}
                }
            }
            let mut rows = Vec::new();
            for kind in DB_STREAMS {
                let mut next = self.positions.get(kind).0;
                for entry in entries.remove(key_of(kind)).unwrap_or_default() {
                    let Some(position) = entry.int("p") else { continue };
                    if position <= next {
                        continue;
                    }
                    if position != next + 1 {
                        gap = true;
                        break;
                    }
                    next = position;
                    if let Some(row) = entry.str("ev").and_then(super::decode_event)
                        && !self.redacted.lock().contains(&row.event_nid)
                    {
                        let txn = entry.str("tx").and_then(super::decode_txn);
                        self.hooks.remember_event(row, txn);
                    }
                    if let Some(sent) = entry.int("t") {
                        let lag_ms = (now - sent).max(0) as f64 / 1000.0;
                        if let Some(metrics) = self.metrics.get() {
                            metrics.lag(kind.as_str(), lag_ms / 1000.0);
                        }
                        lags.push(lag_ms);
                    }
                    let receipt = match (entry.str("rc"), entry.str("r")) {
                        (Some(receipt), Some(room_id)) => super::decode_receipt(receipt, room_id, position),
                        _ => None,
                    };
                    rows.push(StreamRow {
                        kind,
                        position: StreamPosition(position),
                        room_id: entry.str("r").map(Arc::from),
                        user_ids: entry.users().into_iter().map(Arc::from).collect(),
                        event_nid: entry.int("n").map(EventNid),
                        event: None,
                        event_txn: None,
                        receipt: receipt.map(Arc::new),
                        keys_complete: true,
                        trace: entry.str("tp").and_then(|parent| received(kind, position, parent)),
                        push: entry.str("pa").and_then(super::decode_push).map(Arc::new),
                    });
                }
            }
            for entry in entries.remove(key_of(StreamKind::Typing)).unwrap_or_default() {
                let (Some(epoch), Some(position), Some(room)) =
                    (entry.int("e"), entry.int("p"), entry.str("r"))
                else {
                    continue;
                };
                let current = self.positions.get(StreamKind::Typing).0;
                if epoch as u64 != self.positions.typing_epoch() || position > current + 1 {
                    typing_gap = true;
                    break;
                }
                if position <= current {
                    continue;
                }
                self.typing.apply(room, &entry.users(), StreamPosition(position));
                rows.push(StreamRow::new(
                    StreamKind::Typing,
                    StreamPosition(position),
                    Some(room),
                    Vec::new(),
                ));
            }
            self.local.publish_all(rows);
        }
        if !lags.is_empty() {
            let mut samples = self.lags.lock();
            if samples.len() + lags.len() <= LAG_SAMPLES {
                samples.extend(lags);
            }
        }
        if typing_gap {
            self.refresh_typing(true).await;
        }
        if gap {
            self.catch_up_logged().await;
        }
    }

    fn forget_event(&self, nid: EventNid) {
        {
            let mut redacted = self.redacted.lock();
            if redacted.len() >= 100_000 {
                redacted.clear();
            }
            redacted.insert(nid);
        }
        self.hooks.invalidate(Some(Invalidation::Event(nid)));
    }

    /// Replaces the typing copy with the master's when its epoch or position differs (or
    /// always, with `force`).
    async fn refresh_typing(&self, force: bool) {
        let Some((epoch, position, rooms)) = self.hooks.typing_snapshot().await else { return };
        let _guard = self.apply.lock().await;
        if !force
            && epoch == self.positions.typing_epoch()
            && position == self.positions.get(StreamKind::Typing)
        {
            return;
        }
        self.typing.reset(position, &rooms);
        self.positions.reset_typing(epoch, position);
        let rows = rooms
            .iter()
            .map(|(room, _)| StreamRow::new(StreamKind::Typing, position, Some(room), Vec::new()))
            .collect();
        self.local.publish_all(rows);
    }

    async fn catch_up_logged(&self) {
        if let Some(metrics) = self.metrics.get() {
            metrics.caught_up();
        }
        if let Err(error) = self.catch_up().await {
            tracing::warn!(%error, "catching up from the database failed; retrying shortly");
        }
    }

    /// Records every committed row this process has not seen, from the database.
    async fn catch_up(&self) -> Result<(), ganglion_storage::StorageError> {
        let _guard = self.apply.lock().await;
        let mut conn = self.db.conn().await?;
        for kind in DB_STREAMS {
            loop {
                let rows = self.rows_after(&mut conn, kind, self.positions.get(kind).0).await?;
                let done = (rows.len() as i64) < CATCH_UP_BATCH;
                self.local.publish_all(rows);
                if done {
                    break;
                }
            }
        }
        // Delivered to-device messages are deleted, so the newest positions may have no row
        // left; every position up to the writer's committed mark is final all the same.
        let mark = ganglion_storage::to_device::max_to_device_stream_pos(&mut conn).await?;
        if mark > self.positions.get(StreamKind::ToDevice).0 {
            self.local.publish(StreamRow::new(StreamKind::ToDevice, StreamPosition(mark), None, Vec::new()));
        }
        Ok(())
    }

    /// The next rows of `kind` after `after` in the database, at most `CATCH_UP_BATCH`.
    async fn rows_after(
        &self,
        conn: &mut ganglion_storage::Conn,
        kind: StreamKind,
        after: i64,
    ) -> Result<Vec<StreamRow>, ganglion_storage::StorageError> {
        let position = StreamPosition;
        Ok(match kind {
            StreamKind::Events => {
                let events = store::event_rows_between(conn, after, i64::MAX, CATCH_UP_BATCH).await?;
                let mut rows = Vec::with_capacity(events.len());
                for event in events {
                    if event.event_type == "m.room.redaction"
                        && let Some(redacted) = store::event_redacted_by(conn, &event.event_id).await?
                    {
                        self.forget_event(redacted);
                    }
                    rows.push(StreamRow::event(
                        position(event.stream_pos),
                        &event.room_id,
                        event.event_nid,
                        &event.event_type,
                        event.state_key.as_deref(),
                        None,
                    ));
                }
                rows
            }
            StreamKind::Receipts => store::receipt_rows_between(conn, after, i64::MAX, CATCH_UP_BATCH)
                .await?
                .into_iter()
                .map(|(at, room_id, user_id)| {
                    StreamRow::new(kind, position(at), Some(&room_id), vec![Arc::from(user_id)])
                })
                .collect(),
            StreamKind::AccountData => {
                store::account_data_rows_between(conn, after, i64::MAX, CATCH_UP_BATCH)
                    .await?
                    .into_iter()
                    .map(|(at, user_id)| StreamRow::new(kind, position(at), None, vec![Arc::from(user_id)]))
                    .collect()
            }
            StreamKind::ToDevice => store::to_device_rows_between(conn, after, i64::MAX, CATCH_UP_BATCH)
                .await?
                .into_iter()
                .map(|(at, user_id, _device_id)| {
                    StreamRow::new(kind, position(at), None, vec![Arc::from(user_id)])
                })
                .collect(),
            // The rooms a row wakes are the writer's to know; a caught-up row wakes its user only.
            StreamKind::DeviceLists => store::device_list_rows_between(conn, after, i64::MAX, CATCH_UP_BATCH)
                .await?
                .into_iter()
                .map(|(at, user_id)| {
                    StreamRow::new(kind, position(at), None, vec![Arc::from(user_id)]).without_rooms()
                })
                .collect(),
            StreamKind::Presence => store::presence_rows_between(conn, after, i64::MAX, CATCH_UP_BATCH)
                .await?
                .into_iter()
                .map(|(at, user_id)| {
                    StreamRow::new(kind, position(at), None, vec![Arc::from(user_id)]).without_rooms()
                })
                .collect(),
            // Typing has no table: it comes from the master (`refresh_typing`).
            StreamKind::Typing => Vec::new(),
        })
    }
}

impl CatchUp for Follower {
    fn reach(&self, token: SyncToken, limit: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            // Usually Redis brings it within a millisecond or two.
            if self.positions.wait_for(&token, limit.min(REDIS_GRACE)).await {
                return true;
            }
            // Otherwise the database has every committed row: after reading it, a position
            // still ahead was never committed (a made-up token), and is answered like one.
            let caught_up = tokio::time::timeout(limit, async {
                self.catch_up().await?;
                if token.typing_epoch == self.positions.typing_epoch()
                    && token.typing > self.positions.get(StreamKind::Typing)
                {
                    self.refresh_typing(false).await;
                }
                Ok::<(), ganglion_storage::StorageError>(())
            })
            .await;
            match caught_up {
                Ok(Ok(())) => true,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot catch up from the database");
                    false
                }
                Err(_) => false,
            }
        })
    }
}

/// A dedicated connection for blocking reads: no response timeout, or a quiet stream would
/// look like a dead Redis.
async fn connect(client: &redis::Client) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(None);
    client.get_multiplexed_async_connection_with_config(&config).await
}

async fn last_id(connection: &mut MultiplexedConnection, key: &str) -> redis::RedisResult<String> {
    let reply: Value = tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(1).query_async(connection),
    )
    .await
    .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
    let entries = parse_entries(reply);
    Ok(entries.into_iter().next().map(|entry| entry.id).unwrap_or_else(|| "0-0".to_owned()))
}

/// One stream entry: id and fields.
#[derive(Debug, Default)]
struct Entry {
    id: String,
    fields: HashMap<String, String>,
}

impl Entry {
    fn str(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    fn int(&self, field: &str) -> Option<i64> {
        self.str(field)?.parse().ok()
    }

    fn users(&self) -> Vec<String> {
        self.str("u").and_then(|u| serde_json::from_str(u).ok()).unwrap_or_default()
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// `[[id, [field, value, …]], …]`
fn parse_entries(value: Value) -> Vec<Entry> {
    items(value)
        .into_iter()
        .filter_map(|entry| {
            let mut parts = items(entry).into_iter();
            let id = text(parts.next()?)?;
            let mut fields = HashMap::new();
            let mut flat = items(parts.next()?).into_iter();
            while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
                if let (Some(field), Some(value)) = (text(field), text(value)) {
                    fields.insert(field, value);
                }
            }
            Some(Entry { id, fields })
        })
        .collect()
}

/// XREAD's reply: `[[key, entries], …]`, or nil when the block timed out.
fn parse_read_reply(value: Value) -> Vec<(String, Vec<Entry>)> {
    let streams = match value {
        Value::Map(pairs) => pairs.into_iter().map(|(k, v)| (text(k), v)).collect::<Vec<_>>(),
        other => items(other)
            .into_iter()
            .filter_map(|stream| {
                let mut parts = items(stream).into_iter();
                Some((text(parts.next()?), parts.next()?))
            })
            .collect(),
    };
    streams.into_iter().filter_map(|(key, entries)| Some((key?, parse_entries(entries)))).collect()
}

/// The span of a traced row's arrival here, continuing the master's; its `traceparent` follows
/// the row to the long-polls it wakes.
fn received(kind: StreamKind, position: i64, parent: &str) -> Option<Arc<str>> {
    if !ganglion_telemetry::exporting() {
        return None;
    }
    let span = tracing::info_span!(
        "replication.receive",
        otel.name = %format!("receive {} {position}", kind.as_str()),
        otel.kind = "consumer",
        stream = kind.as_str(),
        position,
    );
    ganglion_telemetry::continue_trace(&span, parent);
    ganglion_telemetry::traceparent(&span).map(Arc::from)
}

#[cfg(test)]
pub(super) mod tests_support {
    /// `(key, [(id, p, r, u)])` of an XREAD reply.
    #[allow(clippy::type_complexity)]
    pub fn parse(
        value: redis::Value,
    ) -> Vec<(String, Vec<(String, Option<i64>, Option<String>, Vec<String>)>)> {
        super::parse_read_reply(value)
            .into_iter()
            .map(|(key, entries)| {
                let entries = entries
                    .into_iter()
                    .map(|e| (e.id.clone(), e.int("p"), e.str("r").map(str::to_owned), e.users()))
                    .collect();
                (key, entries)
            })
            .collect()
    }
}
