//! Server-side key backup, `/room_keys/...`: the bodies clients upload, and the spec's rule for
//! which of two copies of a session's key the server keeps.
//!
//! The backup's contents are encrypted for the client; the server sees only the metadata that
//! [`better_session`] compares, and stores `session_data` and `auth_data` as given.

use std::cmp::Ordering;

use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, RoomId, UInt};
use serde_json::Value;

use crate::{
    KeyError,
    json::{canonical_object, field, object_field, str_field},
};

/// The longest room id or session id a backup takes, as the spec bounds other identifiers. Real
/// session ids are 43 bytes of base64; the bound keeps both within a database index row.
pub const MAX_BACKUP_ID_BYTES: usize = 255;

/// The metadata of a backed-up session key that decides which copy the server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupSession {
    pub is_verified: bool,
    pub first_message_index: UInt,
    pub forwarded_count: UInt,
}

/// Whether `candidate` replaces `existing`: a verified key beats an unverified one, then the lower
/// `first_message_index` wins (it decrypts more of the session), then the lower `forwarded_count`.
/// On a tie the existing key stays, so a repeated upload writes nothing.
pub fn better_session(existing: &BackupSession, candidate: &BackupSession) -> bool {
    let order = candidate
        .is_verified
        .cmp(&existing.is_verified)
        .then(existing.first_message_index.cmp(&candidate.first_message_index))
        .then(existing.forwarded_count.cmp(&candidate.forwarded_count));
    order == Ordering::Greater
}

/// A `KeyBackupData` object that passed [`check_key_backup_data`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupKey {
    pub session: BackupSession,
    /// The algorithm-dependent `session_data` object, as JSON to store.
    pub session_data: String,
}

/// One session key of a `PUT /room_keys/keys` or `PUT /room_keys/keys/{roomId}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomKey {
    pub room_id: OwnedRoomId,
    pub session_id: String,
    pub key: BackupKey,
}

/// The body of `POST /room_keys/version` or `PUT /room_keys/version/{version}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupVersion {
    pub algorithm: String,
    /// The algorithm-dependent `auth_data` object, as JSON to store.
    pub auth_data: String,
}

/// Checks a `KeyBackupData` object: `first_message_index` and `forwarded_count` are non-negative
/// integers, `is_verified` a boolean, `session_data` an object.
pub fn check_key_backup_data(key_backup_data: &Value) -> Result<BackupKey, KeyError> {
    check_key_data("key", &canonical_object(key_backup_data, "key")?)
}

/// Checks the body of `PUT /room_keys/keys`: `{"rooms": {room_id: {"sessions": {session_id:
/// KeyBackupData}}}}`.
pub fn check_room_keys(body: &Value) -> Result<Vec<RoomKey>, KeyError> {
    let body = canonical_object(body, "body")?;
    let mut keys = Vec::new();
    for (room_id, room) in object_field(&body, "body", "rooms")? {
        let what = format!("rooms.{room_id}");
        check_id_length(&what, room_id)?;
        let room_id = RoomId::parse(room_id).map_err(|_| KeyError::invalid(&what, "is not a room id"))?;
        let room = room.as_object().ok_or_else(|| KeyError::malformed(&what, "must be an object"))?;
        sessions(&what, &room_id, room, &mut keys)?;
    }
    Ok(keys)
}

/// Checks the body of `PUT /room_keys/keys/{roomId}`: `{"sessions": {session_id: KeyBackupData}}`.
pub fn check_room_sessions(room_id: &RoomId, body: &Value) -> Result<Vec<RoomKey>, KeyError> {
    let mut keys = Vec::new();
    sessions("body", room_id, &canonical_object(body, "body")?, &mut keys)?;
    Ok(keys)
}

/// Checks a backup version's `algorithm` (any non-empty string: the spec names one, clients try
/// others behind MSCs) and `auth_data` object.
pub fn check_backup_version(body: &Value) -> Result<BackupVersion, KeyError> {
    let body = canonical_object(body, "body")?;
    let algorithm = str_field(&body, "body", "algorithm")?;
    if algorithm.is_empty() {
        return Err(KeyError::invalid("body.algorithm", "must not be empty"));
    }
    let auth_data = object_field(&body, "body", "auth_data")?;
    Ok(BackupVersion {
        algorithm: algorithm.to_owned(),
        auth_data: CanonicalJsonValue::Object(auth_data.clone()).to_string(),
    })
}

fn sessions(
    what: &str,
    room_id: &RoomId,
    room: &CanonicalJsonObject,
    keys: &mut Vec<RoomKey>,
) -> Result<(), KeyError> {
    for (session_id, key) in object_field(room, what, "sessions")? {
        let what = format!("{what}.sessions.{session_id}");
        check_id_length(&what, session_id)?;
        let key = key.as_object().ok_or_else(|| KeyError::malformed(&what, "must be an object"))?;
        keys.push(RoomKey {
            room_id: room_id.to_owned(),
            session_id: session_id.clone(),
            key: check_key_data(&what, key)?,
        });
    }
    Ok(())
}

/// Refuses a room or session id longer than [`MAX_BACKUP_ID_BYTES`]; for ids that come in a
/// request's path, the caller checks with this too.
pub fn check_id_length(what: &str, id: &str) -> Result<(), KeyError> {
    if id.len() > MAX_BACKUP_ID_BYTES {
        return Err(KeyError::invalid(what, format!("longer than {MAX_BACKUP_ID_BYTES} bytes")));
    }
    Ok(())
}

fn check_key_data(what: &str, object: &CanonicalJsonObject) -> Result<BackupKey, KeyError> {
    let count = |name: &str| {
        let value = field(object, what, name)?;
        value
            .as_integer()
            .and_then(|integer| u64::try_from(i64::from(integer)).ok())
            .and_then(UInt::new)
            .ok_or_else(|| KeyError::malformed(&format!("{what}.{name}"), "must be a non-negative integer"))
    };
    let is_verified = field(object, what, "is_verified")?
        .as_bool()
        .ok_or_else(|| KeyError::malformed(&format!("{what}.is_verified"), "must be a boolean"))?;
    let session = BackupSession {
        is_verified,
        first_message_index: count("first_message_index")?,
        forwarded_count: count("forwarded_count")?,
    };
    let session_data = object_field(object, what, "session_data")?;
    Ok(BackupKey { session, session_data: CanonicalJsonValue::Object(session_data.clone()).to_string() })
}
