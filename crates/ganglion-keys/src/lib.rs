//! The server's side of the end-to-end encryption module: checking the device keys, one-time and
//! fallback keys, cross-signing keys and signatures that clients upload, choosing between two
//! backed-up copies of a room key, and bounding to-device messages.
//!
//! Pure functions over JSON and public keys. Signatures are checked on ruma's canonical JSON with
//! ruma's ed25519 verifier, exactly as clients make them (the spec's "Signing JSON" appendix).
//! Nothing here touches a database, a socket or gRPC: the master persists what these functions
//! return, and the HTTP edge reports a [`KeyError`] through its `ErrorClass`.

mod backup;
mod cross_signing;
mod device;
mod error;
mod json;
mod one_time;
mod signature;
mod to_device;

pub use backup::{
    BackupKey, BackupSession, BackupVersion, MAX_BACKUP_ID_BYTES, RoomKey, better_session,
    check_backup_version, check_id_length, check_key_backup_data, check_room_keys, check_room_sessions,
};
pub use cross_signing::{
    CrossSigningKey, CrossSigningKeys, check_cross_signing_key, check_cross_signing_keys,
};
pub use device::{DeviceKeys, check_device_keys};
pub use error::KeyError;
pub use one_time::{
    MAX_KEY_ID_BYTES, MAX_ONE_TIME_KEYS_PER_REQUEST, OneTimeKey, check_fallback_keys, check_one_time_keys,
};
pub use signature::{check_same_key, uploaded_signature, verify_signature};
pub use to_device::{
    MAX_EVENT_TYPE_BYTES, MAX_TO_DEVICE_EDU_BYTES, ToDeviceMessage, check_to_device_messages,
};

/// An ed25519 public key: 32 bytes, written in JSON as unpadded standard base64.
pub type Ed25519PublicKey = ruma::serde::Base64<ruma::serde::base64::Standard, [u8; 32]>;

#[cfg(test)]
mod tests;
