//! The master role: the single writer of the events, receipts, typing and account-data streams
//! and of accounts. It builds each event for its room version, checks it against the auth rules
//! and the room's current state, persists it (event, state snapshot, room head, membership,
//! transaction id) in one database transaction, and only then publishes it on the bus.
//!
//! Invariant: positions on a stream are allocated under the writer lock and committed in the
//! same transaction as their rows, so readers never see a gap.

mod accounts;
mod ephemeral;
mod power;
mod rooms;
mod sends;
mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use ganglion_config::Config;
use ganglion_events::{
    EventTemplate, ServerKey,
    ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId},
};
use ganglion_replication::{Bus, Positions, TypingStore};
use ganglion_rpc::{
    CreateRoomRequest, LoginRequest, Master, MasterResult, MembershipChange, ProfileField, RegisterRequest,
    SessionGrant, TypingSnapshot,
};
use ganglion_state::Caches;
use ganglion_storage::Db;
use ganglion_types::SyncToken;
use serde_json::Value;
use tokio::sync::Mutex;

pub use writer::Writer;

pub struct MasterService {
    db: Db,
    caches: Arc<Caches>,
    key: Arc<ServerKey>,
    config: Arc<Config>,
    bus: Arc<dyn Bus>,
    typing: Arc<TypingStore>,
    /// Identifies this run of the master: typing positions restart with it.
    typing_epoch: u64,
    /// What has been committed and published, per stream.
    positions: Arc<Positions>,
    /// Invariant: held while allocating positions and persisting, so commits happen in
    /// position order.
    writer: Mutex<Writer>,
    /// Client sends, group-committed by the task started in `new`.
    send_queue: sends::SendQueue,
    /// Bounds concurrent argon2 runs: each takes ~19 MiB, and an allocator keeps what a burst of
    /// logins made it grow to.
    hashing: tokio::sync::Semaphore,
}

impl MasterService {
    /// Loads the streams' current positions from the database.
    pub async fn new(
        db: Db,
        caches: Arc<Caches>,
        key: Arc<ServerKey>,
        config: Arc<Config>,
        bus: Arc<dyn Bus>,
        typing: Arc<TypingStore>,
        positions: Arc<Positions>,
    ) -> MasterResult<Arc<MasterService>> {
        let writer = Writer::load(&db).await?;
        let (send_queue, jobs) = tokio::sync::mpsc::channel(4096);
        let service = Arc::new(MasterService {
            db,
            caches,
            key,
            config,
            bus,
            typing,
            typing_epoch: positions.typing_epoch(),
            positions,
            writer: Mutex::new(writer),
            send_queue,
            hashing: tokio::sync::Semaphore::new(2),
        });
        let task_service = service.clone();
        tokio::spawn(async move { sends::run(&task_service, jobs).await });
        Ok(service)
    }

    /// Expires typing notifications; run every second or so.
    pub fn expire_typing(&self) {
        for (room_id, position) in self.typing.expire(std::time::Instant::now()) {
            let row = ganglion_replication::StreamRow::new(
                ganglion_types::StreamKind::Typing,
                position,
                Some(room_id.as_str()),
                Vec::new(),
            );
            self.bus.publish(row);
        }
    }
}

#[async_trait]
impl Master for MasterService {
    async fn positions(&self) -> MasterResult<SyncToken> {
        Ok(self.positions.current())
    }

    async fn typing_snapshot(&self) -> MasterResult<TypingSnapshot> {
        let (position, rooms) = self.typing.snapshot();
        Ok(TypingSnapshot { epoch: self.typing_epoch, position, rooms })
    }

    async fn register(&self, request: RegisterRequest) -> MasterResult<SessionGrant> {
        accounts::register(self, request).await
    }

    async fn login(&self, request: LoginRequest) -> MasterResult<SessionGrant> {
        accounts::login(self, request).await
    }

    async fn check_password(&self, user_id: &OwnedUserId, password: &str) -> MasterResult<bool> {
        accounts::check_password(self, user_id, password).await
    }

    async fn logout(&self, access_token: &str) -> MasterResult<()> {
        accounts::logout(self, access_token).await
    }

    async fn logout_all(&self, user_id: &OwnedUserId) -> MasterResult<()> {
        accounts::logout_all(self, user_id).await
    }

