//! End-to-end encryption with a real client crypto stack (matrix-sdk's, on vodozemac): devices
//! upload keys, claim each other's one-time keys, share room keys by to-device messages and
//! decrypt each other's messages; plus the raw endpoints' rules (claims, to-device delivery,
//! device lists, bad input).

use std::{collections::BTreeSet, time::Duration};

use ganglion_testkit::{Account, Backend, ServerOptions, TestServer, enc, sdk_client, sdk_login};
use matrix_sdk::{
    Client,
    config::SyncSettings,
    room::MessagesOptions,
    ruma::{
        OwnedRoomId, UInt,
        api::client::{
            filter::FilterDefinition,
            room::create_room::v3::{Request as CreateRoom, RoomPreset},
            sync::sync_events::v3::Filter,
        },
        events::{
            AnyInitialStateEvent, InitialStateEvent,
            room::{encryption::RoomEncryptionEventContent, message::RoomMessageEventContent},
        },
        serde::Raw,
    },
};
use serde_json::{Value, json};

use crate::{PASSWORD, SYNC_DEADLINE, account_of, initial_since, register_all, start, sync_until};

on_all_backends!(
    two_users_with_two_devices_each_decrypt_every_message,
    a_device_added_later_decrypts_new_messages,
    a_one_time_key_is_never_handed_out_twice,
    to_device_messages_arrive_once_and_are_deleted_once_acknowledged,
    device_lists_follow_devices_and_memberships,
    bad_key_uploads_are_refused_and_store_nothing,
    invite_only_rooms_are_encrypted_when_the_server_says_so,
    cross_signing_and_sas_verify_a_new_device,
    a_key_backup_restores_history_on_a_fresh_device,
    device_keys_may_be_uploaded_again_but_not_changed,
);

fn sync_settings() -> SyncSettings {
    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = Some(UInt::from(50u32));
    SyncSettings::default().timeout(Duration::from_millis(200)).filter(Filter::FilterDefinition(filter))
}

/// One sync round for every client, each after the one before (a client's uploads and
/// key-sharing to-device messages go out with its sync).
pub(crate) async fn sync_all(clients: &[&Client]) {
    for client in clients {
        client.sync_once(sync_settings()).await.unwrap();
    }
}

