//! One-time and fallback keys: `one_time_keys` and `fallback_keys` in `POST /keys/upload`.
//!
//! Unlike Synapse, which stores these keys unchecked, a `signed_curve25519` key's signature is
//! verified whenever the device's ed25519 key is known (stored, or uploaded in the same request):
//! a key that claimers would reject anyway is better refused to the client that can fix it. The
//! cost is one ed25519 verification per key, at most [`MAX_ONE_TIME_KEYS_PER_REQUEST`] a request.

use std::collections::BTreeSet;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, DeviceId, OneTimeKeyAlgorithm, OneTimeKeyId, OwnedOneTimeKeyId,
    UserId,
};
use serde_json::Value;

use crate::{
    Ed25519PublicKey, KeyError,
    json::{canonical_object, object_field, public_key, str_field},
    signature::verify_object,
};

/// The most one-time (or fallback) keys one request may carry. libolm holds at most 100 unpublished
/// one-time keys and vodozemac 50, and clients publish half of that at a time, so a real client
/// never needs more; Synapse bounds only the body size.
pub const MAX_ONE_TIME_KEYS_PER_REQUEST: usize = 100;

/// The longest `<algorithm>:<key_id>`, as the spec bounds other identifiers (user ids, event
/// types). Real ids are short: `signed_curve25519:AAAAAAAAAFA`.
pub const MAX_KEY_ID_BYTES: usize = 255;

/// A one-time or fallback key that passed [`check_one_time_keys`] or [`check_fallback_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeKey {
    pub key_id: OwnedOneTimeKeyId,
    /// The key's canonical JSON (a string or an object), stored and handed out by `/keys/claim`.
    pub json: String,
}

impl OneTimeKey {
    pub fn algorithm(&self) -> OneTimeKeyAlgorithm {
        self.key_id.algorithm()
    }

    /// Whether `stored_json`, the key already stored under this id, is the same key. A client
    /// that retries an upload whose answer it lost resends its keys, possibly re-signed, so
    /// signatures are ignored; any other difference means the client reused a key id.
    pub fn matches_stored(&self, stored_json: &str) -> bool {
        let without_signatures = |json: &str| {
            let mut value: CanonicalJsonValue = serde_json::from_str(json).ok()?;
            if let Some(object) = value.as_object_mut() {
                object.remove("signatures");
            }
            Some(value)
        };
        match (without_signatures(&self.json), without_signatures(stored_json)) {
            (Some(uploaded), Some(stored)) => uploaded == stored,
            _ => false,
        }
    }
}

/// Checks `one_time_keys`: `<algorithm>:<key_id>` → a string (`curve25519`) or a signed object
/// (`signed_curve25519`: `key`, `signatures`), whose signature by `ed25519:<device_id>` is verified
/// when `device_ed25519_key` is given. Keys of other algorithms are opaque strings or objects.
pub fn check_one_time_keys(
    one_time_keys: &Value,
    user_id: &UserId,
    device_id: &DeviceId,
    device_ed25519_key: Option<&Ed25519PublicKey>,
) -> Result<Vec<OneTimeKey>, KeyError> {
    let device = Device { user_id, device_id, ed25519_key: device_ed25519_key };
    check_keys("one_time_keys", one_time_keys, &device, false)
}

/// Checks `fallback_keys`: the shape of [`check_one_time_keys`], at most one key per algorithm
/// (the server keeps one per algorithm). A signed key should say `"fallback": true`; one that
/// says `false` is refused, one that omits it is accepted, as the spec only says "should".
pub fn check_fallback_keys(
    fallback_keys: &Value,
    user_id: &UserId,
    device_id: &DeviceId,
    device_ed25519_key: Option<&Ed25519PublicKey>,
) -> Result<Vec<OneTimeKey>, KeyError> {
    let device = Device { user_id, device_id, ed25519_key: device_ed25519_key };
    let keys = check_keys("fallback_keys", fallback_keys, &device, true)?;
    let mut algorithms = BTreeSet::new();
    for key in &keys {
        if !algorithms.insert(key.algorithm().as_str().to_owned()) {
            return Err(KeyError::invalid(
                "fallback_keys",
                format!("more than one {} key", key.algorithm().as_str()),
            ));
        }
    }
    Ok(keys)
}

struct Device<'a> {
    user_id: &'a UserId,
    device_id: &'a DeviceId,
    ed25519_key: Option<&'a Ed25519PublicKey>,
}

fn check_keys(
    what: &str,
    keys: &Value,
    device: &Device<'_>,
    fallback: bool,
) -> Result<Vec<OneTimeKey>, KeyError> {
    let object = canonical_object(keys, what)?;
    if object.len() > MAX_ONE_TIME_KEYS_PER_REQUEST {
        return Err(KeyError::invalid(
            what,
            format!("at most {MAX_ONE_TIME_KEYS_PER_REQUEST} keys per request, not {}", object.len()),
        ));
    }
    object
        .iter()
        .map(|(key_id, value)| check_key(&format!("{what}.{key_id}"), key_id, value, device, fallback))
        .collect()
}

fn check_key(
    what: &str,
    key_id: &str,
    value: &CanonicalJsonValue,
    device: &Device<'_>,
    fallback: bool,
) -> Result<OneTimeKey, KeyError> {
    if key_id.len() > MAX_KEY_ID_BYTES {
        return Err(KeyError::invalid(what, format!("key id longer than {MAX_KEY_ID_BYTES} bytes")));
    }
    let key_id = match OneTimeKeyId::parse(key_id) {
        Ok(key_id) if !key_id.key_name().as_str().is_empty() => key_id,
        _ => return Err(KeyError::invalid(what, "key id must be `<algorithm>:<key_id>`")),
    };
    let algorithm = key_id.algorithm();
    let signed = algorithm == OneTimeKeyAlgorithm::SignedCurve25519;
    let plain = algorithm.as_str() == "curve25519";
    match value {
        CanonicalJsonValue::Object(object) if signed => check_signed_key(what, object, device, fallback)?,
        CanonicalJsonValue::String(key) if plain => {
            public_key(key, what)?;
        }
        _ if signed => {
            return Err(KeyError::malformed(what, "must be an object with `key` and `signatures`"));
        }
        _ if plain => return Err(KeyError::malformed(what, "must be a string")),
        // Keys of other algorithms are opaque to the server.
        CanonicalJsonValue::String(_) | CanonicalJsonValue::Object(_) => {}
        _ => return Err(KeyError::malformed(what, "must be a string or an object")),
    }
    Ok(OneTimeKey { key_id, json: value.to_string() })
}

fn check_signed_key(
    what: &str,
    object: &CanonicalJsonObject,
    device: &Device<'_>,
    fallback: bool,
) -> Result<(), KeyError> {
    public_key(str_field(object, what, "key")?, &format!("{what}.key"))?;
    object_field(object, what, "signatures")?;
    match object.get("fallback") {
        None | Some(CanonicalJsonValue::Bool(true)) => {}
        Some(CanonicalJsonValue::Bool(false)) if fallback => {
            return Err(KeyError::invalid(&format!("{what}.fallback"), "a fallback key cannot say false"));
        }
        Some(CanonicalJsonValue::Bool(false)) => {}
        Some(_) => return Err(KeyError::malformed(&format!("{what}.fallback"), "must be a boolean")),
    }
    if let Some(ed25519_key) = device.ed25519_key {
        let signer = format!("ed25519:{}", device.device_id);
        verify_object(object, what, device.user_id, &signer, ed25519_key)?;
    }
    Ok(())
}
