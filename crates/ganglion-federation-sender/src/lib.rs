//! Outbound federation: what other servers are owed waits in the database (the outbox, written
//! in the same transaction as what caused it) until the destination takes it, so restarts and
//! outages lose nothing. Each destination gets its EDUs in queue order, at most 100 per
//! transaction, one transaction in flight at a time; a destination that fails is retried after a
//! back-off that starts short (one 5xx costs a second, not an hour) and doubles up to a cap,
//! while the others go on.
//!
//! The outbox holds to-device messages (`m.direct_to_device`), typing notifications, read
//! receipts and presence of our users, and our events in rooms shared with the destination (at
//! most 50 per transaction, in the order they were persisted). `role = "all"` runs the sender in
//! process; a cluster's `federation-sender` instances share the destinations between them by a
//! stable hash of the destination's name (the master sends when the cluster has none), and take
//! the new shares when SIGHUP reloads a changed `instance_map`. A sender killed midway loses
//! nothing: rows leave the outbox only once their destination took them, and the destination
//! recognises a resent transaction by its id (derived from the rows it carries). A typing notification is only worth sending while it is fresh: one queued longer
//! than `TYPING_LIFETIME` (30 s) is dropped, sent or not, so an outage does not end in a burst of
//! stale ones.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use ganglion_config::Duty;
use ganglion_events::ruma::ServerName;
use ganglion_federation::FederationClient;
use ganglion_metrics::{FederationMetrics, TransactionResult};
use ganglion_storage::{
    Db,
    federation::{OutboxPdu, OutboxRow},
};
use serde_json::{Value, json, value::RawValue};

/// The spec's bounds on EDUs and PDUs per transaction.
const MAX_EDUS_PER_TRANSACTION: usize = 100;
const MAX_PDUS_PER_TRANSACTION: usize = 50;
/// How often the outbox is looked at when nothing wakes the sender sooner.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(10 * 60);
/// How long a queued `m.typing` EDU is worth sending: clients repeat theirs every few seconds
/// while typing, and the receiving server forgets it after a minute.
const TYPING_LIFETIME: Duration = Duration::from_secs(30);
/// How often stale typing notifications are deleted from the whole outbox (those of a
/// destination that is down would otherwise pile up behind what it has not taken).
const TYPING_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// A destination that failed: not tried again before `until`.
#[derive(Clone, Copy)]
struct Backoff {
    until: Instant,
    interval: Duration,
}

pub struct Sender {
    db: Db,
    client: Arc<FederationClient>,
    duty: tokio::sync::watch::Receiver<Duty>,
    metrics: Arc<FederationMetrics>,
    backoff: HashMap<String, Backoff>,
    last_typing_purge: Option<Instant>,
}

impl Sender {
    /// A sender doing what `duty` says, now and after each change.
    pub fn new(
        db: Db,
        client: Arc<FederationClient>,
        duty: tokio::sync::watch::Receiver<Duty>,
        metrics: Arc<FederationMetrics>,
    ) -> Sender {
        Sender { db, client, duty, metrics, backoff: HashMap::new(), last_typing_purge: None }
    }

