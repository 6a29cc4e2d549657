//! Group commit for client sends: concurrent `send_event` calls queue here and one task persists
//! whatever has queued up in a single transaction, so a burst of N sends costs one commit, not N.

use std::collections::HashMap;

use ganglion_events::{
    EventTemplate,
    ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId},
};
use ganglion_rpc::{MasterError, MasterResult};
use tokio::sync::{mpsc, oneshot};

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
    // Transaction ids seen in this batch, for retries that arrive before the first commit.
    let mut txns: HashMap<(OwnedUserId, OwnedDeviceId, String), OwnedEventId> = HashMap::new();
    for job in jobs {
        let txn_key = match (&job.device_id, &job.txn_id) {
            (Some(device_id), Some(txn_id)) => Some((job.sender.clone(), device_id.clone(), txn_id.clone())),
            _ => None,
        };
        if let Some(key) = &txn_key {
            if let Some(event_id) = txns.get(key) {
                accepted.push((job.reply, event_id.clone()));
                continue;
            }
            match batch.event_id_by_txn(&key.0, &key.1, &key.2).await {
                Ok(Some(event_id)) => {
                    let _ = job.reply.send(Ok(event_id));
                    continue;
                }
                Ok(None) => {}
                Err(error) => return fail_all(batch, accepted, job.reply, error),
            }
        }
        match rooms::append_send(
            &mut batch,
            &job.sender,
            &job.room_id,
            &job.template,
            job.device_id.as_ref(),
            job.txn_id.as_deref(),
        )
        .await
        {
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
