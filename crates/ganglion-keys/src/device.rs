//! A device's identity keys, `device_keys` in `POST /keys/upload`.

use ruma::{DeviceId, UserId};
use serde_json::Value;

use crate::{
    Ed25519PublicKey, KeyError,
    json::{canonical_object, object_field, public_key, stored_json, str_field, string_array_field},
    signature::verify_object,
};

const WHAT: &str = "device_keys";

/// Device keys that passed [`check_device_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKeys {
    /// The canonical JSON to store and serve from `/keys/query`: the uploaded object, its
    /// signatures included, without `unsigned` (the server fills that in when serving).
    pub json: String,
    /// The device's `ed25519:<device_id>` key, which signs its one-time and fallback keys.
    pub ed25519_key: Ed25519PublicKey,
}

/// Checks the `device_keys` a session uploads: they must name the session's user and device,
/// list `algorithms`, hold the device's `ed25519:` and `curve25519:` keys, and be signed by that
/// ed25519 key.
pub fn check_device_keys(
    device_keys: &Value,
    user_id: &UserId,
    device_id: &DeviceId,
) -> Result<DeviceKeys, KeyError> {
    let object = canonical_object(device_keys, WHAT)?;
    for (name, expected) in [("user_id", user_id.as_str()), ("device_id", device_id.as_str())] {
        let found = str_field(&object, WHAT, name)?;
        if found != expected {
            return Err(KeyError::WrongOwner {
                what: format!("{WHAT}.{name}"),
                expected: expected.to_owned(),
                found: found.to_owned(),
            });
        }
    }
    string_array_field(&object, WHAT, "algorithms")?;
    let keys = object_field(&object, WHAT, "keys")?;
    if keys.values().any(|key| key.as_str().is_none()) {
        return Err(KeyError::malformed(&format!("{WHAT}.keys"), "values must be strings"));
    }
    let key = |algorithm: &str| {
        let key_id = format!("{algorithm}:{device_id}");
        let what = format!("{WHAT}.keys.{key_id}");
        let encoded = keys
            .get(&key_id)
            .ok_or_else(|| KeyError::malformed(&what, "is required"))?
            .as_str()
            .ok_or_else(|| KeyError::malformed(&what, "must be a string"))?;
        public_key(encoded, &what)
    };
    let ed25519_key = key("ed25519")?;
    key("curve25519")?;
    verify_object(&object, WHAT, user_id, &format!("ed25519:{device_id}"), &ed25519_key)?;
    Ok(DeviceKeys { json: stored_json(&object), ed25519_key })
}
