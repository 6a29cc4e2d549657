//! The `Master` service: every write that advances a stream the master owns (events, receipts,
//! typing, account data) and the account writes (users, devices, tokens, filters, aliases).
//!
//! Workers hold an `Arc<dyn Master>`. With `role = "all"` it is the master itself, called in
//! process; cluster mode puts a gRPC client behind the same trait. Requests and results are
//! plain domain types so they cross a process boundary unchanged; errors carry an
//! [`ErrorClass`] so a worker answers with the master's Matrix error without parsing strings.

pub mod grpc;
pub mod trace;

use async_trait::async_trait;
use ganglion_events::{
    EventTemplate,
    ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomVersionId},
};
use ganglion_types::{ErrorClass, HasErrorClass, StreamPosition, SyncToken};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A failed master call: the class decides the Matrix error, the message is shown to the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct MasterError {
    pub class: ErrorClass,
    pub message: String,
}

impl MasterError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> MasterError {
        MasterError { class, message: message.into() }
    }

    pub fn forbidden(message: impl Into<String>) -> MasterError {
        MasterError::new(ErrorClass::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> MasterError {
        MasterError::new(ErrorClass::NotFound, message)
    }

    pub fn bad_json(message: impl Into<String>) -> MasterError {
        MasterError::new(ErrorClass::BadJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> MasterError {
        MasterError::new(ErrorClass::InvalidParam, message)
    }

    pub fn internal(message: impl Into<String>) -> MasterError {
        MasterError::new(ErrorClass::Internal, message)
    }
}

impl HasErrorClass for MasterError {
    fn class(&self) -> ErrorClass {
        self.class.clone()
    }
}

pub type MasterResult<T> = Result<T, MasterError>;

#[derive(Debug, Clone, Default)]
pub struct RegisterRequest {
    /// Localpart; generated when absent.
    pub username: Option<String>,
    pub password: Option<String>,
    pub device_id: Option<String>,
    pub initial_device_display_name: Option<String>,
    pub inhibit_login: bool,
}

#[derive(Debug, Clone)]
pub struct LoginRequest {
    pub user_id: OwnedUserId,
    pub password: String,
    pub device_id: Option<String>,
    pub initial_device_display_name: Option<String>,
}

/// A new session. `access_token` and `device_id` are absent for `inhibit_login` registrations.
#[derive(Debug, Clone)]
pub struct SessionGrant {
    pub user_id: OwnedUserId,
    pub access_token: Option<String>,
    pub device_id: Option<OwnedDeviceId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    PrivateChat,
    PublicChat,
    TrustedPrivateChat,
}

/// One entry of `createRoom`'s `initial_state`.
#[derive(Debug, Clone, Deserialize)]
pub struct InitialStateEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub state_key: String,
    pub content: Map<String, Value>,
}

#[derive(Debug, Clone, Default)]
pub struct CreateRoomRequest {
    pub public: bool,
    pub room_alias_name: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub room_version: Option<RoomVersionId>,
    pub creation_content: Option<Map<String, Value>>,
    pub initial_state: Vec<InitialStateEvent>,
    pub preset: Option<Preset>,
    pub is_direct: bool,
    pub power_level_content_override: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    Join,
    Invite,
    Leave,
    Kick,
    Ban,
    Unban,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileField {
    Displayname,
    AvatarUrl,
}

/// The typing stream as the master holds it: workers start from this and follow the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypingSnapshot {
    /// Identifies the master's run; typing positions restart with it.
    pub epoch: u64,
    pub position: StreamPosition,
    /// Rooms where someone is typing, with the users typing, sorted.
    pub rooms: Vec<(String, Vec<String>)>,
}

#[async_trait]
pub trait Master: Send + Sync + 'static {
    /// The positions every stream has been committed and published up to.
    async fn positions(&self) -> MasterResult<SyncToken>;
    async fn typing_snapshot(&self) -> MasterResult<TypingSnapshot>;

    async fn register(&self, request: RegisterRequest) -> MasterResult<SessionGrant>;
    /// Checks the password and opens a session.
    async fn login(&self, request: LoginRequest) -> MasterResult<SessionGrant>;
    /// Whether `password` is the user's (false for unknown or deactivated users).
    async fn check_password(&self, user_id: &OwnedUserId, password: &str) -> MasterResult<bool>;
    async fn logout(&self, access_token: &str) -> MasterResult<()>;
    async fn logout_all(&self, user_id: &OwnedUserId) -> MasterResult<()>;
    /// Sets a new password; with `logout_devices`, ends every session but `keep_device`'s.
    async fn set_password(
        &self,
        user_id: &OwnedUserId,
        new_password: &str,
        logout_devices: bool,
        keep_device: Option<&OwnedDeviceId>,
    ) -> MasterResult<()>;
    async fn delete_devices(&self, user_id: &OwnedUserId, device_ids: &[OwnedDeviceId]) -> MasterResult<()>;
    async fn rename_device(
        &self,
        user_id: &OwnedUserId,
        device_id: &OwnedDeviceId,
        name: &str,
    ) -> MasterResult<()>;

    async fn create_room(
        &self,
        sender: &OwnedUserId,
        request: CreateRoomRequest,
    ) -> MasterResult<OwnedRoomId>;
    /// Builds, authorises and persists an event. Idempotent per `(sender, device, txn_id)`:
    /// a retry returns the first event's id.
    async fn send_event(
        &self,
        sender: &OwnedUserId,
        device_id: Option<&OwnedDeviceId>,
        room_id: &OwnedRoomId,
        template: EventTemplate,
        txn_id: Option<&str>,
    ) -> MasterResult<OwnedEventId>;
    async fn update_membership(
        &self,
        sender: &OwnedUserId,
        room_id: &OwnedRoomId,
        target: &OwnedUserId,
        change: MembershipChange,
        reason: Option<String>,
    ) -> MasterResult<OwnedEventId>;
    async fn forget_room(&self, user_id: &OwnedUserId, room_id: &OwnedRoomId) -> MasterResult<()>;
    /// Updates the profile and the user's member event in every joined room.
    async fn set_profile(
        &self,
        user_id: &OwnedUserId,
        field: ProfileField,
        value: Option<String>,
    ) -> MasterResult<()>;

    async fn set_typing(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        typing: bool,
        timeout_ms: u64,
    ) -> MasterResult<()>;
    async fn set_receipt(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        receipt_type: &str,
        event_id: &OwnedEventId,
        thread_id: Option<String>,
    ) -> MasterResult<()>;
    async fn set_account_data(
        &self,
        user_id: &OwnedUserId,
        room_id: Option<&OwnedRoomId>,
        data_type: &str,
        content: Value,
    ) -> MasterResult<()>;
    async fn create_filter(&self, user_id: &OwnedUserId, filter: Value) -> MasterResult<String>;

    async fn set_alias(
        &self,
        user_id: &OwnedUserId,
        alias: &OwnedRoomAliasId,
        room_id: &OwnedRoomId,
    ) -> MasterResult<()>;
    async fn delete_alias(&self, user_id: &OwnedUserId, alias: &OwnedRoomAliasId) -> MasterResult<()>;
    async fn set_room_visibility(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        public: bool,
    ) -> MasterResult<()>;
}
