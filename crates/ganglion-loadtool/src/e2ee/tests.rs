use serde_json::{Map, Value, json};

use super::{MegolmSession, Noise, base64_chars, fallback_keys, olm_content, one_time_keys};

fn is_base64(text: &str) -> bool {
    text.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/')
}

#[test]
fn unpadded_base64_lengths() {
    assert_eq!(base64_chars(32), 43);
    assert_eq!(base64_chars(64), 86);
    assert_eq!(base64_chars(3), 4);
    assert_eq!(base64_chars(0), 0);
}

#[test]
fn keys_are_32_bytes_of_strict_base64_and_differ() {
    let mut noise = Noise::new(7);
    let (first, second) = (noise.key(), noise.key());
    assert_eq!(first.len(), 43);
    assert!(is_base64(&first));
    // The last character's 2 unused bits must be zero.
    assert!(first.ends_with('A'));
    assert_ne!(first, second);
}

#[test]
fn the_pool_wraps_around() {
    let mut noise = Noise::new(1);
    for _ in 0..100 {
        assert_eq!(noise.base64(1000).len(), 1000);
    }
}

#[test]
fn megolm_content_has_the_fields_and_the_size_of_a_real_event() {
    let mut noise = Noise::new(3);
    let session = MegolmSession::new(&mut noise, "DEVICE");
    let mut extra = Map::new();
    extra.insert("load_seq".into(), json!(4));
    let content = session.content(200, &mut noise, extra);
    assert_eq!(content["algorithm"], "m.megolm.v1.aes-sha2");
    assert_eq!(content["device_id"], "DEVICE");
    assert_eq!(content["sender_key"].as_str().unwrap().len(), 43);
    assert_eq!(content["session_id"].as_str().unwrap().len(), 43);
    assert_eq!(content["ciphertext"].as_str().unwrap().len(), base64_chars(300));
    assert_eq!(content["load_seq"], 4);
}

#[test]
fn olm_content_is_addressed_to_the_recipient_key() {
    let mut noise = Noise::new(5);
    let content = olm_content("SENDER", "RECIPIENT", &mut noise, Map::new());
    assert_eq!(content["algorithm"], "m.olm.v1.curve25519-aes-sha2");
    assert_eq!(content["sender_key"], "SENDER");
    assert_eq!(content["ciphertext"]["RECIPIENT"]["type"], 1);
    assert_eq!(content["ciphertext"]["RECIPIENT"]["body"].as_str().unwrap().len(), 1000);
}

#[test]
fn one_time_keys_are_numbered_signed_and_distinct() {
    let mut noise = Noise::new(9);
    let keys = one_time_keys("@u:x", "DEV", 100, 3, &mut noise);
    let keys = keys.as_object().unwrap();
    let ids: Vec<&String> = keys.keys().collect();
    assert_eq!(
        ids,
        ["signed_curve25519:00000000100", "signed_curve25519:00000000101", "signed_curve25519:00000000102"]
    );
    let values: Vec<&Value> = keys.values().collect();
    assert_ne!(values[0]["key"], values[1]["key"]);
    assert_eq!(values[0]["signatures"]["@u:x"]["ed25519:DEV"].as_str().unwrap().len(), 86);
    assert!(values[0].get("fallback").is_none());

    let fallback = fallback_keys("@u:x", "DEV", &mut noise);
    assert_eq!(fallback["signed_curve25519:fallback"]["fallback"], true);
}