/// The bodies `client` can decrypt in `room_id`, from the room's history.
async fn decrypted_bodies(client: &Client, room_id: &OwnedRoomId) -> BTreeSet<String> {
    let Some(room) = client.get_room(room_id) else { return BTreeSet::new() };
    let messages = room.messages(MessagesOptions::backward()).await.unwrap();
    messages
        .chunk
        .iter()
        .filter(|event| event.encryption_info().is_some())
        .filter_map(|event| {
            let json: Value = serde_json::from_str(event.raw().json().get()).ok()?;
            (json["type"] == "m.room.message").then(|| json["content"]["body"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Syncs every client until each decrypts every body of `expected` in `room_id`.
pub(crate) async fn until_all_decrypt(
    clients: &[&Client],
    room_id: &OwnedRoomId,
    expected: &BTreeSet<String>,
) {
    let rounds = async {
        loop {
            sync_all(clients).await;
            let mut missing = Vec::new();
            for client in clients {
                let seen = decrypted_bodies(client, room_id).await;
                if !expected.is_subset(&seen) {
                    missing.push(format!(
                        "{} {}: {:?}",
                        client.user_id().unwrap(),
                        client.device_id().unwrap(),
                        expected.difference(&seen).collect::<Vec<_>>()
                    ));
                }
            }
            if missing.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(SYNC_DEADLINE, rounds).await.is_err() {
        let mut report = Vec::new();
        for client in clients {
            let seen = decrypted_bodies(client, room_id).await;
            report.push(format!("{} decrypted {seen:?}", client.device_id().unwrap()));
        }
        panic!("not every device decrypted every one of {expected:?}: {report:#?}");
    }
}

/// An encrypted room created by `creator` with `members` invited and joined; every client has
/// synced it.
pub(crate) async fn encrypted_room(creator: &Client, members: &[&Client], all: &[&Client]) -> OwnedRoomId {
    let mut request = CreateRoom::new();
    request.preset = Some(RoomPreset::PrivateChat);
    request.invite = members.iter().map(|member| member.user_id().unwrap().to_owned()).collect();
    let encryption =
        InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults());
    request.initial_state = vec![Raw::new(&encryption).unwrap().cast::<AnyInitialStateEvent>()];
    let room_id = creator.create_room(request).await.unwrap().room_id().to_owned();
    for member in members {
        member.join_room_by_id(&room_id).await.unwrap();
    }
    let joined = async {
        loop {
            sync_all(all).await;
            if all.iter().all(|client| {
                client.get_room(&room_id).is_some_and(|room| room.encryption_state().is_encrypted())
            }) {
                return;
            }
        }
    };
    tokio::time::timeout(SYNC_DEADLINE, joined).await.expect("every client sees the encrypted room");
    room_id
}

pub(crate) async fn send_text(client: &Client, room_id: &OwnedRoomId, body: &str) {
    let room = client.get_room(room_id).unwrap();
    room.send(RoomMessageEventContent::text_plain(body)).await.unwrap();
}

async fn two_users_with_two_devices_each_decrypt_every_message(backend: Backend) {
    let server = start(backend).await;
    let alice1 = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let alice2 = sdk_login(&server.base_url, "alice", PASSWORD).await.unwrap();
    let bob1 = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    let bob2 = sdk_login(&server.base_url, "bob", PASSWORD).await.unwrap();
    let all = [&alice1, &alice2, &bob1, &bob2];
    sync_all(&all).await;
    let room_id = encrypted_room(&alice1, &[&bob1], &all).await;

    let mut expected = BTreeSet::new();
    for (index, client) in all.iter().enumerate() {
        let body = format!("secret {index} from {}", client.device_id().unwrap());
        send_text(client, &room_id, &body).await;
        expected.insert(body);
        sync_all(&all).await;
    }
    until_all_decrypt(&all, &room_id, &expected).await;

    // The server only ever saw ciphertext.
    let raw = account_of(&server, &bob1);
    let events = crate::paginate(&raw, room_id.as_str(), "b", None, 50).await;
    let encrypted = events.iter().filter(|event| event["type"] == "m.room.encrypted").count();
    assert_eq!(encrypted, 4, "{events:#?}");
    assert!(!events.iter().any(|event| event["type"] == "m.room.message"));
}

async fn a_device_added_later_decrypts_new_messages(backend: Backend) {
    let server = start(backend).await;
    let alice = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let bob = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    sync_all(&[&alice, &bob]).await;
    let room_id = encrypted_room(&alice, &[&bob], &[&alice, &bob]).await;
    send_text(&alice, &room_id, "before").await;
    until_all_decrypt(&[&alice, &bob], &room_id, &BTreeSet::from(["before".to_owned()])).await;

    let bob_laptop = sdk_login(&server.base_url, "bob", PASSWORD).await.unwrap();
    let all = [&alice, &bob, &bob_laptop];
    // Alice learns of the new device from her sync's device-list changes and shares the next
    // room key with it too.
    let laptop = bob_laptop.device_id().unwrap().to_owned();
    let learned = async {
        loop {
            sync_all(&all).await;
            if alice.encryption().get_device(bob.user_id().unwrap(), &laptop).await.unwrap().is_some() {
                return;
            }
        }
    };
    tokio::time::timeout(SYNC_DEADLINE, learned).await.expect("Alice learns of Bob's new device");
    send_text(&alice, &room_id, "after").await;
    send_text(&bob_laptop, &room_id, "from the laptop").await;
    let expected = BTreeSet::from(["after".to_owned(), "from the laptop".to_owned()]);
    until_all_decrypt(&all, &room_id, &expected).await;
}

/// A well-formed curve25519 public key (32 bytes in unpadded base64) that starts with `seed`.
pub(crate) fn test_key(seed: &str) -> String {
    format!("{seed:A<43}")
}

/// Uploads `count` plain curve25519 one-time keys for `account`'s device.
pub(crate) async fn upload_one_time_keys(account: &Account, prefix: &str, count: usize) -> Value {
    let keys: serde_json::Map<String, Value> = (0..count)
        .map(|index| {
            (format!("curve25519:{prefix}{index:03}"), json!(test_key(&format!("{prefix}{index:03}"))))
        })
        .collect();
    account.post("/_matrix/client/v3/keys/upload", &json!({ "one_time_keys": keys })).await.unwrap().ok()
}

async fn a_one_time_key_is_never_handed_out_twice(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let counts = upload_one_time_keys(&bob, "K", 20).await;
    assert_eq!(counts["one_time_key_counts"]["curve25519"], 20);
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 0);

    // Forty claims at once, through every client-reader of a cluster.
    let claim = json!({ "one_time_keys": { bob.user_id.clone(): { bob.device_id.clone(): "curve25519" } } });
    let claims = (0..40).map(|_| {
        let alice = alice.clone();
        let claim = claim.clone();
        tokio::spawn(async move { alice.post("/_matrix/client/v3/keys/claim", &claim).await.unwrap().ok() })
    });
    let mut handed_out = Vec::new();
    let mut empty = 0;
    for answer in claims {
        let answer = answer.await.unwrap();
        match answer["one_time_keys"][&bob.user_id][&bob.device_id].as_object() {
            Some(keys) => handed_out.extend(keys.keys().cloned()),
            None => empty += 1,
        }
    }
    let distinct: BTreeSet<_> = handed_out.iter().cloned().collect();
    assert_eq!(handed_out.len(), 20, "{handed_out:?}");
    assert_eq!(distinct.len(), 20, "a key was handed out twice: {handed_out:?}");
    assert_eq!(empty, 20);

    // A fallback key is handed out once the one-time keys are gone, and stays.
    let fallback = json!({ "fallback_keys": { "curve25519:FB1": test_key("fallback") } });
    bob.post("/_matrix/client/v3/keys/upload", &fallback).await.unwrap().ok();
    let sync = bob.sync("").await.unwrap();
    assert_eq!(sync["device_unused_fallback_key_types"], json!(["curve25519"]));
    assert_eq!(sync["device_one_time_keys_count"]["curve25519"].as_i64().unwrap_or(0), 0, "{sync}");
    for _ in 0..2 {
        let answer = alice.post("/_matrix/client/v3/keys/claim", &claim).await.unwrap().ok();
        assert_eq!(
            answer["one_time_keys"][&bob.user_id][&bob.device_id],
            json!({ "curve25519:FB1": test_key("fallback") })
        );
    }
    let sync = bob.sync("").await.unwrap();
    assert_eq!(sync["device_unused_fallback_key_types"], json!([]));
}

async fn to_device_messages_arrive_once_and_are_deleted_once_acknowledged(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let mut since = initial_since(&bob, "").await;

    let send = |txn: &str, text: &str| {
        let body =
            json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "text": text } } } });
        let path = format!("/_matrix/client/v3/sendToDevice/m.test/{}", enc(txn));
        let alice = alice.clone();
        async move { alice.put(&path, &body).await.unwrap().ok() }
    };
    send("t1", "one").await;
    // A retry with the same transaction id delivers nothing more.
    send("t1", "one").await;
    send("t2", "two").await;

    // Replication may bring the two in separate responses; together they are exactly these.
    let mut events = Vec::new();
    sync_until(&bob, &mut since, "", |body| {
        events.extend(body["to_device"]["events"].as_array().into_iter().flatten().cloned());
        events.len() >= 2
    })
    .await;
    assert_eq!(
        Value::Array(events),
        json!([
            { "sender": alice.user_id, "type": "m.test", "content": { "text": "one" } },
            { "sender": alice.user_id, "type": "m.test", "content": { "text": "two" } },
        ])
    );
    // The next sync (whose `since` acknowledges them) brings them no more.
    let next = bob.sync(&format!("since={}", enc(&since))).await.unwrap();
    assert_eq!(next["to_device"]["events"], json!([]));
    // Replaying an old token after the acknowledgement finds them deleted.
    let replay = bob.sync(&format!("since={}", enc(&since))).await.unwrap();
    assert_eq!(replay["to_device"]["events"], json!([]));

    // At most 100 per response; the rest follow in order.
    for index in 0..150 {
        let body = json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "n": index } } } });
        alice.put(&format!("/_matrix/client/v3/sendToDevice/m.count/c{index}"), &body).await.unwrap().ok();
    }
    let mut seen = Vec::new();
    let drained = async {
        while seen.len() < 150 {
            let body = bob.sync(&format!("since={}&timeout=2000", enc(&since))).await.unwrap();
            since = body["next_batch"].as_str().unwrap().to_owned();
            let events = body["to_device"]["events"].as_array().unwrap();
            assert!(events.len() <= 100, "{} in one response", events.len());
            seen.extend(events.iter().map(|event| event["content"]["n"].as_i64().unwrap()));
        }
    };
    tokio::time::timeout(SYNC_DEADLINE, drained).await.expect("all 150 delivered");
    assert_eq!(seen, (0..150).collect::<Vec<_>>());

    // `*` reaches every device of the user.
    let bob_laptop = server.api().login("bob", PASSWORD).await.unwrap();
    let mut laptop_since = initial_since(&bob_laptop, "").await;
    let body = json!({ "messages": { bob.user_id.clone(): { "*": { "to": "all" } } } });
    alice.put("/_matrix/client/v3/sendToDevice/m.test/star", &body).await.unwrap().ok();
    for (account, since) in [(&bob, &mut since), (&bob_laptop, &mut laptop_since)] {
        let responses = sync_until(account, since, "", |body| {
            body["to_device"]["events"].as_array().is_some_and(|e| !e.is_empty())
        })
        .await;
        assert_eq!(responses.last().unwrap()["to_device"]["events"][0]["content"], json!({ "to": "all" }));
    }
}

