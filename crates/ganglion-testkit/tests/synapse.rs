//! The Synapse fixture: a real Synapse (PyPI, pinned) comes up on loopback, serves its keys over
//! TLS under the server name the fixture reports, registers a user who creates a room, and comes
//! back after a stop with the same server name, signing key and data.

use std::time::Instant;

use ganglion_testkit::{Account, Synapse};
use serde_json::{Value, json};

/// `GET /_matrix/key/v2/server` on the federation port, over TLS.
async fn server_keys(synapse: &Synapse) -> Value {
    let url = format!("{}/_matrix/key/v2/server", synapse.federation_url());
    let response = synapse.http().get(&url).send().await.unwrap();
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.json().await.unwrap()
}

#[tokio::test]
async fn synapse_federates_on_loopback_and_survives_a_restart() {
    let started = Instant::now();
    let mut synapse = Synapse::start().await.unwrap();
    eprintln!(
        "Synapse {} up in {:?} at {}",
        synapse.server_name(),
        started.elapsed(),
        synapse.dir().display()
    );
    assert!(synapse.federation_url().starts_with("https://127.0.0.1:"));
    assert!(synapse.client_url().starts_with("http://127.0.0.1:"));

    let keys = server_keys(&synapse).await;
    assert_eq!(keys["server_name"], synapse.server_name(), "{keys}");
    let verify_keys = keys["verify_keys"].as_object().unwrap();
    let (key_id, key) = verify_keys.iter().next().unwrap_or_else(|| panic!("no verify_keys: {keys}"));
    assert!(key_id.starts_with("ed25519:"), "{keys}");
    assert!(key["key"].as_str().is_some_and(|key| !key.is_empty()), "{keys}");
    assert!(keys["signatures"][synapse.server_name()][key_id].is_string(), "{keys}");

    let (user_id, access_token) = synapse.register("alice", "alice-password").await.unwrap();
    assert_eq!(user_id, format!("@alice:{}", synapse.server_name()));
    let alice = Account::new(synapse.client_api(), &user_id, &access_token, "");
    let room_id = alice.create_room(&json!({ "preset": "public_chat", "name": "interop" })).await.unwrap();
    // Room version 12 (Synapse's default) room IDs carry no server name.
    assert!(room_id.starts_with('!'), "{room_id}");
    let joined = alice.get("/joined_rooms").await.unwrap().ok();
    assert_eq!(joined["joined_rooms"], json!([room_id]));

    synapse.stop().await.unwrap();
    assert!(!synapse.is_running());
    assert!(synapse.http().get(synapse.client_url()).send().await.is_err(), "Synapse still answers");

    let restarted = Instant::now();
    synapse.restart().await.unwrap();
    eprintln!("Synapse restarted in {:?}", restarted.elapsed());
    let keys_after = server_keys(&synapse).await;
    assert_eq!(keys_after["server_name"], synapse.server_name());
    assert_eq!(keys_after["verify_keys"], keys["verify_keys"], "the signing key changed across a restart");
    let joined = alice.get("/joined_rooms").await.unwrap().ok();
    assert_eq!(joined["joined_rooms"], json!([room_id]), "{}", synapse.log());
}
