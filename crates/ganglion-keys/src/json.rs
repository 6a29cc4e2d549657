//! Reading fields out of canonical JSON, with errors that name the field.

use ruma::{CanonicalJsonObject, CanonicalJsonValue};
use serde_json::Value;

use crate::{Ed25519PublicKey, KeyError};

/// `value` as a canonical JSON object. Anything that is signed must convert, so a float or an
/// integer beyond 2^53 is refused here rather than failing later as a bad signature.
pub(crate) fn canonical_object(value: &Value, what: &str) -> Result<CanonicalJsonObject, KeyError> {
    if !value.is_object() {
        return Err(KeyError::malformed(what, "must be an object"));
    }
    match CanonicalJsonValue::try_from(value.clone()) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        _ => Err(KeyError::malformed(what, "is not canonical JSON (floats or integers beyond 2^53)")),
    }
}

/// The object's canonical JSON without `unsigned`: what a server stores and serves back. Keeps
/// `signatures`, which readers verify themselves.
pub(crate) fn stored_json(object: &CanonicalJsonObject) -> String {
    let mut object = object.clone();
    object.remove("unsigned");
    CanonicalJsonValue::Object(object).to_string()
}

pub(crate) fn field<'a>(
    object: &'a CanonicalJsonObject,
    what: &str,
    name: &str,
) -> Result<&'a CanonicalJsonValue, KeyError> {
    object.get(name).ok_or_else(|| KeyError::malformed(&format!("{what}.{name}"), "is required"))
}

pub(crate) fn str_field<'a>(
    object: &'a CanonicalJsonObject,
    what: &str,
    name: &str,
) -> Result<&'a str, KeyError> {
    field(object, what, name)?
        .as_str()
        .ok_or_else(|| KeyError::malformed(&format!("{what}.{name}"), "must be a string"))
}

pub(crate) fn object_field<'a>(
    object: &'a CanonicalJsonObject,
    what: &str,
    name: &str,
) -> Result<&'a CanonicalJsonObject, KeyError> {
    field(object, what, name)?
        .as_object()
        .ok_or_else(|| KeyError::malformed(&format!("{what}.{name}"), "must be an object"))
}

/// The strings of an array field, such as `algorithms` or `usage`.
pub(crate) fn string_array_field<'a>(
    object: &'a CanonicalJsonObject,
    what: &str,
    name: &str,
) -> Result<Vec<&'a str>, KeyError> {
    let not_strings = || KeyError::malformed(&format!("{what}.{name}"), "must be an array of strings");
    let array = field(object, what, name)?.as_array().ok_or_else(not_strings)?;
    array.iter().map(|item| item.as_str().ok_or_else(not_strings)).collect()
}

/// A 32-byte public key (ed25519 or curve25519) in unpadded base64. Only the canonical encoding
/// is accepted, so one key has one spelling and key ids built from it compare equal.
pub(crate) fn public_key(encoded: &str, what: &str) -> Result<Ed25519PublicKey, KeyError> {
    match Ed25519PublicKey::parse(encoded) {
        Ok(key) if key.encode() == encoded => Ok(key),
        _ => Err(KeyError::malformed(what, "must be a 32-byte key in unpadded base64")),
    }
}
