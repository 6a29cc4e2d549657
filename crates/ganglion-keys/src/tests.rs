//! Every check runs on JSON signed with real ed25519 keys, the way a client signs it.

use ganglion_types::{ErrorClass, HasErrorClass};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, DeviceId, OwnedUserId, UserId,
    signatures::{Ed25519KeyPair, KeyPair, sign_json},
};
use serde_json::{Value, json};

use super::*;

mod backup;
mod cross_signing;
mod device;
mod one_time;
mod signatures;
mod to_device;

fn alice() -> OwnedUserId {
    UserId::parse("@alice:example.org").unwrap()
}

fn device_id() -> &'static DeviceId {
    "JLAFKJWSCS".into()
}

/// A fresh key whose version (the part of its key id after `ed25519:`) is `version`, or its own
/// public key when `None`, as cross-signing keys are named.
fn key_pair(version: Option<&str>) -> Ed25519KeyPair {
    let document = Ed25519KeyPair::generate();
    let unnamed = Ed25519KeyPair::from_der(&document, String::new()).unwrap();
    let version = version.map_or_else(|| public(&unnamed).encode(), str::to_owned);
    Ed25519KeyPair::from_der(&document, version).unwrap()
}

fn public(key_pair: &Ed25519KeyPair) -> Ed25519PublicKey {
    Ed25519PublicKey::new(key_pair.public_key())
}

/// Adds `user_id`'s signature by `key_pair` to `value`, exactly as a client signs JSON.
fn sign(value: &mut Value, user_id: &UserId, key_pair: &impl KeyPair) {
    let mut object: CanonicalJsonObject = serde_json::from_value(value.clone()).unwrap();
    sign_json(user_id.as_str(), key_pair, &mut object).unwrap();
    *value = CanonicalJsonValue::Object(object).into();
}

fn signed(mut value: Value, user_id: &UserId, key_pair: &impl KeyPair) -> Value {
    sign(&mut value, user_id, key_pair);
    value
}

/// A 32-byte key that is not anyone's, in unpadded base64.
fn some_key(byte: u8) -> String {
    Ed25519PublicKey::new([byte; 32]).encode()
}

/// Device keys of alice's `JLAFKJWSCS`, signed by `device_key`.
fn device_keys(device_key: &Ed25519KeyPair) -> Value {
    let value = json!({
        "user_id": "@alice:example.org",
        "device_id": "JLAFKJWSCS",
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            "curve25519:JLAFKJWSCS": some_key(7),
            "ed25519:JLAFKJWSCS": public(device_key).encode(),
        },
    });
    signed(value, &alice(), device_key)
}

/// A named change to a valid object, for tables of invalid inputs.
type Mutation = (&'static str, fn(&mut Value));

fn class(result: Result<impl std::fmt::Debug, KeyError>) -> ErrorClass {
    result.unwrap_err().class()
}
