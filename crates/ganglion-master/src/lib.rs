//! The master role: the single writer of the events, receipts, typing, account-data,
//! to-device, device-list and presence streams, of accounts and of key backups. It builds each
//! event for its room version, checks it against the auth rules and the room's current state,
//! persists it (event, state snapshot, room head, membership, transaction id) in one database
//! transaction, and only then publishes it on the bus.
//!
//! Invariant: positions on a stream are allocated under the writer lock and committed in the
//! same transaction as their rows, so readers never see a gap.

mod accounts;
mod ephemeral;
mod federation;
mod key_backup;
mod keys;
mod power;
mod presence;
mod rooms;
mod sends;
mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use ganglion_config::Config;
use ganglion_events::{
    ServerKey,
    ruma::{OwnedEventId, OwnedRoomId},
};
use ganglion_replication::{Bus, Positions, TypingStore};
use ganglion_rpc::{
    AcceptEvents, Accounts, CheckPassword, ClaimKeys, ClaimedKey, CreateBackupVersion, CreateFilter,
    CreateOpenIdToken, CreateRoom, DeactivateAccount, DeleteAlias, DeleteBackupKeys, DeleteBackupVersion,
    DeleteDevices, Ephemeral, EventOutcome, FileReport, ForgetRoom, ImportRoom, KeyBackup, Keys,
    LoginRequest, Logout, LogoutAll, MadeJoin, MakeJoin, MasterResult, OneTimeKeyCounts, OpenIdToken,
    PreparedInvite, Presence, PresenceSyncing, PutBackupKeys, RegisterRequest, RenameDevice, RoomKeysUpdate,
    Rooms, SendEvent, SendToDevice, SessionGrant, SetAccountData, SetAlias, SetPassword, SetPresence,
    SetProfile, SetPusher, SetReceipt, SetRemotePresence, SetRoomTag, SetRoomVisibility, SetTyping,
    SignatureFailure, StoreInvite, Streams, TypingSnapshot, UpdateBackupVersion, UpdateMembership,
    UpdatePushRules, UpgradeRoom, UploadKeys, UploadSignatures, UploadSigningKeys,
};
use ganglion_state::Caches;
use ganglion_storage::Db;
use ganglion_types::SyncToken;
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
    /// Serialises each user's key backup writes.
    backups: key_backup::BackupLocks,
    /// Live presence of the users who are not offline, and its timeouts.
    presence: presence::PresenceStore,
    metrics: std::sync::OnceLock<Arc<ganglion_metrics::MasterMetrics>>,
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
        let presence = presence::PresenceStore::load(&db, &config.presence).await?;
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
            backups: key_backup::BackupLocks::new(),
            presence,
            metrics: std::sync::OnceLock::new(),
        });
        let task_service = service.clone();
        tokio::spawn(async move { sends::run(&task_service, jobs).await });
        Ok(service)
    }

    /// Counts events persisted and rejected and times write batches in `metrics` from now on.
    pub fn count_in(&self, metrics: Arc<ganglion_metrics::MasterMetrics>) {
        let _ = self.metrics.set(metrics);
    }

    pub(crate) fn count_rejected(&self, reason: &'static str) {
        if let Some(metrics) = self.metrics.get() {
            metrics.rejected(reason);
        }
    }

    /// Expires typing notifications; run every second or so.
    pub async fn expire_typing(&self) {
        for (room_id, position, users) in self.typing.expire(std::time::Instant::now()) {
            let row = ganglion_replication::StreamRow::new(
                ganglion_types::StreamKind::Typing,
                position,
                Some(room_id.as_str()),
                Vec::new(),
            );
            self.bus.publish(row);
            ephemeral::typing_expired(self, &room_id, &users).await;
        }
    }

    /// How often [`MasterService::expire_presence`] should run; `None` when presence is off.
    pub fn presence_tick(&self) -> Option<std::time::Duration> {
        self.presence.enabled.then(|| self.presence.timings.tick())
    }

    /// Applies the presence timeouts (idle, offline, no longer currently active) and writes
    /// the rows clients must see.
    pub async fn expire_presence(&self) -> MasterResult<()> {
        presence::expire(self).await
    }
}

#[async_trait]
impl Streams for MasterService {
    async fn positions(&self) -> MasterResult<SyncToken> {
        Ok(self.positions.current())
    }

