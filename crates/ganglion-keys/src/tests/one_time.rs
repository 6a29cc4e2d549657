use super::*;

fn signed_key(device_key: &Ed25519KeyPair, byte: u8, fallback: Option<bool>) -> Value {
    let mut value = json!({ "key": some_key(byte) });
    if let Some(fallback) = fallback {
        value["fallback"] = json!(fallback);
    }
    signed(value, &alice(), device_key)
}

fn check(keys: &Value, device_key: Option<&Ed25519KeyPair>) -> Result<Vec<OneTimeKey>, KeyError> {
    check_one_time_keys(keys, &alice(), device_id(), device_key.map(public).as_ref())
}

fn check_fallback(keys: &Value, device_key: &Ed25519KeyPair) -> Result<Vec<OneTimeKey>, KeyError> {
    check_fallback_keys(keys, &alice(), device_id(), Some(&public(device_key)))
}

#[test]
fn signed_and_plain_one_time_keys_are_accepted() {
    let key = key_pair(Some("JLAFKJWSCS"));
    let keys = json!({
        "signed_curve25519:AAAAHg": signed_key(&key, 1, None),
        "signed_curve25519:AAAAHQ": signed_key(&key, 2, None),
        "curve25519:AAAAAQ": some_key(3),
        "org.example.custom:1": { "anything": ["goes"] },
    });
    let checked = check(&keys, Some(&key)).unwrap();
    let ids: Vec<&str> = checked.iter().map(|key| key.key_id.as_str()).collect();
    assert_eq!(
        ids,
        ["curve25519:AAAAAQ", "org.example.custom:1", "signed_curve25519:AAAAHQ", "signed_curve25519:AAAAHg"]
    );
    assert_eq!(checked[0].json, format!("\"{}\"", some_key(3)));
    assert_eq!(checked[3].algorithm(), ruma::OneTimeKeyAlgorithm::SignedCurve25519);
    let stored: Value = serde_json::from_str(&checked[3].json).unwrap();
    assert_eq!(stored, keys["signed_curve25519:AAAAHg"]);
}

#[test]
fn signed_one_time_keys_are_verified_when_the_device_key_is_known() {
    let key = key_pair(Some("JLAFKJWSCS"));
    let other = key_pair(Some("JLAFKJWSCS"));
    let forged = json!({ "signed_curve25519:AAAAHg": signed_key(&other, 1, None) });
    let error = check(&forged, Some(&key)).unwrap_err();
    assert_eq!(
        error,
        KeyError::InvalidSignature {
            what: "one_time_keys.signed_curve25519:AAAAHg".into(),
            signer: "@alice:example.org ed25519:JLAFKJWSCS".into(),
        }
    );
    // Without the device's key (no device keys uploaded yet) only the shape is checked.
    assert_eq!(check(&forged, None).unwrap().len(), 1);

    let mut tampered = json!({ "signed_curve25519:AAAAHg": signed_key(&key, 1, None) });
    tampered["signed_curve25519:AAAAHg"]["key"] = json!(some_key(9));
    assert!(matches!(check(&tampered, Some(&key)), Err(KeyError::InvalidSignature { .. })));
}

#[test]
fn malformed_one_time_keys_are_refused() {
    let key = key_pair(Some("JLAFKJWSCS"));
    let cases = [
        ("not an object", json!([])),
        ("signed key as a string", json!({ "signed_curve25519:A": some_key(1) })),
        ("signed key without signatures", json!({ "signed_curve25519:A": { "key": some_key(1) } })),
        (
            "signed key not base64",
            json!({ "signed_curve25519:A": signed(json!({ "key": "!" }), &alice(), &key) }),
        ),
        ("curve25519 key too short", json!({ "curve25519:A": "AAAA" })),
        ("curve25519 key as an object", json!({ "curve25519:A": {} })),
        ("a number", json!({ "org.example:A": 1 })),
        ("fallback not a boolean", json!({ "signed_curve25519:A": signed_key_with(&key, json!("yes")) })),
    ];
    for (name, keys) in cases {
        let error = check(&keys, Some(&key)).unwrap_err();
        assert_eq!(error.class(), ErrorClass::BadJson, "{name}: {error:?}");
    }
    for key_id in ["nocolon", ":AAAA", "signed_curve25519:", &format!("a:{}", "x".repeat(MAX_KEY_ID_BYTES))] {
        let error = check(&json!({ key_id: some_key(1) }), None).unwrap_err();
        assert!(matches!(error, KeyError::Invalid { .. }), "{key_id}: {error:?}");
        assert_eq!(error.class(), ErrorClass::InvalidParam);
    }
}

