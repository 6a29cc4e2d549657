//! The `KeyBackup` service: server-side key backup (`/room_keys`), each user's backup versions
//! and the room keys stored in them.
//!
//! Backups are not a stream: a worker reads them from the database, which the master has
//! committed before it answers, so no call waits for replication. Versions are the numbers the
//! master hands out; the HTTP edge turns the client's opaque version string into one (a string
//! that is not a number names no version) before it calls.

use ganglion_events::ruma::{OwnedRoomId, OwnedUserId, UInt};
use ganglion_keys::{BackupKey, BackupSession, RoomKey};
use ganglion_proto::master::v1 as pb;

use crate::wire::{AfterCall, Answer, Call, ConvertError, id, json_object, optional_id};

service! {
    /// Backup versions and the room keys in them.
    pub trait KeyBackup: key_backup_server::KeyBackup, key_backup_client::KeyBackupClient {
        /// Answers the new version's number.
        fn create_backup_version(CreateBackupVersion) -> i64 as pb::CreateBackupVersionResponse;
        fn update_backup_version(UpdateBackupVersion) -> () as pb::Done;
        fn delete_backup_version(DeleteBackupVersion) -> () as pb::Done;
        fn put_backup_keys(PutBackupKeys) -> RoomKeysUpdate as pb::RoomKeysUpdate;
        fn delete_backup_keys(DeleteBackupKeys) -> RoomKeysUpdate as pb::RoomKeysUpdate;
    }
}

/// `POST /room_keys/version`.
#[derive(Debug, Clone)]
pub struct CreateBackupVersion {
    pub user_id: OwnedUserId,
    pub algorithm: String,
    /// The `auth_data` object, as JSON.
    pub auth_data: String,
}

impl Call for CreateBackupVersion {
    type Message = pb::CreateBackupVersionRequest;

    fn into_message(self) -> pb::CreateBackupVersionRequest {
        pb::CreateBackupVersionRequest {
            user_id: self.user_id.into(),
            algorithm: self.algorithm,
            auth_data_json: self.auth_data,
        }
    }