fn changed(body: &Value) -> Vec<String> {
    body["device_lists"]["changed"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|user| user.as_str().unwrap().to_owned())
        .collect()
}

fn left(body: &Value) -> Vec<String> {
    body["device_lists"]["left"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|user| user.as_str().unwrap().to_owned())
        .collect()
}

async fn device_lists_follow_devices_and_memberships(backend: Backend) {
    let server = start(backend).await;
    let accounts = register_all(&server, &["alice", "bob", "carol", "dave"]).await;
    let [alice, bob, carol, dave] = <[Account; 4]>::try_from(accounts).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room).await.unwrap();
    carol.join(&room).await.unwrap();
    let mut since = initial_since(&alice, "").await;
    let keys_since = since.clone();

    // Bob's new device (with keys, uploaded by a real client) changes his device list.
    let bob_phone = sdk_login(&server.base_url, "bob", PASSWORD).await.unwrap();
    bob_phone.sync_once(sync_settings()).await.unwrap();
    let responses = sync_until(&alice, &mut since, "", |body| changed(body).contains(&bob.user_id)).await;
    assert!(responses.iter().all(|body| !changed(body).contains(&dave.user_id)));

    // A user who joins is new to the room-mates; one who leaves the only shared room is gone.
    dave.join(&room).await.unwrap();
    sync_until(&alice, &mut since, "", |body| changed(body).contains(&dave.user_id)).await;
    carol.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), &json!({})).await.unwrap().ok();
    sync_until(&alice, &mut since, "", |body| left(body).contains(&carol.user_id)).await;

    // Deleting the device with keys is a change too.
    let phone = account_of(&server, &bob_phone);
    let delete = json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" }, "password": PASSWORD } });
    let first = bob
        .delete(&format!("/_matrix/client/v3/devices/{}", phone.device_id), Some(&json!({})))
        .await
        .unwrap();
    let session = first.body["session"].as_str().unwrap_or_default().to_owned();
    let mut delete = delete;
    delete["auth"]["session"] = json!(session);
    bob.delete(&format!("/_matrix/client/v3/devices/{}", phone.device_id), Some(&delete)).await.unwrap().ok();
    sync_until(&alice, &mut since, "", |body| changed(body).contains(&bob.user_id)).await;

    // `/keys/changes` tells the same between two tokens.
    let changes = alice
        .get(&format!("/_matrix/client/v3/keys/changes?from={}&to={}", enc(&keys_since), enc(&since)))
        .await
        .unwrap()
        .ok();
    let changed_users: Vec<&str> =
        changes["changed"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    assert!(changed_users.contains(&bob.user_id.as_str()), "{changes}");
    assert!(changed_users.contains(&dave.user_id.as_str()), "{changes}");
    assert_eq!(changes["left"], json!([carol.user_id]));
}

