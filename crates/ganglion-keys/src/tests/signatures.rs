use super::*;

/// Alice's device keys as the server stored them, and the same keys with her self-signing key's
/// signature added, as `/keys/signatures/upload` receives them.
fn signed_device(self_signing: &Ed25519KeyPair) -> (Value, Value) {
    let device_key = key_pair(Some("JLAFKJWSCS"));
    let stored = check_device_keys(&device_keys(&device_key), &alice(), device_id()).unwrap();
    let stored: Value = serde_json::from_str(&stored.json).unwrap();
    (stored.clone(), signed(stored, &alice(), self_signing))
}

#[test]
fn a_self_signing_signature_of_a_device_is_returned_for_storage() {
    let self_signing = key_pair(None);
    let key_id = format!("ed25519:{}", public(&self_signing).encode());
    let (stored, uploaded) = signed_device(&self_signing);
    let signature =
        uploaded_signature(&alice(), &key_id, &public(&self_signing), &uploaded, &stored).unwrap();
    assert_eq!(uploaded["signatures"]["@alice:example.org"][&key_id], json!(signature));
    verify_signature(&alice(), &key_id, &public(&self_signing), &uploaded).unwrap();
}

#[test]
fn a_signature_is_not_attached_to_another_key() {
    let self_signing = key_pair(None);
    let key_id = format!("ed25519:{}", public(&self_signing).encode());
    let (stored, _) = signed_device(&self_signing);
    let mut other_device = stored.clone();
    other_device["keys"]["curve25519:JLAFKJWSCS"] = json!(some_key(8));
    let uploaded = signed(other_device, &alice(), &self_signing);
    // The signature is valid, but over a key the server does not hold.
    verify_signature(&alice(), &key_id, &public(&self_signing), &uploaded).unwrap();
    let error =
        uploaded_signature(&alice(), &key_id, &public(&self_signing), &uploaded, &stored).unwrap_err();
    assert_eq!(error, KeyError::KeyMismatch { what: "signed key".into() });
    assert_eq!(error.class(), ErrorClass::InvalidParam);
}

#[test]
fn the_same_key_may_differ_in_signatures_and_unsigned() {
    let self_signing = key_pair(None);
    let (mut stored, uploaded) = signed_device(&self_signing);
    stored["unsigned"] = json!({ "device_display_name": "phone" });
    stored["signatures"]["@bob:example.org"] = json!({ "ed25519:x": "y" });
    check_same_key(&uploaded, &stored).unwrap();
    let mut without_signatures = uploaded.clone();
    without_signatures.as_object_mut().unwrap().remove("signatures");
    check_same_key(&without_signatures, &stored).unwrap();
    assert!(check_same_key(&uploaded, &json!("stored garbage")).is_err());
    assert_eq!(class(check_same_key(&json!(1), &stored)), ErrorClass::BadJson);
}

#[test]
fn a_user_signing_signature_of_another_users_master_key_verifies() {
    let bob = UserId::parse("@bob:example.org").unwrap();
    let bob_master = key_pair(None);
    let bob_public = public(&bob_master).encode();
    let stored = json!({
        "user_id": bob.as_str(),
        "usage": ["master"],
        "keys": { format!("ed25519:{bob_public}"): bob_public },
    });
    let user_signing = key_pair(None);
    let key_id = format!("ed25519:{}", public(&user_signing).encode());
    let uploaded = signed(stored.clone(), &alice(), &user_signing);
    uploaded_signature(&alice(), &key_id, &public(&user_signing), &uploaded, &stored).unwrap();

    // Checked against another key, or under another user's name, it does not verify.
    let other = public(&key_pair(None));
    let error = verify_signature(&alice(), &key_id, &other, &uploaded).unwrap_err();
    assert_eq!(
        error,
        KeyError::InvalidSignature {
            what: "signed key".into(),
            signer: format!("@alice:example.org {key_id}")
        }
    );
    assert!(verify_signature(&bob, &key_id, &public(&user_signing), &uploaded).is_err());
    // Only ed25519 keys sign.
    let curve_id = key_id.replace("ed25519:", "curve25519:");
    assert!(verify_signature(&alice(), &curve_id, &public(&user_signing), &uploaded).is_err());
}

#[test]
fn a_device_signature_of_the_master_key_verifies() {
    let device_key = key_pair(Some("JLAFKJWSCS"));
    let master = key_pair(None);
    let master_public = public(&master).encode();
    let stored = json!({
        "user_id": "@alice:example.org",
        "usage": ["master"],
        "keys": { format!("ed25519:{master_public}"): master_public },
    });
    let uploaded = signed(stored.clone(), &alice(), &device_key);
    let signature =
        uploaded_signature(&alice(), "ed25519:JLAFKJWSCS", &public(&device_key), &uploaded, &stored).unwrap();
    assert_eq!(Ed25519PublicKey::parse(&master_public).unwrap(), public(&master));
    assert!(!signature.is_empty());
}