    async fn typing_snapshot(&self) -> MasterResult<TypingSnapshot> {
        let (position, rooms) = self.typing.snapshot();
        Ok(TypingSnapshot { epoch: self.typing_epoch, position, rooms })
    }
}

#[async_trait]
impl Accounts for MasterService {
    async fn register(&self, request: RegisterRequest) -> MasterResult<SessionGrant> {
        accounts::register(self, request).await
    }

    async fn login(&self, request: LoginRequest) -> MasterResult<SessionGrant> {
        accounts::login(self, request).await
    }

    async fn check_password(&self, r: CheckPassword) -> MasterResult<bool> {
        accounts::check_password(self, &r.user_id, &r.password).await
    }

    async fn logout(&self, r: Logout) -> MasterResult<()> {
        accounts::logout(self, &r.access_token).await
    }

    async fn logout_all(&self, r: LogoutAll) -> MasterResult<()> {
        accounts::logout_all(self, &r.user_id).await
    }

    async fn set_password(&self, r: SetPassword) -> MasterResult<()> {
        accounts::set_password(self, &r.user_id, &r.new_password, r.logout_devices, r.keep_device.as_ref())
            .await
    }

    async fn delete_devices(&self, r: DeleteDevices) -> MasterResult<()> {
        accounts::delete_devices(self, &r.user_id, &r.device_ids).await
    }

    async fn rename_device(&self, r: RenameDevice) -> MasterResult<()> {
        accounts::rename_device(self, &r.user_id, &r.device_id, &r.name).await
    }

    async fn create_filter(&self, r: CreateFilter) -> MasterResult<String> {
        accounts::create_filter(self, &r.user_id, r.filter).await
    }

    async fn deactivate_account(&self, r: DeactivateAccount) -> MasterResult<()> {
        accounts::deactivate(self, &r.user_id, r.erase).await
    }

    async fn create_open_id_token(&self, r: CreateOpenIdToken) -> MasterResult<OpenIdToken> {
        accounts::create_open_id_token(self, &r.user_id).await
    }
}

#[async_trait]
impl Rooms for MasterService {
    async fn create_room(&self, r: CreateRoom) -> MasterResult<OwnedRoomId> {
        rooms::create_room(self, &r.sender, r.request).await
    }

    async fn send_event(&self, r: SendEvent) -> MasterResult<OwnedEventId> {
        rooms::send_event(self, &r.sender, r.device_id.as_ref(), &r.room_id, r.template, r.txn_id.as_deref())
            .await
    }

    async fn update_membership(&self, r: UpdateMembership) -> MasterResult<OwnedEventId> {
        rooms::update_membership(self, &r.sender, &r.room_id, &r.target, r.change, r.reason).await
    }

    async fn forget_room(&self, r: ForgetRoom) -> MasterResult<()> {
        rooms::forget_room(self, &r.user_id, &r.room_id).await
    }

    async fn set_profile(&self, r: SetProfile) -> MasterResult<()> {
        rooms::set_profile(self, &r.user_id, r.field, r.value).await
    }

    async fn set_alias(&self, r: SetAlias) -> MasterResult<()> {
        rooms::set_alias(self, &r.user_id, &r.alias, &r.room_id).await
    }

    async fn delete_alias(&self, r: DeleteAlias) -> MasterResult<()> {
        rooms::delete_alias(self, &r.user_id, &r.alias).await
    }

    async fn set_room_visibility(&self, r: SetRoomVisibility) -> MasterResult<()> {
        rooms::set_room_visibility(self, &r.user_id, &r.room_id, r.public).await
    }

    async fn accept_events(&self, r: AcceptEvents) -> MasterResult<Vec<EventOutcome>> {
        federation::accept_events(self, r).await
    }

    async fn backfill(&self, r: AcceptEvents) -> MasterResult<Vec<EventOutcome>> {
        federation::backfill(self, r).await
    }

    async fn make_join(&self, r: MakeJoin) -> MasterResult<MadeJoin> {
        federation::make_join(self, r).await
    }

    async fn import_room(&self, r: ImportRoom) -> MasterResult<OwnedEventId> {
        federation::import_room(self, r).await
    }