    fn from_message(message: pb::CreateBackupVersionRequest) -> Result<Self, ConvertError> {
        json_object("auth_data_json", &message.auth_data_json)?;
        Ok(CreateBackupVersion {
            user_id: id("user_id", message.user_id)?,
            algorithm: message.algorithm,
            auth_data: message.auth_data_json,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

/// `PUT /room_keys/version/{version}`: replaces `auth_data`; `algorithm` must be the version's.
#[derive(Debug, Clone)]
pub struct UpdateBackupVersion {
    pub user_id: OwnedUserId,
    pub version: i64,
    pub algorithm: String,
    /// The `auth_data` object, as JSON.
    pub auth_data: String,
}

impl Call for UpdateBackupVersion {
    type Message = pb::UpdateBackupVersionRequest;

    fn into_message(self) -> pb::UpdateBackupVersionRequest {
        pb::UpdateBackupVersionRequest {
            user_id: self.user_id.into(),
            version: self.version,
            algorithm: self.algorithm,
            auth_data_json: self.auth_data,
        }
    }

    fn from_message(message: pb::UpdateBackupVersionRequest) -> Result<Self, ConvertError> {
        json_object("auth_data_json", &message.auth_data_json)?;
        Ok(UpdateBackupVersion {
            user_id: id("user_id", message.user_id)?,
            version: message.version,
            algorithm: message.algorithm,
            auth_data: message.auth_data_json,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

/// `DELETE /room_keys/version/{version}`: the version and every key in it.
#[derive(Debug, Clone)]
pub struct DeleteBackupVersion {
    pub user_id: OwnedUserId,
    pub version: i64,
}

impl Call for DeleteBackupVersion {
    type Message = pb::DeleteBackupVersionRequest;

    fn into_message(self) -> pb::DeleteBackupVersionRequest {
        pb::DeleteBackupVersionRequest { user_id: self.user_id.into(), version: self.version }
    }

    fn from_message(message: pb::DeleteBackupVersionRequest) -> Result<Self, ConvertError> {
        Ok(DeleteBackupVersion { user_id: id("user_id", message.user_id)?, version: message.version })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

/// `PUT /room_keys/keys[/{roomId}[/{sessionId}]]`, the keys checked by `ganglion_keys`.
#[derive(Debug, Clone)]
pub struct PutBackupKeys {
    pub user_id: OwnedUserId,
    pub version: i64,
    pub keys: Vec<RoomKey>,
}

impl Call for PutBackupKeys {
    type Message = pb::PutBackupKeysRequest;

    fn into_message(self) -> pb::PutBackupKeysRequest {
        let keys = self
            .keys
            .into_iter()
            .map(|key| pb::BackupRoomKey {
                room_id: key.room_id.into(),
                session_id: key.session_id,
                first_message_index: key.key.session.first_message_index.into(),
                forwarded_count: key.key.session.forwarded_count.into(),
                is_verified: key.key.session.is_verified,
                session_data_json: key.key.session_data,
            })
            .collect();
        pb::PutBackupKeysRequest { user_id: self.user_id.into(), version: self.version, keys }
    }

    fn from_message(message: pb::PutBackupKeysRequest) -> Result<Self, ConvertError> {
        let count = |field: &'static str, value: u64| {
            UInt::new(value)
                .ok_or(ConvertError::InvalidParam { field, reason: format!("{value} is over 2^53") })
        };
        let keys = message
            .keys
            .into_iter()
            .map(|key| {
                json_object("session_data_json", &key.session_data_json)?;
                Ok(RoomKey {
                    room_id: id("room_id", key.room_id)?,
                    session_id: key.session_id,
                    key: BackupKey {
                        session: BackupSession {
                            is_verified: key.is_verified,
                            first_message_index: count("first_message_index", key.first_message_index)?,
                            forwarded_count: count("forwarded_count", key.forwarded_count)?,
                        },
                        session_data: key.session_data_json,
                    },
                })
            })
            .collect::<Result<_, ConvertError>>()?;
        Ok(PutBackupKeys { user_id: id("user_id", message.user_id)?, version: message.version, keys })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

/// `DELETE /room_keys/keys[/{roomId}[/{sessionId}]]`.
#[derive(Debug, Clone)]
pub struct DeleteBackupKeys {
    pub user_id: OwnedUserId,
    pub version: i64,
    /// `None`: every room's keys.
    pub room_id: Option<OwnedRoomId>,
    /// Only with `room_id`; `None`: every session of the room.
    pub session_id: Option<String>,
}

impl Call for DeleteBackupKeys {
    type Message = pb::DeleteBackupKeysRequest;

    fn into_message(self) -> pb::DeleteBackupKeysRequest {
        pb::DeleteBackupKeysRequest {
            user_id: self.user_id.into(),
            version: self.version,
            room_id: self.room_id.map(Into::into),
            session_id: self.session_id,
        }
    }

    fn from_message(message: pb::DeleteBackupKeysRequest) -> Result<Self, ConvertError> {
        if message.room_id.is_none() && message.session_id.is_some() {
            let reason = "a session needs its room".to_owned();
            return Err(ConvertError::InvalidParam { field: "session_id", reason });
        }
        Ok(DeleteBackupKeys {
            user_id: id("user_id", message.user_id)?,
            version: message.version,
            room_id: optional_id("room_id", message.room_id)?,
            session_id: message.session_id,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

/// A version's keys after a change: the spec's `RoomKeysUpdateResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomKeysUpdate {
    /// Advances whenever the version's keys change.
    pub etag: i64,
    pub count: u64,
}

impl Answer<pb::RoomKeysUpdate> for RoomKeysUpdate {
    fn into_message(self) -> pb::RoomKeysUpdate {
        pb::RoomKeysUpdate { etag: self.etag, count: self.count }
    }

    fn from_message(message: pb::RoomKeysUpdate) -> Result<RoomKeysUpdate, ConvertError> {
        Ok(RoomKeysUpdate { etag: message.etag, count: message.count })
    }
}

impl Answer<pb::CreateBackupVersionResponse> for i64 {
    fn into_message(self) -> pb::CreateBackupVersionResponse {
        pb::CreateBackupVersionResponse { version: self }
    }

    fn from_message(message: pb::CreateBackupVersionResponse) -> Result<i64, ConvertError> {
        Ok(message.version)
    }
}
