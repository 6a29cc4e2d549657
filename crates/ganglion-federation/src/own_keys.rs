//! This server's answer to `GET /_matrix/key/v2/server`: its key in use, the keys it retired
//! (`old_verify_keys`), until when others may cache them, signed with the key in use.

use ganglion_events::ServerKey;
use ruma::{CanonicalJsonObject, CanonicalJsonValue};

/// The signed key answer, valid for `validity_ms` from `now_ms`.
pub fn own_key_response(key: &ServerKey, now_ms: i64, validity_ms: i64) -> CanonicalJsonObject {
    let mut verify_keys = CanonicalJsonObject::new();
    verify_keys.insert(key.key_id(), object([("key", key.public_key().into())]));
    let mut old_verify_keys = CanonicalJsonObject::new();
    for retired in &key.retired {
        old_verify_keys.insert(
            retired.key_id.clone(),
            object([("key", retired.public_key.clone().into()), ("expired_ts", integer(retired.expired_ts))]),
        );
    }
    let mut response = CanonicalJsonObject::new();
    response.insert("server_name".into(), key.server_name.clone().into());
    response.insert("verify_keys".into(), verify_keys.into());
    response.insert("old_verify_keys".into(), old_verify_keys.into());
    response.insert("valid_until_ts".into(), integer(now_ms + validity_ms));
    sign(key, &mut response);
    response
}

/// Adds this server's signature to `object` (keeping any others').
pub fn sign(key: &ServerKey, object: &mut CanonicalJsonObject) {
    // Signing fails only for an object that cannot be canonical JSON, which these are not.
    if let Err(error) = ruma::signatures::sign_json(&key.server_name, &key.key_pair, object) {
        tracing::error!(%error, "signing a key answer failed");
    }
}

fn object<const N: usize>(entries: [(&str, CanonicalJsonValue); N]) -> CanonicalJsonValue {
    CanonicalJsonValue::Object(entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn integer(value: i64) -> CanonicalJsonValue {
    CanonicalJsonValue::Integer(ruma::Int::new_saturating(value))
}