    async fn set_password(
        &self,
        user_id: &OwnedUserId,
        new_password: &str,
        logout_devices: bool,
        keep_device: Option<&OwnedDeviceId>,
    ) -> MasterResult<()> {
        accounts::set_password(self, user_id, new_password, logout_devices, keep_device).await
    }

    async fn delete_devices(&self, user_id: &OwnedUserId, device_ids: &[OwnedDeviceId]) -> MasterResult<()> {
        accounts::delete_devices(self, user_id, device_ids).await
    }

    async fn rename_device(
        &self,
        user_id: &OwnedUserId,
        device_id: &OwnedDeviceId,
        name: &str,
    ) -> MasterResult<()> {
        accounts::rename_device(self, user_id, device_id, name).await
    }

    async fn create_room(
        &self,
        sender: &OwnedUserId,
        request: CreateRoomRequest,
    ) -> MasterResult<OwnedRoomId> {
        rooms::create_room(self, sender, request).await
    }

    async fn send_event(
        &self,
        sender: &OwnedUserId,
        device_id: Option<&OwnedDeviceId>,
        room_id: &OwnedRoomId,
        template: EventTemplate,
        txn_id: Option<&str>,
    ) -> MasterResult<OwnedEventId> {
        rooms::send_event(self, sender, device_id, room_id, template, txn_id).await
    }

    async fn update_membership(
        &self,
        sender: &OwnedUserId,
        room_id: &OwnedRoomId,
        target: &OwnedUserId,
        change: MembershipChange,
        reason: Option<String>,
    ) -> MasterResult<OwnedEventId> {
        rooms::update_membership(self, sender, room_id, target, change, reason).await
    }

    async fn forget_room(&self, user_id: &OwnedUserId, room_id: &OwnedRoomId) -> MasterResult<()> {
        rooms::forget_room(self, user_id, room_id).await
    }

    async fn set_profile(
        &self,
        user_id: &OwnedUserId,
        field: ProfileField,
        value: Option<String>,
    ) -> MasterResult<()> {
        rooms::set_profile(self, user_id, field, value).await
    }

    async fn set_typing(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        typing: bool,
        timeout_ms: u64,
    ) -> MasterResult<()> {
        ephemeral::set_typing(self, user_id, room_id, typing, timeout_ms).await
    }

    async fn set_receipt(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        receipt_type: &str,
        event_id: &OwnedEventId,
        thread_id: Option<String>,
    ) -> MasterResult<()> {
        ephemeral::set_receipt(self, user_id, room_id, receipt_type, event_id, thread_id).await
    }

    async fn set_account_data(
        &self,
        user_id: &OwnedUserId,
        room_id: Option<&OwnedRoomId>,
        data_type: &str,
        content: Value,
    ) -> MasterResult<()> {
        ephemeral::set_account_data(self, user_id, room_id, data_type, content).await
    }

    async fn create_filter(&self, user_id: &OwnedUserId, filter: Value) -> MasterResult<String> {
        accounts::create_filter(self, user_id, filter).await
    }

    async fn set_alias(
        &self,
        user_id: &OwnedUserId,
        alias: &OwnedRoomAliasId,
        room_id: &OwnedRoomId,
    ) -> MasterResult<()> {
        rooms::set_alias(self, user_id, alias, room_id).await
    }

    async fn delete_alias(&self, user_id: &OwnedUserId, alias: &OwnedRoomAliasId) -> MasterResult<()> {
        rooms::delete_alias(self, user_id, alias).await
    }

    async fn set_room_visibility(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        public: bool,
    ) -> MasterResult<()> {
        rooms::set_room_visibility(self, user_id, room_id, public).await
    }
}

/// Maps a storage or state error to a master error (internal unless the class says otherwise).
pub(crate) fn internal<E: ganglion_types::HasErrorClass + std::fmt::Display>(
    error: E,
) -> ganglion_rpc::MasterError {
    let class = error.class();
    if class == ganglion_types::ErrorClass::Internal {
        tracing::error!(%error, "master internal error");
    }
    ganglion_rpc::MasterError::new(class, error.to_string())
}

#[cfg(test)]
mod tests;
