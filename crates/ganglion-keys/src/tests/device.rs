use super::*;

fn check(value: &Value) -> Result<DeviceKeys, KeyError> {
    check_device_keys(value, &alice(), device_id())
}

#[test]
fn client_signed_device_keys_are_accepted_and_stored_without_unsigned() {
    let key = key_pair(Some("JLAFKJWSCS"));
    let mut value = device_keys(&key);
    // `unsigned` is added by servers and not covered by the signature.
    value["unsigned"] = json!({ "device_display_name": "Alice's phone" });
    let checked = check(&value).unwrap();
    assert_eq!(checked.ed25519_key, public(&key));
    let stored: Value = serde_json::from_str(&checked.json).unwrap();
    assert_eq!(stored.get("unsigned"), None);
    assert_eq!(stored["signatures"], value["signatures"]);
    assert_eq!(stored["keys"], value["keys"]);
    // Stored JSON is canonical: sorted keys, no spaces.
    assert!(checked.json.starts_with(r#"{"algorithms":["m.olm.v1.curve25519-aes-sha2","#));
}

#[test]
fn keys_of_another_user_or_device_are_invalid_params() {
    let key = key_pair(Some("JLAFKJWSCS"));
    let value = device_keys(&key);
    let bob = UserId::parse("@bob:example.org").unwrap();
    let error = check_device_keys(&value, &bob, device_id()).unwrap_err();
    assert_eq!(
        error,
        KeyError::WrongOwner {
            what: "device_keys.user_id".into(),
            expected: "@bob:example.org".into(),
            found: "@alice:example.org".into(),
        }
    );
    assert_eq!(error.class(), ErrorClass::InvalidParam);
    let error = check_device_keys(&value, &alice(), "OTHER".into()).unwrap_err();
    assert!(matches!(&error, KeyError::WrongOwner { what, .. } if what == "device_keys.device_id"));
}

#[test]
fn malformed_device_keys_are_bad_json() {
    let key = key_pair(Some("JLAFKJWSCS"));
    let mutations: [Mutation; 7] = [
        ("not an object", |value| *value = json!([])),
        ("no algorithms", |value| drop(value.as_object_mut().unwrap().remove("algorithms"))),
        ("algorithms not strings", |value| value["algorithms"] = json!([1])),
        ("no curve25519 key", |value| {
            value["keys"].as_object_mut().unwrap().remove("curve25519:JLAFKJWSCS");
        }),
        ("ed25519 key not base64", |value| value["keys"]["ed25519:JLAFKJWSCS"] = json!("not base64!")),
        ("a float", |value| value["unsigned"] = json!({ "age": 1.5 })),
        ("a key value not a string", |value| value["keys"]["other:JLAFKJWSCS"] = json!(1)),
    ];
    for (name, mutate) in mutations {
        let mut value = device_keys(&key);
        mutate(&mut value);
        let error = check(&value).unwrap_err();
        assert!(matches!(error, KeyError::Malformed { .. }), "{name}: {error:?}");
        assert_eq!(error.class(), ErrorClass::BadJson, "{name}");
    }
}

#[test]
fn device_keys_need_the_device_key_own_signature() {
    let key = key_pair(Some("JLAFKJWSCS"));
    let signature_error = |value: &Value| {
        let error = check(value).unwrap_err();
        assert_eq!(
            error,
            KeyError::InvalidSignature {
                what: "device_keys".into(),
                signer: "@alice:example.org ed25519:JLAFKJWSCS".into()
            }
        );
        error
    };

    // Changed after signing.
    let mut value = device_keys(&key);
    value["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    signature_error(&value);

    // Signed by a key other than the one it publishes.
    let mut value = device_keys(&key);
    value.as_object_mut().unwrap().remove("signatures");
    sign(&mut value, &alice(), &key_pair(Some("JLAFKJWSCS")));
    signature_error(&value);

    // Unsigned, or signed under another user's name.
    let mut value = device_keys(&key);
    value.as_object_mut().unwrap().remove("signatures");
    signature_error(&value);
    sign(&mut value, &UserId::parse("@bob:example.org").unwrap(), &key);
    signature_error(&value);

    // A signature that is not base64.
    let mut value = device_keys(&key);
    value["signatures"]["@alice:example.org"]["ed25519:JLAFKJWSCS"] = json!("%%%");
    assert_eq!(signature_error(&value).class(), ErrorClass::InvalidSignature);
}