async fn bad_key_uploads_are_refused_and_store_nothing(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let upload = |body: Value| {
        let alice = alice.clone();
        async move { alice.post("/_matrix/client/v3/keys/upload", &body).await.unwrap() }
    };
    // Keys claiming another device, unsigned keys, keys of another user.
    let device_keys = |user: &str, device: &str| {
        json!({ "device_keys": {
            "user_id": user, "device_id": device, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
            "keys": { format!("curve25519:{device}"): "a", format!("ed25519:{device}"): "bm90IGEga2V5IGF0IGFsbCBidXQgMzIgYnl0ZXMhISE" },
            "signatures": {}
        } })
    };
    upload(device_keys(&alice.user_id, "OTHERDEVICE")).await.err(400, "M_INVALID_PARAM");
    upload(device_keys(&bob.user_id, &alice.device_id)).await.err(400, "M_INVALID_PARAM");
    let unsigned = upload(device_keys(&alice.user_id, &alice.device_id)).await;
    assert!(
        matches!(unsigned.errcode(), Some("M_INVALID_SIGNATURE" | "M_BAD_JSON" | "M_INVALID_PARAM")),
        "{:?}",
        unsigned.body
    );
    assert_eq!(unsigned.status, 400);
    // Too many one-time keys at once, a malformed key id, a non-object.
    let too_many: serde_json::Map<String, Value> =
        (0..101).map(|i| (format!("curve25519:{i}"), json!("k"))).collect();
    upload(json!({ "one_time_keys": too_many })).await.err(400, "M_INVALID_PARAM");
    let bad_id = upload(json!({ "one_time_keys": { "nocolon": "k" } })).await;
    assert_eq!(bad_id.status, 400, "{:?}", bad_id.body);
    let not_object = upload(json!({ "one_time_keys": ["k"] })).await;
    assert_eq!(not_object.status, 400, "{:?}", not_object.body);
    // A reused key id with another value, in an upload that also brings a good key.
    upload_one_time_keys(&alice, "A", 1).await;
    let clash = upload(json!({ "one_time_keys": { "curve25519:A000": test_key("different"), "curve25519:NEW": test_key("new") } })).await;
    clash.err(400, "M_INVALID_PARAM");

    // Nothing of the refused uploads was stored.
    let counts = upload(json!({})).await.ok();
    assert_eq!(counts["one_time_key_counts"]["curve25519"], 1, "{counts}");
    let query = json!({ "device_keys": { alice.user_id.clone(): [] } });
    let keys = bob.post("/_matrix/client/v3/keys/query", &query).await.unwrap().ok();
    assert_eq!(keys["device_keys"][&alice.user_id], json!({}));

    // To-device: a bad user id, a message too large for one EDU.
    let bad_user = json!({ "messages": { "not-a-user": { "*": {} } } });
    alice
        .put("/_matrix/client/v3/sendToDevice/m.test/bad1", &bad_user)
        .await
        .unwrap()
        .err(400, "M_INVALID_PARAM");
    let big = "x".repeat(70_000);
    let too_big = json!({ "messages": { bob.user_id.clone(): { "*": { "blob": big } } } });
    alice.put("/_matrix/client/v3/sendToDevice/m.test/big", &too_big).await.unwrap().err(413, "M_TOO_LARGE");
    let sync = bob.sync("").await.unwrap();
    assert_eq!(sync["to_device"]["events"], json!([]));
}

