//! What a worker adds around the master's gRPC client: read-your-writes, and the hooks its
//! replication follower calls.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use ganglion_replication::{
    BoxFuture, CatchUp, Invalidation,
    redis::{FollowerHooks, TypingState},
};
use ganglion_rpc::{Master, grpc::ReadYourWrites};
use ganglion_state::Caches;
use ganglion_types::SyncToken;

/// After a call that advanced a stream, waits (bounded) until this worker's replication has
/// the write, so the client's next read here sees it; after a call that revoked sessions, drops
/// this worker's cached sessions at once rather than when the invalidation arrives.
pub struct OwnWrites {
    pub catch_up: Arc<dyn CatchUp>,
    pub caches: Arc<Caches>,
    pub wait: Duration,
}

#[async_trait]
impl ReadYourWrites for OwnWrites {
    async fn reach(&self, mut positions: SyncToken) {
        // Typing is ephemeral and may only arrive through Redis: never wait on it.
        positions.typing_epoch = u64::MAX;
        if !self.catch_up.reach(positions, self.wait).await {
            tracing::warn!("replication did not reach this worker's own write in time");
        }
    }

    fn forget_sessions(&self) {
        self.caches.forget_sessions();
    }
}

/// The follower's view of the rest of the worker.
pub struct WorkerHooks {
    pub master: Arc<dyn Master>,
    pub caches: Arc<Caches>,
}

impl FollowerHooks for WorkerHooks {
    fn typing_snapshot(&self) -> BoxFuture<'_, Option<TypingState>> {
        Box::pin(async move {
            let snapshot = self.master.typing_snapshot().await.ok()?;
            Some((snapshot.epoch, snapshot.position, snapshot.rooms))
        })
    }

    fn remember_event(&self, row: ganglion_storage::events::EventRow, txn: Option<(String, String)>) {
        if let Ok(event) = ganglion_state::StoredEvent::from_row(row) {
            let txn = txn.as_ref().map(|(device, txn_id)| (device.as_str(), txn_id.as_str()));
            self.caches.remember_event_txn(event.row.event_nid, txn);
            self.caches.remember_event(event);
        }
    }

    fn invalidate(&self, what: Option<Invalidation>) {
        match what {
            None => self.caches.clear(),
            Some(Invalidation::Sessions) => self.caches.forget_sessions(),
            Some(Invalidation::Event(nid)) => self.caches.forget_event(nid),
            Some(Invalidation::KeyCounts { user_id, device_id }) => {
                self.caches.forget_key_counts(&user_id, &device_id)
            }
            Some(Invalidation::AllKeyCounts) => self.caches.forget_all_key_counts(),
        }
    }
}
