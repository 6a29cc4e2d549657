//! The master's side: a [`Bus`] that wakes this process's readers and queues each row for
//! Redis. A background task writes the queue in pipelines; the writer never waits on Redis.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ganglion_types::StreamKind;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

use super::{CACHES_KEY, DB_STREAMS, key_of, now_us, outage::Outage};
use crate::{Bus, InProcessBus, Invalidation, StreamRow, TypingStore};

/// Entries waiting for Redis; beyond this they are dropped (workers catch up from the database).
const QUEUE: usize = 65_536;
/// Most entries in one pipeline.
const PIPELINE: usize = 1024;
const REDIS_DEADLINE: Duration = Duration::from_secs(2);
/// Longest a write waits for its invalidations to reach Redis (`Bus::flushed`).
const FLUSH_WAIT: Duration = Duration::from_millis(200);

enum Outgoing {
    Row {
        row: StreamRow,
        typers: Option<Vec<String>>,
    },
    Invalidate {
        seq: u64,
        what: Invalidation,
    },
    /// Answered once every entry queued before it was written to Redis (or given up on).
    Flushed(tokio::sync::oneshot::Sender<()>),
}

pub struct RedisBus {
    local: InProcessBus,
    typing: Arc<TypingStore>,
    queue: mpsc::Sender<Outgoing>,
    invalidations: AtomicU64,
    counts: Arc<Counts>,
}

impl RedisBus {
    /// Starts the publishing task. `epoch` identifies this run of the master (typing positions
    /// and invalidation sequence numbers restart with it).
    pub fn start(
        local: InProcessBus,
        typing: Arc<TypingStore>,
        redis_url: &str,
        maxlen: u64,
        epoch: u64,
        metrics: Option<Arc<ganglion_metrics::ReplicationMetrics>>,
    ) -> Result<RedisBus, redis::RedisError> {
        let client = redis::Client::open(redis_url)?;
        let (queue, outgoing) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts { dropped: AtomicU64::new(0), metrics });
        tokio::spawn(run(client, outgoing, maxlen, epoch, counts.clone()));
        Ok(RedisBus { local, typing, queue, invalidations: AtomicU64::new(0), counts })
    }

    /// Entries that never reached Redis (queue full or Redis unreachable).
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    fn enqueue(&self, outgoing: Outgoing) {
        if self.queue.try_send(outgoing).is_err() {
            self.counts.dropped(1);
        }
    }
}

/// What the publishing task counts: entries that never reached Redis, and its connections.
struct Counts {
    dropped: AtomicU64,
    metrics: Option<Arc<ganglion_metrics::ReplicationMetrics>>,
}

impl Counts {
    fn dropped(&self, entries: usize) {
        self.dropped.fetch_add(entries as u64, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.redis_dropped(entries as u64);
        }
    }

    fn connected(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.redis_connected();
        }
    }
}

impl RedisBus {
    fn enqueue_row(&self, row: &StreamRow) {
        let typers = match (row.kind, &row.room_id) {
            (StreamKind::Typing, Some(room)) => Some(self.typing.typing_in_room(room)),
            _ => None,
        };
        self.enqueue(Outgoing::Row { row: row.clone(), typers });
    }
}

impl Bus for RedisBus {
    fn publish(&self, row: StreamRow) {
        self.enqueue_row(&row);
        self.local.publish(row);
    }

    fn publish_all(&self, rows: Vec<StreamRow>) {
        for row in &rows {
            self.enqueue_row(row);
        }
        self.local.publish_all(rows);
    }

    fn invalidate(&self, what: Invalidation) {
        let seq = self.invalidations.fetch_add(1, Ordering::AcqRel) + 1;
        self.enqueue(Outgoing::Invalidate { seq, what });
    }

    fn flushed(&self) -> crate::BoxFuture<'_, ()> {
        let (done, flushed) = tokio::sync::oneshot::channel();
        self.enqueue(Outgoing::Flushed(done));
        Box::pin(async move {
            let _ = tokio::time::timeout(FLUSH_WAIT, flushed).await;
        })
    }
}

