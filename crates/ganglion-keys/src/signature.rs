//! Checking one ed25519 signature on a JSON object, as `/keys/signatures/upload` and the key
//! uploads need it, and checking that an object carrying a new signature is the key we hold.

use ruma::{
    CanonicalJsonObject, SigningKeyAlgorithm, UserId,
    serde::{Base64, base64::Standard},
    signatures::{to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};
use serde_json::Value;

use crate::{Ed25519PublicKey, KeyError, json::canonical_object};

/// Checks the signature that `signer_user_id`'s key `signer_key_id` (`ed25519:<name>`) made over
/// `signed_object`: device keys or a cross-signing key. `signatures` and `unsigned` are not
/// signed, per the signing appendix.
pub fn verify_signature(
    signer_user_id: &UserId,
    signer_key_id: &str,
    signer_public_key: &Ed25519PublicKey,
    signed_object: &Value,
) -> Result<(), KeyError> {
    let object = canonical_object(signed_object, "signed key")?;
    verify_object(&object, "signed key", signer_user_id, signer_key_id, signer_public_key).map(|_| ())
}

/// Checks that an object uploaded to `/keys/signatures/upload` is the key stored for its id,
/// apart from `signatures` and `unsigned`, so a signature cannot be attached to another key.
pub fn check_same_key(uploaded: &Value, stored: &Value) -> Result<(), KeyError> {
    let strip = |mut object: CanonicalJsonObject| {
        object.remove("signatures");
        object.remove("unsigned");
        object
    };
    let uploaded = strip(canonical_object(uploaded, "signed key")?);
    // A stored key that does not convert cannot be the uploaded one either.
    let stored = canonical_object(stored, "stored key").map(strip);
    if stored.as_ref().is_ok_and(|stored| *stored == uploaded) {
        Ok(())
    } else {
        Err(KeyError::KeyMismatch { what: "signed key".into() })
    }
}

/// The signature to store for a `/keys/signatures/upload` entry: `uploaded` must be the `stored`
/// key and carry a valid signature by `signer_key_id`. Returns the base64 signature.
pub fn uploaded_signature(
    signer_user_id: &UserId,
    signer_key_id: &str,
    signer_public_key: &Ed25519PublicKey,
    uploaded: &Value,
    stored: &Value,
) -> Result<String, KeyError> {
    check_same_key(uploaded, stored)?;
    let object = canonical_object(uploaded, "signed key")?;
    verify_object(&object, "signed key", signer_user_id, signer_key_id, signer_public_key).map(str::to_owned)
}

/// Verifies `object.signatures[user_id][key_id]` with `public_key`; returns the signature.
pub(crate) fn verify_object<'a>(
    object: &'a CanonicalJsonObject,
    what: &str,
    user_id: &UserId,
    key_id: &str,
    public_key: &Ed25519PublicKey,
) -> Result<&'a str, KeyError> {
    let invalid =
        || KeyError::InvalidSignature { what: what.to_owned(), signer: format!("{user_id} {key_id}") };
    if !key_id.starts_with("ed25519:") {
        return Err(invalid());
    }
    let signatures = match object.get("signatures") {
        None => return Err(invalid()),
        Some(signatures) => signatures
            .as_object()
            .ok_or_else(|| KeyError::malformed(&format!("{what}.signatures"), "must be an object"))?,
    };
    let signature = signatures
        .get(user_id.as_str())
        .and_then(|by_key| by_key.as_object())
        .and_then(|by_key| by_key.get(key_id))
        .and_then(|signature| signature.as_str())
        .ok_or_else(invalid)?;
    let signature_bytes = Base64::<Standard>::parse(signature).map_err(|_| invalid())?;
    let signed = to_canonical_json_string_for_signing(object)
        .map_err(|error| KeyError::malformed(what, error.to_string()))?;
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public_key.as_bytes(),
        signature_bytes.as_bytes(),
        signed.as_bytes(),
    )
    .map_err(|_| invalid())?;
    Ok(signature)
}