    async fn prepare_invite(&self, r: UpdateMembership) -> MasterResult<PreparedInvite> {
        federation::prepare_invite(self, r).await
    }

    async fn persist_invite(&self, r: AcceptEvents) -> MasterResult<Vec<EventOutcome>> {
        federation::persist_invite(self, r).await
    }

    async fn store_invite(&self, r: StoreInvite) -> MasterResult<()> {
        federation::store_invite(self, r).await
    }

    async fn file_report(&self, r: FileReport) -> MasterResult<()> {
        rooms::file_report(self, r).await
    }

    async fn upgrade_room(&self, r: UpgradeRoom) -> MasterResult<OwnedRoomId> {
        rooms::upgrade_room(self, r).await
    }
}

#[async_trait]
impl Ephemeral for MasterService {
    async fn set_typing(&self, r: SetTyping) -> MasterResult<()> {
        ephemeral::set_typing(self, &r.user_id, &r.room_id, r.typing, r.timeout_ms).await
    }

    async fn set_receipt(&self, r: SetReceipt) -> MasterResult<()> {
        ephemeral::set_receipt(self, r).await
    }

    async fn set_account_data(&self, r: SetAccountData) -> MasterResult<()> {
        ephemeral::set_account_data(self, &r.user_id, r.room_id.as_ref(), &r.data_type, r.content).await
    }

    async fn update_push_rules(&self, r: UpdatePushRules) -> MasterResult<()> {
        ephemeral::update_push_rules(self, &r.user_id, &r.change).await
    }

    async fn set_pusher(&self, r: SetPusher) -> MasterResult<()> {
        ephemeral::set_pusher(self, &r.user_id, &r.body).await
    }

    async fn set_room_tag(&self, r: SetRoomTag) -> MasterResult<()> {
        ephemeral::set_room_tag(self, &r.user_id, &r.room_id, &r.tag, r.content).await
    }
}

#[async_trait]
impl Keys for MasterService {
    async fn upload_keys(&self, r: UploadKeys) -> MasterResult<OneTimeKeyCounts> {
        keys::upload_keys(self, r).await
    }

    async fn claim_keys(&self, r: ClaimKeys) -> MasterResult<Vec<ClaimedKey>> {
        keys::claim_keys(self, r).await
    }

    async fn upload_signing_keys(&self, r: UploadSigningKeys) -> MasterResult<()> {
        keys::upload_signing_keys(self, r).await
    }

    async fn upload_signatures(&self, r: UploadSignatures) -> MasterResult<Vec<SignatureFailure>> {
        keys::upload_signatures(self, r).await
    }

    async fn send_to_device(&self, r: SendToDevice) -> MasterResult<()> {
        keys::send_to_device(self, r).await
    }

    async fn remote_device_lists_changed(
        &self,
        r: ganglion_rpc::RemoteDeviceListsChanged,
    ) -> MasterResult<()> {
        keys::remote_device_lists_changed(self, r.user_ids).await
    }
}

#[async_trait]
impl KeyBackup for MasterService {
    async fn create_backup_version(&self, r: CreateBackupVersion) -> MasterResult<i64> {
        key_backup::create_version(self, r).await
    }

    async fn update_backup_version(&self, r: UpdateBackupVersion) -> MasterResult<()> {
        key_backup::update_version(self, r).await
    }

    async fn delete_backup_version(&self, r: DeleteBackupVersion) -> MasterResult<()> {
        key_backup::delete_version(self, r).await
    }

    async fn put_backup_keys(&self, r: PutBackupKeys) -> MasterResult<RoomKeysUpdate> {
        key_backup::put_keys(self, r).await
    }

    async fn delete_backup_keys(&self, r: DeleteBackupKeys) -> MasterResult<RoomKeysUpdate> {
        key_backup::delete_keys(self, r).await
    }
}

#[async_trait]
impl Presence for MasterService {
    async fn set_presence(&self, r: SetPresence) -> MasterResult<()> {
        presence::set_presence(self, r).await
    }

    async fn presence_syncing(&self, r: PresenceSyncing) -> MasterResult<()> {
        presence::presence_syncing(self, r).await
    }

    async fn set_remote_presence(&self, r: SetRemotePresence) -> MasterResult<()> {
        presence::set_remote_presence(self, r).await
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