fn signed_key_with(device_key: &Ed25519KeyPair, fallback: Value) -> Value {
    signed(json!({ "key": some_key(1), "fallback": fallback }), &alice(), device_key)
}

#[test]
fn one_request_carries_at_most_a_hundred_keys() {
    let many = |count: usize| {
        Value::Object((0..count).map(|index| (format!("curve25519:{index}"), json!(some_key(1)))).collect())
    };
    assert_eq!(check(&many(MAX_ONE_TIME_KEYS_PER_REQUEST), None).unwrap().len(), 100);
    let error = check(&many(MAX_ONE_TIME_KEYS_PER_REQUEST + 1), None).unwrap_err();
    assert_eq!(error.to_string(), "one_time_keys: at most 100 keys per request, not 101");
    assert_eq!(error.class(), ErrorClass::InvalidParam);
}

#[test]
fn fallback_keys_hold_one_key_per_algorithm() {
    let key = key_pair(Some("JLAFKJWSCS"));
    let one = json!({ "signed_curve25519:AAAAGj": signed_key(&key, 1, Some(true)) });
    let checked = check_fallback(&one, &key).unwrap();
    assert_eq!(checked[0].key_id.as_str(), "signed_curve25519:AAAAGj");

    let two = json!({
        "signed_curve25519:AAAAGj": signed_key(&key, 1, Some(true)),
        "signed_curve25519:AAAAGk": signed_key(&key, 2, Some(true)),
    });
    let error = check_fallback(&two, &key).unwrap_err();
    assert_eq!(error.to_string(), "fallback_keys: more than one signed_curve25519 key");

    // The flag is covered by the signature, so the server cannot fix it: `false` is refused,
    // a missing flag tolerated (the spec says "should").
    let flagged_false = json!({ "signed_curve25519:AAAAGj": signed_key(&key, 1, Some(false)) });
    assert_eq!(class(check_fallback(&flagged_false, &key)), ErrorClass::InvalidParam);
    let unflagged = json!({ "signed_curve25519:AAAAGj": signed_key(&key, 1, None) });
    assert!(check_fallback(&unflagged, &key).is_ok());
    // In `one_time_keys` the flag is not checked.
    assert!(check(&flagged_false, Some(&key)).is_ok());
}

#[test]
fn a_resent_key_matches_its_stored_copy_whatever_its_signatures() {
    let key = key_pair(Some("JLAFKJWSCS"));
    let upload = |value: Value| check(&json!({ "signed_curve25519:AAAAHg": value }), None).unwrap().remove(0);
    let first = upload(signed_key(&key, 1, None));
    let resigned = upload(signed_key(&key_pair(Some("JLAFKJWSCS")), 1, None));
    assert!(resigned.matches_stored(&first.json));
    let reused_id = upload(signed_key(&key, 2, None));
    assert!(!reused_id.matches_stored(&first.json));
    assert!(!first.matches_stored("not json"));

    let plain = check(&json!({ "curve25519:A": some_key(1) }), None).unwrap().remove(0);
    assert!(plain.matches_stored(&format!("\"{}\"", some_key(1))));
    assert!(!plain.matches_stored(&format!("\"{}\"", some_key(2))));
}
