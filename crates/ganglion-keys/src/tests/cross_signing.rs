use ruma::encryption::KeyUsage;

use super::*;

/// A cross-signing key object for `key_pair`, signed by `signer` when given.
fn cross_signing_key(key_pair: &Ed25519KeyPair, usage: &str, signer: Option<&Ed25519KeyPair>) -> Value {
    let public_key = public(key_pair).encode();
    let value = json!({
        "user_id": "@alice:example.org",
        "usage": [usage],
        "keys": { format!("ed25519:{public_key}"): public_key },
    });
    match signer {
        Some(signer) => signed(value, &alice(), signer),
        None => value,
    }
}

struct Keys {
    master: Ed25519KeyPair,
    self_signing: Ed25519KeyPair,
    user_signing: Ed25519KeyPair,
}

fn keys() -> Keys {
    Keys { master: key_pair(None), self_signing: key_pair(None), user_signing: key_pair(None) }
}

#[test]
fn a_first_upload_of_all_three_keys_is_accepted() {
    let keys = keys();
    let master = cross_signing_key(&keys.master, "master", None);
    let self_signing = cross_signing_key(&keys.self_signing, "self_signing", Some(&keys.master));
    let user_signing = cross_signing_key(&keys.user_signing, "user_signing", Some(&keys.master));
    let checked =
        check_cross_signing_keys(Some(&master), Some(&self_signing), Some(&user_signing), &alice(), None)
            .unwrap();
    let master_key = checked.master.as_ref().unwrap();
    assert_eq!(master_key.public_key, public(&keys.master));
    assert_eq!(master_key.key_id(), format!("ed25519:{}", public(&keys.master).encode()));
    assert_eq!(checked.self_signing.as_ref().unwrap().public_key, public(&keys.self_signing));
    let stored: Value = serde_json::from_str(&checked.user_signing.as_ref().unwrap().json).unwrap();
    assert_eq!(stored, user_signing);
    let public_keys: Vec<String> = checked.public_keys().collect();
    assert_eq!(public_keys.len(), 3);
    assert!(public_keys.contains(&public(&keys.self_signing).encode()));
}

#[test]
fn subkeys_alone_are_checked_against_the_existing_master_key() {
    let keys = keys();
    let self_signing = cross_signing_key(&keys.self_signing, "self_signing", Some(&keys.master));
    let checked =
        check_cross_signing_keys(None, Some(&self_signing), None, &alice(), Some(&public(&keys.master)))
            .unwrap();
    assert_eq!(checked.master, None);
    assert_eq!(checked.user_signing, None);
    assert_eq!(checked.self_signing.unwrap().public_key, public(&keys.self_signing));

    let error = check_cross_signing_keys(None, Some(&self_signing), None, &alice(), None).unwrap_err();
    assert_eq!(error, KeyError::NoMasterKey);
    assert_eq!(error.class(), ErrorClass::MissingParam);
    // Nothing to check, nothing refused.
    assert_eq!(
        check_cross_signing_keys(None, None, None, &alice(), None).unwrap(),
        CrossSigningKeys::default()
    );
}

#[test]
fn subkeys_must_be_signed_by_the_master_key_of_the_same_request() {
    let keys = keys();
    let old_master = key_pair(None);
    let master = cross_signing_key(&keys.master, "master", None);
    let by_old_master = cross_signing_key(&keys.user_signing, "user_signing", Some(&old_master));
    let error = check_cross_signing_keys(
        Some(&master),
        None,
        Some(&by_old_master),
        &alice(),
        Some(&public(&old_master)),
    )
    .unwrap_err();
    assert_eq!(
        error,
        KeyError::InvalidSignature {
            what: "user_signing_key".into(),
            signer: format!("@alice:example.org ed25519:{}", public(&keys.master).encode()),
        }
    );

    // Signed by the right key, then changed.
    let mut tampered = cross_signing_key(&keys.self_signing, "self_signing", Some(&keys.master));
    tampered["usage"] = json!(["self_signing", "user_signing"]);
    let unsigned = cross_signing_key(&keys.self_signing, "self_signing", None);
    let self_signed = cross_signing_key(&keys.self_signing, "self_signing", Some(&keys.self_signing));
    for key in [tampered, unsigned, self_signed] {
        let result = check_cross_signing_keys(Some(&master), Some(&key), None, &alice(), None);
        assert!(matches!(result, Err(KeyError::InvalidSignature { .. })), "{result:?}");
    }
}

#[test]
fn cross_signing_keys_must_have_the_right_owner_usage_and_single_key() {
    let keys = keys();
    let check = |value: &Value| check_cross_signing_key(value, &alice(), KeyUsage::Master, None);
    let public_key = public(&keys.master).encode();

    let mut value = cross_signing_key(&keys.master, "master", None);
    value["user_id"] = json!("@bob:example.org");
    assert!(matches!(check(&value), Err(KeyError::WrongOwner { .. })));

    let value = cross_signing_key(&keys.master, "self_signing", None);
    assert_eq!(check(&value).unwrap_err().to_string(), "master_key.usage: must contain master");

    let mut value = cross_signing_key(&keys.master, "master", None);
    value["keys"][format!("ed25519:{}", some_key(1))] = json!(some_key(1));
    assert_eq!(check(&value).unwrap_err().to_string(), "master_key.keys: must hold exactly one key");

    let not_a_key = ErrorClass::BadJson;
    for (keys_field, expected) in [
        (json!({}), ErrorClass::InvalidParam),
        (json!({ format!("ed25519:{public_key}"): some_key(1) }), ErrorClass::InvalidParam),
        (json!({ format!("curve25519:{public_key}"): public_key }), ErrorClass::InvalidParam),
        (json!({ "ed25519:AAAA": "AAAA" }), not_a_key.clone()),
        // Padded base64 would give one key two ids.
        (json!({ format!("ed25519:{public_key}="): format!("{public_key}=") }), not_a_key),
    ] {
        let mut value = cross_signing_key(&keys.master, "master", None);
        value["keys"] = keys_field.clone();
        assert_eq!(class(check(&value)), expected, "{keys_field}");
    }

    let mut value = cross_signing_key(&keys.master, "master", None);
    value["usage"] = json!("master");
    assert_eq!(class(check(&value)), ErrorClass::BadJson);
}
