//! Cross-signing keys, `POST /keys/device_signing/upload`.
//!
//! Left to the caller, which holds the data: user-interactive auth, and the spec's 403 when a
//! key's public key equals one of the user's device ids ([`CrossSigningKeys::public_keys`]).
//! Device signatures on the master key are not checked here, as the master key's signatures are
//! optional; `/keys/signatures/upload` checks those it is sent.

use ruma::{UserId, encryption::KeyUsage};
use serde_json::Value;

use crate::{
    Ed25519PublicKey, KeyError,
    json::{canonical_object, object_field, public_key, stored_json, str_field, string_array_field},
    signature::verify_object,
};

/// A cross-signing key that passed [`check_cross_signing_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossSigningKey {
    pub public_key: Ed25519PublicKey,
    /// The canonical JSON to store and serve, signatures included, without `unsigned`.
    pub json: String,
}

impl CrossSigningKey {
    /// `ed25519:<public key>`, the id its signatures are made under.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.public_key.encode())
    }
}

/// The keys of one `/keys/device_signing/upload` request, each present if uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CrossSigningKeys {
    pub master: Option<CrossSigningKey>,
    pub self_signing: Option<CrossSigningKey>,
    pub user_signing: Option<CrossSigningKey>,
}

impl CrossSigningKeys {
    /// The uploaded public keys, unpadded base64, for the caller's check against device ids.
    pub fn public_keys(&self) -> impl Iterator<Item = String> + '_ {
        [&self.master, &self.self_signing, &self.user_signing]
            .into_iter()
            .flatten()
            .map(|key| key.public_key.encode())
    }
}

/// Checks one cross-signing key: `user_id` is the uploader, `usage` contains `usage`, `keys` holds
/// exactly one `ed25519:<public key>` whose value is that public key, and, when `signed_by` is
/// given, the object carries a valid signature by that (master) key of `user_id`.
pub fn check_cross_signing_key(
    key: &Value,
    user_id: &UserId,
    usage: KeyUsage,
    signed_by: Option<&Ed25519PublicKey>,
) -> Result<CrossSigningKey, KeyError> {
    let what = format!("{}_key", usage.as_str());
    let object = canonical_object(key, &what)?;
    let owner = str_field(&object, &what, "user_id")?;
    if owner != user_id.as_str() {
        return Err(KeyError::WrongOwner {
            what: format!("{what}.user_id"),
            expected: user_id.to_string(),
            found: owner.to_owned(),
        });
    }
    if !string_array_field(&object, &what, "usage")?.contains(&usage.as_str()) {
        return Err(KeyError::invalid(&format!("{what}.usage"), format!("must contain {usage}")));
    }
    let keys = object_field(&object, &what, "keys")?;
    let keys_what = format!("{what}.keys");
    let mut entries = keys.iter();
    let (Some((key_id, encoded)), None) = (entries.next(), entries.next()) else {
        return Err(KeyError::invalid(&keys_what, "must hold exactly one key"));
    };
    let encoded =
        encoded.as_str().ok_or_else(|| KeyError::malformed(&keys_what, "values must be strings"))?;
    if key_id.strip_prefix("ed25519:") != Some(encoded) {
        return Err(KeyError::invalid(&keys_what, "the key id must be `ed25519:` and the public key"));
    }
    let public_key = public_key(encoded, &keys_what)?;
    if let Some(signer) = signed_by {
        verify_object(&object, &what, user_id, &format!("ed25519:{}", signer.encode()), signer)?;
    }
    Ok(CrossSigningKey { public_key, json: stored_json(&object) })
}

/// Checks a `/keys/device_signing/upload` request. The self-signing and user-signing keys must be
/// signed by the master key uploaded with them or, failing that, by `existing_master`, the user's
/// current master key; with neither, they are refused with [`KeyError::NoMasterKey`].
pub fn check_cross_signing_keys(
    master: Option<&Value>,
    self_signing: Option<&Value>,
    user_signing: Option<&Value>,
    user_id: &UserId,
    existing_master: Option<&Ed25519PublicKey>,
) -> Result<CrossSigningKeys, KeyError> {
    let master =
        master.map(|key| check_cross_signing_key(key, user_id, KeyUsage::Master, None)).transpose()?;
    let signer = master.as_ref().map(|key| &key.public_key).or(existing_master);
    let signed = |key: Option<&Value>, usage: KeyUsage| {
        key.map(|key| {
            let signer = signer.ok_or(KeyError::NoMasterKey)?;
            check_cross_signing_key(key, user_id, usage, Some(signer))
        })
        .transpose()
    };
    Ok(CrossSigningKeys {
        self_signing: signed(self_signing, KeyUsage::SelfSigning)?,
        user_signing: signed(user_signing, KeyUsage::UserSigning)?,
        master,
    })
}