    /// Sends until the process ends.
    pub async fn run(mut self) {
        loop {
            let duty = *self.duty.borrow_and_update();
            if duty != Duty::Nothing
                && let Err(error) = self.round(duty).await
            {
                tracing::warn!(%error, "reading the federation outbox failed");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// One pass over the outbox: a transaction to every destination that has EDUs and is not
    /// backing off, all at once.
    async fn round(&mut self, duty: Duty) -> Result<(), ganglion_storage::StorageError> {
        let now = Instant::now();
        let mut by_destination: BTreeMap<String, Queued> = BTreeMap::new();
        {
            let mut conn = self.db.conn().await?;
            if self.last_typing_purge.is_none_or(|last| now - last >= TYPING_PURGE_INTERVAL) {
                let purged = ganglion_storage::federation::delete_outbox_edus_queued_before(
                    &mut conn,
                    "m.typing",
                    typing_cutoff(),
                )
                .await?;
                if purged > 0 {
                    tracing::debug!(purged, "stale typing notifications dropped from the outbox");
                }
                self.last_typing_purge = Some(now);
            }
            // Each destination's own head of the queue: one that backs off never hides the others.
            let (mut queued, mut backing_off) = (0, 0);
            for destination in ganglion_storage::federation::outbox_destinations(&mut conn).await? {
                if !duty.covers(&destination) {
                    continue;
                }
                queued += 1;
                if self.backoff.get(&destination).is_some_and(|backoff| backoff.until > now) {
                    backing_off += 1;
                    continue;
                }
                let limit = MAX_EDUS_PER_TRANSACTION as i64;
                let edus =
                    ganglion_storage::federation::outbox_edus_for(&mut conn, &destination, limit).await?;
                let limit = MAX_PDUS_PER_TRANSACTION as i64;
                let pdus =
                    ganglion_storage::federation::outbox_pdus_for(&mut conn, &destination, limit).await?;
                by_destination.insert(destination, Queued { edus, pdus });
            }
            self.metrics.destinations(queued, backing_off);
        }
        let sends = by_destination.into_iter().map(|(destination, queued)| {
            let (client, db, metrics) = (self.client.clone(), self.db.clone(), self.metrics.clone());
            async move {
                let started = Instant::now();
                let result = traced(&destination, &queued, send_transaction(&client, &destination, &queued)).await;
                // Refused for good (a 4xx other than 429): sending it again would be refused
                // again, and would hold up what comes after it.
                let refused = matches!(
                    &result,
                    Err(ganglion_federation::FederationError::Remote { status, .. })
                        if (400..500).contains(status) && *status != 429
                );
                let counted = match (&result, refused) {
                    (Ok(()), _) => TransactionResult::Ok,
                    (Err(_), true) => TransactionResult::Refused,
                    (Err(_), false) => TransactionResult::Failed,
                };
                metrics.sent(counted, queued.pdus.len() as u64, queued.edus.len() as u64, started.elapsed());
                if refused {
                    tracing::warn!(%destination, error = ?result, edus = queued.edus.len(), pdus = queued.pdus.len(), "a destination refused a transaction; its contents are dropped");
                }
                // A PDU the destination took but refused on its own (its answer names it) is
                // done with too: it never holds up the queue behind it.
                if result.is_ok() || refused {
                    let ids: Vec<i64> = queued.edus.iter().map(|row| row.id).collect();
                    let mut conn = db.conn().await?;
                    ganglion_storage::federation::delete_outbox_edus(&mut conn, &ids).await?;
                    let ids: Vec<i64> = queued.pdus.iter().map(|pdu| pdu.id).collect();
                    ganglion_storage::federation::delete_outbox_pdus(&mut conn, &ids).await?;
                }
                Ok::<_, ganglion_storage::StorageError>((destination, result))
            }
        });
        for outcome in futures_util::future::join_all(sends).await {
            let (destination, result) = outcome?;
            match result {
                Ok(())
                | Err(ganglion_federation::FederationError::Remote {
                    status: 400..=428 | 430..=499, ..
                }) => {
                    if self.backoff.remove(&destination).is_some() {
                        tracing::info!(%destination, "a destination takes transactions again");
                    }
                }
                Err(error) => {
                    let interval = self
                        .backoff
                        .get(&destination)
                        .map_or(FIRST_RETRY, |backoff| (backoff.interval * 2).min(MAX_RETRY));
                    tracing::info!(%destination, %error, retry_in = ?interval, "a transaction failed");
                    self.backoff.insert(destination, Backoff { until: Instant::now() + interval, interval });
                }
            }
        }
        Ok(())
    }
}

/// Runs `send` in a span of the trace of the client request that made the transaction's first
/// PDU (linked to the others' by their ids in the span's fields), when traces are exported.
async fn traced<T>(destination: &str, queued: &Queued, send: impl std::future::Future<Output = T>) -> T {
    use tracing::Instrument as _;
    let Some(traceparent) = queued.pdus.iter().find_map(|pdu| pdu.traceparent.as_deref()) else {
        return send.await;
    };
    if !ganglion_telemetry::exporting() {
        return send.await;
    }
    let span = tracing::info_span!(
        "federation.transaction",
        otel.name = "federation.transaction",
        otel.kind = "client",
        destination = %destination,
        pdus = queued.pdus.len(),
        edus = queued.edus.len(),
    );
    ganglion_telemetry::continue_trace(&span, traceparent);
    send.instrument(span).await
}

/// What one transaction to a destination carries.
struct Queued {
    edus: Vec<OutboxRow>,
    pdus: Vec<OutboxPdu>,
}

/// `PUT /_matrix/federation/v1/send/{txnId}` with the queued PDUs and EDUs. The transaction id
/// names the rows it carries, so a retry of the same ones is recognised by the destination.
async fn send_transaction(
    client: &FederationClient,
    destination: &str,
    queued: &Queued,
) -> Result<(), ganglion_federation::FederationError> {
    let rows = &queued.edus;
    let server =
        ServerName::parse(destination).map_err(|error| ganglion_federation::FederationError::Refused {
            destination: destination.to_owned(),
            reason: format!("not a server name: {error}"),
        })?;
    let cutoff = typing_cutoff();
    let edus: Vec<Value> = rows
        .iter()
        .filter(|row| row.edu_type != "m.typing" || row.created_ts >= cutoff)
        .filter_map(|row| {
            let content: Value = serde_json::from_str(&row.content_json).ok()?;
            Some(json!({ "edu_type": row.edu_type, "content": content }))
        })
        .collect();
    let pdus: Vec<&RawValue> =
        queued.pdus.iter().filter_map(|pdu| serde_json::from_str::<&RawValue>(&pdu.json).ok()).collect();
    if edus.is_empty() && pdus.is_empty() {
        // Only stale typing notifications: nothing to send, and they go all the same.
        return Ok(());
    }
    let span = |ids: &mut dyn Iterator<Item = i64>| {
        let ids: Vec<i64> = ids.collect();
        (ids.first().copied().unwrap_or(0), ids.last().copied().unwrap_or(0))
    };
    let (first_edu, last_edu) = span(&mut rows.iter().map(|row| row.id));
    let (first_pdu, last_pdu) = span(&mut queued.pdus.iter().map(|pdu| pdu.id));
    let body = json!({
        "origin": client.server_name().as_str(),
        "origin_server_ts": ganglion_storage::now_ms(),
        "pdus": pdus,
        "edus": edus,
    });
    let path = format!(
        "/_matrix/federation/v1/send/{}",
        ganglion_federation::client::encode(&format!("e{first_edu}-{last_edu}p{first_pdu}-{last_pdu}"))
    );
    client.request(http::Method::PUT, &server, &path, Some(&body)).await?;
    Ok(())
}

/// Typing notifications queued before this (ms since the epoch) are stale.
fn typing_cutoff() -> i64 {
    ganglion_storage::now_ms() - TYPING_LIFETIME.as_millis() as i64
}