async fn invite_only_rooms_are_encrypted_when_the_server_says_so(backend: Backend) {
    let options = ServerOptions {
        env: vec![("GANGLION_ROOMS__ENCRYPTION_ENABLED_BY_DEFAULT_FOR_ROOM_TYPE".into(), "invite".into())],
        ..ServerOptions::default()
    };
    let server = TestServer::start(backend, options).await.unwrap();
    let alice = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let bob = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    // Both upload their device keys first.
    sync_all(&[&alice, &bob]).await;
    let raw = account_of(&server, &alice);
    let encryption_of = async |room: &str| {
        raw.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.encryption/", enc(room))).await.unwrap()
    };
    let public = raw.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    encryption_of(&public).await.err(404, "M_NOT_FOUND");
    let private = raw.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
    assert_eq!(encryption_of(&private).await.ok(), json!({ "algorithm": "m.megolm.v1.aes-sha2" }));

    // A client sending there encrypts without being asked, and the other member decrypts.
    let room_id = OwnedRoomId::try_from(private.as_str()).unwrap();
    let raw_bob = account_of(&server, &bob);
    raw.invite(&private, &raw_bob.user_id).await.unwrap();
    raw_bob.join(&private).await.unwrap();
    sync_all(&[&alice, &bob]).await;
    send_text(&alice, &room_id, "encrypted by default").await;
    until_all_decrypt(&[&alice, &bob], &room_id, &BTreeSet::from(["encrypted by default".to_owned()])).await;
    let events = crate::paginate(&raw_bob, &private, "b", None, 50).await;
    assert!(events.iter().any(|event| event["type"] == "m.room.encrypted"));
    assert!(!events.iter().any(|event| event["type"] == "m.room.message"));
}

