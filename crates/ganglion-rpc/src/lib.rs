//! The master's API: every write that advances a stream the master owns (events, receipts,
//! typing, account data), the account writes (users, devices, tokens, filters, aliases) and the
//! key backup writes.
//!
//! It is split by concern into services, one module each: [`streams`] (what a starting worker
//! reads), [`accounts`], [`rooms`], [`ephemeral`], [`keys`], [`key_backup`] and [`presence`].
//! [`Master`] is all of them together.
//! Workers hold an `Arc<dyn Master>`: with `role = "all"` the master itself, called in process;
//! in cluster mode a [`grpc::RemoteMaster`].
//!
//! Each call takes one request type and returns one answer type, plain domain types that carry
//! their own wire conversions ([`Call`], [`Answer`]) and say what a worker does after the call
//! ([`AfterCall`]). The `service!` macro turns a service's list of calls into its trait, its gRPC
//! client and its gRPC server, so adding a write touches: the proto, the request type (next to
//! its conversions), one line in its service's list, and the master's implementation.
//! Errors carry an [`ErrorClass`] so a worker answers with the master's Matrix error without
//! parsing strings.

#[macro_use]
mod service;

pub mod accounts;
pub mod ephemeral;
pub mod grpc;
pub mod key_backup;
pub mod keys;
pub mod presence;
pub mod rooms;
pub mod streams;
pub mod trace;
mod wire;

pub use accounts::{
    Accounts, CheckPassword, CreateFilter, CreateOpenIdToken, DeactivateAccount, DeleteDevices, LoginRequest,
    Logout, LogoutAll, OpenIdToken, RegisterRequest, RenameDevice, SessionGrant, SetPassword,
};
pub use ephemeral::{
    Ephemeral, SetAccountData, SetPusher, SetReceipt, SetRoomTag, SetTyping, UpdatePushRules,
};
use ganglion_types::{ErrorClass, HasErrorClass};
pub use key_backup::{
    CreateBackupVersion, DeleteBackupKeys, DeleteBackupVersion, KeyBackup, PutBackupKeys, RoomKeysUpdate,
    UpdateBackupVersion,
};
pub use keys::{
    ClaimKeys, ClaimedKey, KeyClaim, Keys, OneTimeKeyCounts, RemoteDeviceListsChanged, SendToDevice,
    SignatureFailure, UploadKeys, UploadSignatures, UploadSigningKeys,
};
pub use presence::{Presence, PresenceSyncing, RemotePresence, SetPresence, SetRemotePresence};
pub use rooms::{
    AcceptEvents, CreateRoom, CreateRoomRequest, DeleteAlias, EventOutcome, FileReport, ForgetRoom, GapState,
    ImportRoom, InitialStateEvent, MadeJoin, MakeJoin, MembershipChange, PreparedInvite, Preset,
    ProfileField, ReportTarget, Rooms, SendEvent, SetAlias, SetProfile, SetRoomVisibility, StoreInvite,
    UpdateMembership, UpgradeRoom,
};
pub use streams::{Streams, TypingSnapshot};
pub use wire::{AfterCall, Answer, Call, ConvertError};

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

/// The whole master: every service. Implemented by anything that implements them all.
pub trait Master: Streams + Accounts + Rooms + Ephemeral + Keys + KeyBackup + Presence {}

impl<T: Streams + Accounts + Rooms + Ephemeral + Keys + KeyBackup + Presence + ?Sized> Master for T {}
