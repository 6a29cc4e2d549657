//! Group commit for client sends: concurrent `send_event` calls queue here and one task persists
//! whatever has queued up in a single transaction, so a burst of N sends costs one commit, not N.

use std::collections::HashMap;

use ganglion_events::{
    EventTemplate,
    ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId},
};
use ganglion_rpc::{MasterError, MasterResult};
use ganglion_storage::events::TxnKey;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::{MasterService, internal, rooms, writer::Batch};

/// Most sends persisted in one transaction.
const MAX_BATCH: usize = 256;

pub(crate) struct SendJob {
    pub sender: OwnedUserId,
    pub device_id: Option<OwnedDeviceId>,
    pub room_id: OwnedRoomId,
    pub template: EventTemplate,
    pub txn_id: Option<String>,
    pub reply: oneshot::Sender<MasterResult<OwnedEventId>>,
    /// The caller's span: the event's persisting is traced as its child.
    pub span: tracing::Span,
}

pub(crate) type SendQueue = mpsc::Sender<SendJob>;

/// Runs until every sender of the queue is dropped.
pub(crate) async fn run(svc: &MasterService, mut jobs: mpsc::Receiver<SendJob>) {
    let mut pending = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut pending, MAX_BATCH).await > 0 {
        persist_batch(svc, std::mem::take(&mut pending)).await;
    }
}

async fn persist_batch(svc: &MasterService, jobs: Vec<SendJob>) {
    let mut batch = match Batch::begin(svc).await {
        Ok(batch) => batch,
        Err(error) => {
            for job in jobs {
                let _ = job.reply.send(Err(error.clone()));
            }
            return;
        }
    };
    let mut accepted: Vec<(oneshot::Sender<MasterResult<OwnedEventId>>, OwnedEventId)> = Vec::new();
    let keys: Vec<TxnKey> = jobs.iter().filter_map(txn_key).collect();
    // Transaction ids sent before, looked up once for the whole batch.
    let sent_before = match batch.event_ids_by_txns(&keys).await {
        Ok(sent_before) => sent_before,
        Err(error) => {
            drop(batch);
            for job in jobs {
                let _ = job.reply.send(Err(error.clone()));
            }
            return;
        }
    };
    // Transaction ids seen in this batch, for retries that arrive before the first commit.
    let mut txns: HashMap<TxnKey, OwnedEventId> = HashMap::new();
    for job in jobs {
        let txn_key = txn_key(&job);
        if let Some(event_id) = txn_key.as_ref().and_then(|key| sent_before.get(key)) {
            let _ = job.reply.send(Ok(event_id.clone()));
            continue;
        }
        if let Some(event_id) = txn_key.as_ref().and_then(|key| txns.get(key)) {
            accepted.push((job.reply, event_id.clone()));
            continue;
        }
        let appended = rooms::append_send(
            &mut batch,
            &job.sender,
            &job.room_id,
            &job.template,
            job.device_id.as_ref(),
            job.txn_id.as_deref(),
        );
        // Entering the caller's span on every poll costs; only an exported trace needs it.
        let appended = if ganglion_telemetry::exporting() {
            appended.instrument(job.span.clone()).await
        } else {
            appended.await
        };
        match appended {
            Ok(event_id) => {
                if let Some(key) = txn_key {
                    txns.insert(key, event_id.clone());
                }
                accepted.push((job.reply, event_id));
            }
            // Build and auth failures happen before anything is written: only this send fails.
            Err(error) if !batch.is_poisoned() => {
                let _ = job.reply.send(Err(error));
            }
            Err(error) => return fail_all(batch, accepted, job.reply, error),
        }
    }
    match batch.commit().await {
        Ok(_) => {
            for (reply, event_id) in accepted {
                let _ = reply.send(Ok(event_id));
            }
        }
        Err(error) => {
            for (reply, _) in accepted {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// The client transaction id a send is idempotent under, if it has one.
fn txn_key(job: &SendJob) -> Option<TxnKey> {
    let (device_id, txn_id) = (job.device_id.as_ref()?, job.txn_id.as_ref()?);
    Some((job.sender.to_string(), device_id.to_string(), txn_id.clone()))
}

/// A database error mid-batch: the transaction is lost, so every send in it fails.
fn fail_all(
    batch: Batch<'_>,
    accepted: Vec<(oneshot::Sender<MasterResult<OwnedEventId>>, OwnedEventId)>,
    reply: oneshot::Sender<MasterResult<OwnedEventId>>,
    error: MasterError,
) {
    drop(batch);
    let _ = reply.send(Err(error.clone()));
    for (reply, _) in accepted {
        let _ = reply.send(Err(error.clone()));
    }
}

/// Queues a send and waits for its commit.
pub(crate) async fn submit(
    queue: &SendQueue,
    job_without_reply: impl FnOnce(oneshot::Sender<MasterResult<OwnedEventId>>) -> SendJob,
) -> MasterResult<OwnedEventId> {
    let (reply, answer) = oneshot::channel();
    queue
        .send(job_without_reply(reply))
        .await
        .map_err(|_| MasterError::new(ganglion_types::ErrorClass::Unavailable, "writer stopped"))?;
    answer.await.map_err(|_| internal(WriterGone))?
}

#[derive(Debug, thiserror::Error)]
#[error("the event writer stopped before answering")]
struct WriterGone;

impl ganglion_types::HasErrorClass for WriterGone {
    fn class(&self) -> ganglion_types::ErrorClass {
        ganglion_types::ErrorClass::Unavailable
    }
}