/// Syncs both clients until `done` holds.
async fn until(clients: &[&Client], what: &str, done: impl AsyncFn() -> bool) {
    let rounds = async {
        loop {
            sync_all(clients).await;
            if done().await {
                return;
            }
        }
    };
    tokio::time::timeout(SYNC_DEADLINE, rounds)
        .await
        .unwrap_or_else(|_| panic!("{what} within {SYNC_DEADLINE:?}"));
}

async fn cross_signing_and_sas_verify_a_new_device(backend: Backend) {
    let server = start(backend).await;
    let phone = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    sync_all(&[&phone]).await;
    // A first upload of cross-signing keys needs no password: the spec lets a client bootstrap.
    phone.encryption().bootstrap_cross_signing(None).await.unwrap();
    let status = phone.encryption().cross_signing_status().await.unwrap();
    assert!(status.is_complete(), "{status:?}");

    let laptop = sdk_login(&server.base_url, "alice", PASSWORD).await.unwrap();
    let both = [&phone, &laptop];
    let alice = phone.user_id().unwrap().to_owned();
    let (phone_id, laptop_id) =
        (phone.device_id().unwrap().to_owned(), laptop.device_id().unwrap().to_owned());
    // Each learns of the other from its sync's device-list changes (a request from a device the
    // phone does not know yet would be dropped).
    until(&both, "each device sees the other", async || {
        laptop.encryption().get_device(&alice, &phone_id).await.unwrap().is_some()
            && phone.encryption().get_device(&alice, &laptop_id).await.unwrap().is_some()
    })
    .await;
    let phone_on_laptop = laptop.encryption().get_device(&alice, &phone_id).await.unwrap().unwrap();
    assert!(
        !laptop
            .encryption()
            .get_device(&alice, &laptop_id)
            .await
            .unwrap()
            .unwrap()
            .is_cross_signed_by_owner()
    );

    // The laptop asks the phone for a verification; both go through SAS by to-device messages.
    let request = phone_on_laptop.request_verification().await.unwrap();
    let flow_id = request.flow_id().to_owned();
    until(&both, "the phone receives the request", async || {
        phone.encryption().get_verification_request(&alice, &flow_id).await.is_some()
    })
    .await;
    phone.encryption().get_verification_request(&alice, &flow_id).await.unwrap().accept().await.unwrap();
    until(&both, "the request is ready", async || request.is_ready()).await;
    let laptop_sas = request.start_sas().await.unwrap().expect("SAS started");
    until(&both, "the phone sees the SAS", async || {
        phone.encryption().get_verification(&alice, &flow_id).await.and_then(|v| v.sas()).is_some()
    })
    .await;
    let phone_sas = phone.encryption().get_verification(&alice, &flow_id).await.unwrap().sas().unwrap();
    phone_sas.accept().await.unwrap();
    until(&both, "both can show the emoji", async || {
        laptop_sas.can_be_presented() && phone_sas.can_be_presented()
    })
    .await;
    let symbols = |sas: &matrix_sdk::encryption::verification::SasVerification| {
        sas.emoji().unwrap().iter().map(|emoji| emoji.symbol).collect::<Vec<_>>()
    };
    assert_eq!(symbols(&laptop_sas), symbols(&phone_sas));
    laptop_sas.confirm().await.unwrap();
    phone_sas.confirm().await.unwrap();
    until(&both, "the verification is done", async || laptop_sas.is_done() && phone_sas.is_done()).await;

    // The phone, which holds the self-signing key, signed the laptop; every client sees it.
    until(&both, "the laptop is cross-signed", async || {
        phone
            .encryption()
            .get_device(&alice, &laptop_id)
            .await
            .unwrap()
            .is_some_and(|d| d.is_cross_signed_by_owner())
    })
    .await;
    let observer = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    let raw = account_of(&server, &observer);
    let keys = raw
        .post("/_matrix/client/v3/keys/query", &json!({ "device_keys": { alice.as_str(): [] } }))
        .await
        .unwrap()
        .ok();
    let self_signing =
        keys["self_signing_keys"][alice.as_str()]["keys"].as_object().unwrap().keys().next().unwrap().clone();
    let signatures = &keys["device_keys"][alice.as_str()][laptop_id.as_str()]["signatures"][alice.as_str()];
    assert!(signatures.get(&self_signing).is_some(), "no self-signing signature on the laptop: {keys}");
    assert!(keys["master_keys"][alice.as_str()].is_object());
    assert!(
        keys["user_signing_keys"].get(alice.as_str()).is_none(),
        "another user's user-signing key is private"
    );

    // Replacing cross-signing keys now asks for the password.
    let replace = account_of(&server, &phone)
        .post("/_matrix/client/v3/keys/device_signing/upload", &keys_of_user(&keys, alice.as_str()))
        .await
        .unwrap();
    assert_eq!(replace.status, 401, "{}", replace.text);
    assert!(replace.body["flows"].is_array());
}