async fn run(
    client: redis::Client,
    mut outgoing: mpsc::Receiver<Outgoing>,
    maxlen: u64,
    epoch: u64,
    counts: Arc<Counts>,
) {
    let mut connection: Option<MultiplexedConnection> = None;
    let mut outage = Outage::new("publisher");
    let mut batch = Vec::with_capacity(PIPELINE);
    let mut flushed = Vec::new();
    while outgoing.recv_many(&mut batch, PIPELINE).await > 0 {
        // Markers are answered after this batch, whatever becomes of it.
        for marker in batch.extract_if(.., |entry| matches!(entry, Outgoing::Flushed(_))) {
            if let Outgoing::Flushed(done) = marker {
                flushed.push(done);
            }
        }
        publish_batch(&client, &mut connection, &mut outage, &mut batch, maxlen, epoch, &counts).await;
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn publish_batch(
    client: &redis::Client,
    connection: &mut Option<MultiplexedConnection>,
    outage: &mut Outage,
    batch: &mut Vec<Outgoing>,
    maxlen: u64,
    epoch: u64,
    counts: &Counts,
) {
    if batch.is_empty() {
        return;
    }
    if connection.is_none() && outage.may_retry(Instant::now()) {
        match connect(client).await {
            Ok(connected) => {
                counts.connected();
                *connection = Some(connected);
            }
            // Don't stall the queue on a dead Redis: drop for a while, workers poll meanwhile.
            Err(error) => outage.failed(Instant::now(), "cannot reach Redis", &error),
        }
    }
    let Some(conn) = connection.as_mut() else {
        counts.dropped(batch.len());
        outage.dropped(batch.len() as u64);
        batch.clear();
        return;
    };
    let pipe = pipeline(batch, maxlen, epoch);
    let result = tokio::time::timeout(REDIS_DEADLINE, pipe.query_async::<()>(conn)).await;
    match result {
        Ok(Ok(())) => {
            outage.recovered(Instant::now());
        }
        Ok(Err(error)) if error.to_string().contains("equal or smaller") => {
            // Redis holds positions from another database (restored or reset): start the
            // streams afresh; workers notice the gap and read the database.
            tracing::warn!(%error, "Redis streams are ahead of the database; resetting them");
            let mut reset = redis::pipe();
            for kind in DB_STREAMS {
                reset.cmd("DEL").arg(key_of(kind)).ignore();
            }
            let _ = reset.query_async::<()>(conn).await;
            outage.recovered(Instant::now());
            if pipe.query_async::<()>(conn).await.is_err() {
                counts.dropped(batch.len());
            }
        }
        Ok(Err(error)) => {
            outage.failed(Instant::now(), "publishing to Redis failed", &error);
            counts.dropped(batch.len());
            outage.dropped(batch.len() as u64);
            *connection = None;
        }
        Err(_) => {
            outage.failed(Instant::now(), "publishing to Redis failed", &"timed out");
            counts.dropped(batch.len());
            outage.dropped(batch.len() as u64);
            *connection = None;
        }
    }
    batch.clear();
}

async fn connect(client: &redis::Client) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(REDIS_DEADLINE));
    client.get_multiplexed_async_connection_with_config(&config).await
}

fn pipeline(batch: &[Outgoing], maxlen: u64, epoch: u64) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    let now = now_us();
    for outgoing in batch {
        match outgoing {
            Outgoing::Row { row, typers } => {
                let cmd = pipe.cmd("XADD").arg(key_of(row.kind)).arg("MAXLEN").arg("~").arg(maxlen);
                // Database-backed rows are addressed by position, so readers resume exactly.
                if row.kind == StreamKind::Typing {
                    cmd.arg("*").arg("e").arg(epoch);
                } else {
                    cmd.arg(format!("{}-0", row.position.0));
                }
                cmd.arg("p").arg(row.position.0).arg("t").arg(now);
                if let Some(trace) = &row.trace {
                    cmd.arg("tp").arg(&**trace);
                }
                if let Some(room) = &row.room_id {
                    cmd.arg("r").arg(room.as_ref());
                }
                if let Some(nid) = row.event_nid {
                    cmd.arg("n").arg(nid.0);
                }
                if let Some(event) = &row.event {
                    cmd.arg("ev").arg(super::encode_event(event));
                    if let Some(txn) = &row.event_txn {
                        cmd.arg("tx").arg(super::encode_txn(txn));
                    }
                }
                if let Some(receipt) = &row.receipt {
                    cmd.arg("rc").arg(super::encode_receipt(receipt));
                }
                if let Some(push) = &row.push {
                    cmd.arg("pa").arg(super::encode_push(push));
                }
                let users: Vec<&str> = match typers {
                    Some(typers) => typers.iter().map(String::as_str).collect(),
                    None => row.user_ids.iter().map(|u| u.as_ref()).collect(),
                };
                cmd.arg("u").arg(serde_json::to_string(&users).unwrap_or_else(|_| "[]".into()));
                cmd.ignore();
            }
            Outgoing::Flushed(_) => {}
            Outgoing::Invalidate { seq, what } => {
                let cmd = pipe.cmd("XADD").arg(CACHES_KEY).arg("MAXLEN").arg("~").arg(maxlen).arg("*");
                cmd.arg("e").arg(epoch).arg("s").arg(*seq).arg("t").arg(now);
                match what {
                    Invalidation::Sessions => cmd.arg("w").arg("sessions"),
                    Invalidation::Event(nid) => cmd.arg("w").arg("event").arg("n").arg(nid.0),
                    Invalidation::KeyCounts { user_id, device_id } => cmd
                        .arg("w")
                        .arg("keys")
                        .arg("u")
                        .arg(user_id.as_ref())
                        .arg("d")
                        .arg(device_id.as_ref()),
                    Invalidation::AllKeyCounts => cmd.arg("w").arg("all_keys"),
                };
                cmd.ignore();
            }
        }
    }
    pipe
}
