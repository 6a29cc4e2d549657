//! What a worker adds around the master's gRPC client: read-your-writes, and the hooks its
//! replication follower calls.

use std::{future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use ganglion_events::{
    EventTemplate,
    ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId},
};
use ganglion_replication::{
    BoxFuture, CatchUp, Invalidation,
    redis::{FollowerHooks, TypingState},
};
use ganglion_rpc::{
    CreateRoomRequest, LoginRequest, Master, MasterResult, MembershipChange, ProfileField, RegisterRequest,
    SessionGrant, TypingSnapshot,
};
use ganglion_state::Caches;
use ganglion_types::SyncToken;
use serde_json::Value;

/// The master as a worker sees it. After a write it waits (bounded) until this worker's
/// replication has the write, so the client's next read here sees it; after revoking sessions
/// it drops this worker's cached sessions at once rather than when the invalidation arrives.
pub struct WorkerMaster {
    remote: Arc<dyn Master>,
    catch_up: Arc<dyn CatchUp>,
    caches: Arc<Caches>,
    wait: Duration,
}

impl WorkerMaster {
    pub fn new(
        remote: Arc<dyn Master>,
        catch_up: Arc<dyn CatchUp>,
        caches: Arc<Caches>,
        wait: Duration,
    ) -> Self {
        WorkerMaster { remote, catch_up, caches, wait }
    }

    async fn settle<T>(&self, call: impl Future<Output = MasterResult<T>>) -> MasterResult<T> {
        let (result, after) = ganglion_rpc::grpc::with_positions_after(call).await;
        let value = result?;
        let after = match after {
            Some(token) => Some(token),
            None => self.remote.positions().await.ok(),
        };
        if let Some(mut token) = after {
            // Typing is ephemeral and may only arrive through Redis: never wait on it.
            token.typing_epoch = u64::MAX;
            if !self.catch_up.reach(token, self.wait).await {
                tracing::warn!("replication did not reach this worker's own write in time");
            }
        }
        Ok(value)
    }

    async fn sessions_changed<T>(&self, result: MasterResult<T>) -> MasterResult<T> {
        if result.is_ok() {
            self.caches.forget_sessions();
        }
        result
    }
}

#[async_trait]
impl Master for WorkerMaster {
    async fn positions(&self) -> MasterResult<SyncToken> {
        self.remote.positions().await
    }

    async fn typing_snapshot(&self) -> MasterResult<TypingSnapshot> {
        self.remote.typing_snapshot().await
    }

    async fn register(&self, request: RegisterRequest) -> MasterResult<SessionGrant> {
        self.settle(self.remote.register(request)).await
    }

    async fn login(&self, request: LoginRequest) -> MasterResult<SessionGrant> {
        // Naming an existing device revokes its old token: drop this worker's sessions at once.
        if request.device_id.is_some() {
            return self.sessions_changed(self.remote.login(request).await).await;
        }
        self.remote.login(request).await
    }

    async fn check_password(&self, user_id: &OwnedUserId, password: &str) -> MasterResult<bool> {
        self.remote.check_password(user_id, password).await
    }

    async fn logout(&self, access_token: &str) -> MasterResult<()> {
        self.sessions_changed(self.remote.logout(access_token).await).await
    }

    async fn logout_all(&self, user_id: &OwnedUserId) -> MasterResult<()> {
        self.sessions_changed(self.remote.logout_all(user_id).await).await
    }

    async fn set_password(
        &self,
        user_id: &OwnedUserId,
        new_password: &str,
        logout_devices: bool,
        keep_device: Option<&OwnedDeviceId>,
    ) -> MasterResult<()> {
        let result = self.remote.set_password(user_id, new_password, logout_devices, keep_device).await;
        self.sessions_changed(result).await
    }

    async fn delete_devices(&self, user_id: &OwnedUserId, device_ids: &[OwnedDeviceId]) -> MasterResult<()> {
        self.sessions_changed(self.remote.delete_devices(user_id, device_ids).await).await
    }

    async fn rename_device(
        &self,
        user_id: &OwnedUserId,
        device_id: &OwnedDeviceId,
        name: &str,
    ) -> MasterResult<()> {
        self.remote.rename_device(user_id, device_id, name).await
    }

    async fn create_room(
        &self,
        sender: &OwnedUserId,
        request: CreateRoomRequest,
    ) -> MasterResult<OwnedRoomId> {
        self.settle(self.remote.create_room(sender, request)).await
    }

    async fn send_event(
        &self,
        sender: &OwnedUserId,
        device_id: Option<&OwnedDeviceId>,
        room_id: &OwnedRoomId,
        template: EventTemplate,
        txn_id: Option<&str>,
    ) -> MasterResult<OwnedEventId> {
        self.settle(self.remote.send_event(sender, device_id, room_id, template, txn_id)).await
    }

    async fn update_membership(
        &self,
        sender: &OwnedUserId,
        room_id: &OwnedRoomId,
        target: &OwnedUserId,
        change: MembershipChange,
        reason: Option<String>,
    ) -> MasterResult<OwnedEventId> {
        self.settle(self.remote.update_membership(sender, room_id, target, change, reason)).await
    }

    async fn forget_room(&self, user_id: &OwnedUserId, room_id: &OwnedRoomId) -> MasterResult<()> {
        self.remote.forget_room(user_id, room_id).await
    }

    async fn set_profile(
        &self,
        user_id: &OwnedUserId,
        field: ProfileField,
        value: Option<String>,
    ) -> MasterResult<()> {
        self.settle(self.remote.set_profile(user_id, field, value)).await
    }

    async fn set_typing(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        typing: bool,
        timeout_ms: u64,
    ) -> MasterResult<()> {
        self.remote.set_typing(user_id, room_id, typing, timeout_ms).await
    }

    async fn set_receipt(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        receipt_type: &str,
        event_id: &OwnedEventId,
        thread_id: Option<String>,
    ) -> MasterResult<()> {
        self.settle(self.remote.set_receipt(user_id, room_id, receipt_type, event_id, thread_id)).await
    }

    async fn set_account_data(
        &self,
        user_id: &OwnedUserId,
        room_id: Option<&OwnedRoomId>,
        data_type: &str,
        content: Value,
    ) -> MasterResult<()> {
        self.settle(self.remote.set_account_data(user_id, room_id, data_type, content)).await
    }

    async fn create_filter(&self, user_id: &OwnedUserId, filter: Value) -> MasterResult<String> {
        self.remote.create_filter(user_id, filter).await
    }

    async fn set_alias(
        &self,
        user_id: &OwnedUserId,
        alias: &OwnedRoomAliasId,
        room_id: &OwnedRoomId,
    ) -> MasterResult<()> {
        self.remote.set_alias(user_id, alias, room_id).await
    }

    async fn delete_alias(&self, user_id: &OwnedUserId, alias: &OwnedRoomAliasId) -> MasterResult<()> {
        self.remote.delete_alias(user_id, alias).await
    }

    async fn set_room_visibility(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        public: bool,
    ) -> MasterResult<()> {
        self.remote.set_room_visibility(user_id, room_id, public).await
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

    fn remember_event(&self, row: ganglion_storage::events::EventRow) {
        if let Ok(event) = ganglion_state::StoredEvent::from_row(row) {
            self.caches.remember_event(event);
        }
    }

    fn invalidate(&self, what: Option<Invalidation>) {
        match what {
            None => self.caches.clear(),
            Some(Invalidation::Sessions) => self.caches.forget_sessions(),
            Some(Invalidation::Event(nid)) => self.caches.forget_event(nid),
        }
    }
}