fn keys_of_user(keys: &Value, user: &str) -> Value {
    json!({ "master_key": keys["master_keys"][user], "self_signing_key": keys["self_signing_keys"][user] })
}

async fn a_key_backup_restores_history_on_a_fresh_device(backend: Backend) {
    let server = start(backend).await;
    let alice = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let bob = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    sync_all(&[&alice, &bob]).await;
    let room_id = encrypted_room(&alice, &[&bob], &[&alice, &bob]).await;
    send_text(&bob, &room_id, "history 1").await;
    send_text(&alice, &room_id, "history 2").await;
    let history = BTreeSet::from(["history 1".to_owned(), "history 2".to_owned()]);
    until_all_decrypt(&[&alice, &bob], &room_id, &history).await;

    // Recovery: cross-signing, secret storage and a key backup holding the room keys.
    let recovery_key =
        alice.encryption().recovery().enable().wait_for_backups_to_upload().await.expect("recovery enabled");
    let version = account_of(&server, &alice).get("/_matrix/client/v3/room_keys/version").await.unwrap().ok();
    assert!(version["count"].as_u64().unwrap() >= 2, "{version}");

    // A fresh device knows nothing, until it recovers with the key and downloads the backup.
    let fresh = sdk_login(&server.base_url, "alice", PASSWORD).await.unwrap();
    fresh.sync_once(sync_settings()).await.unwrap();
    assert!(decrypted_bodies(&fresh, &room_id).await.is_empty());
    fresh.encryption().recovery().recover(&recovery_key).await.expect("recovered");
    fresh.encryption().backups().download_room_keys_for_room(&room_id).await.expect("backup downloaded");
    let restored = async {
        loop {
            if history.is_subset(&decrypted_bodies(&fresh, &room_id).await) {
                return;
            }
            fresh.sync_once(sync_settings()).await.unwrap();
        }
    };
    tokio::time::timeout(SYNC_DEADLINE, restored).await.expect("the fresh device decrypts the history");
}

/// A device's identity key pair, as a client makes it: named `ed25519:<device id>`.
pub(crate) fn device_key_pair(device_id: &str) -> ruma::signatures::Ed25519KeyPair {
    let document = ruma::signatures::Ed25519KeyPair::generate();
    ruma::signatures::Ed25519KeyPair::from_der(&document, device_id.to_owned()).unwrap()
}

/// The device's keys, signed by `key_pair` as a client signs them.
pub(crate) fn signed_device_keys(
    account: &Account,
    key_pair: &ruma::signatures::Ed25519KeyPair,
    curve: &str,
) -> Value {
    use base64::Engine as _;
    let ed25519 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key_pair.public_key());
    let keys = json!({
        "user_id": account.user_id,
        "device_id": account.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", account.device_id): test_key(curve),
            format!("ed25519:{}", account.device_id): ed25519,
        },
    });
    let mut object: ruma::CanonicalJsonObject = serde_json::from_value(keys).unwrap();
    ruma::signatures::sign_json(&account.user_id, key_pair, &mut object).unwrap();
    serde_json::to_value(object).unwrap()
}

async fn device_keys_may_be_uploaded_again_but_not_changed(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let key_pair = device_key_pair(&alice.device_id);
    let keys = signed_device_keys(&alice, &key_pair, "curve");
    let upload = |keys: Value| {
        let alice = alice.clone();
        async move { alice.post("/_matrix/client/v3/keys/upload", &json!({ "device_keys": keys })).await.unwrap() }
    };
    upload(keys.clone()).await.ok();
    // A client that lost the answer uploads the same keys again.
    upload(keys.clone()).await.ok();
    // Other identity keys for the same device, however well signed, are refused.
    let other = signed_device_keys(&alice, &device_key_pair(&alice.device_id), "other");
    upload(other).await.err(400, "M_INVALID_PARAM");
    let query = json!({ "device_keys": { alice.user_id.clone(): [] } });
    let stored = bob.post("/_matrix/client/v3/keys/query", &query).await.unwrap().ok();
    let device = &stored["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(device["keys"], keys["keys"], "{stored}");
    assert_eq!(device["signatures"], keys["signatures"]);

    // A signature that does not verify is reported per key, and stores nothing.
    let cross = sdk_login(&server.base_url, "alice", PASSWORD).await.unwrap();
    cross.sync_once(sync_settings()).await.unwrap();
    cross.encryption().bootstrap_cross_signing(None).await.unwrap();
    let own = account_of(&server, &cross);
    let mine = own.post("/_matrix/client/v3/keys/query", &query).await.unwrap().ok();
    let self_signing =
        mine["self_signing_keys"][&alice.user_id]["keys"].as_object().unwrap().keys().next().unwrap().clone();
    let mut forged = keys.clone();
    forged["signatures"][&alice.user_id][&self_signing] =
        json!(test_key("forged").repeat(2)[..86].to_owned());
    let answer = own
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            &json!({ alice.user_id.clone(): { alice.device_id.clone(): forged } }),
        )
        .await
        .unwrap()
        .ok();
    let failure = &answer["failures"][&alice.user_id][&alice.device_id];
    assert_eq!(failure["errcode"], "M_INVALID_SIGNATURE", "{answer}");
    let after = bob.post("/_matrix/client/v3/keys/query", &query).await.unwrap().ok();
    let signatures = &after["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id];
    assert!(signatures.get(&self_signing).is_none(), "a forged signature was stored: {after}");
}
