//! Server-side key backup (`/room_keys`): versions, keys at each level, the rule for which copy
//! of a session's key is kept, etags and counts, and the errors, each with nothing stored.
//! The keys are opaque to the server, so plain JSON stands in for real encrypted sessions.

use ganglion_testkit::{Account, Backend, enc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{get_ok, register_all, start};

on_all_backends!(
    versions_are_created_read_updated_and_deleted,
    keys_are_stored_read_and_deleted_at_each_level,
    only_a_better_key_replaces_the_stored_one,
    keys_go_only_into_the_current_version,
    bad_bodies_are_refused_and_store_nothing,
);

const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
const ROOM_A: &str = "!a:example.org";
const ROOM_B: &str = "!b:example.org";

fn auth_data(public_key: &str) -> Value {
    json!({ "public_key": public_key, "signatures": { "@alice:localhost": { "ed25519:DEV": "sig" } } })
}

/// `POST /room_keys/version`; the new version.
async fn create_version(account: &Account, public_key: &str) -> String {
    let body = json!({ "algorithm": ALGORITHM, "auth_data": auth_data(public_key) });
    let created = account.post("/room_keys/version", &body).await.unwrap().ok();
    created["version"].as_str().unwrap_or_else(|| panic!("no version in {created}")).to_owned()
}

/// A `KeyBackupData` whose `session_data` says which copy it is.
fn key_data(is_verified: bool, first_message_index: u64, forwarded_count: u64) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": {
            "ephemeral": "e",
            "ciphertext": format!("{is_verified}/{first_message_index}/{forwarded_count}"),
            "mac": "m",
        },
    })
}

fn keys_path(version: &str, room_id: Option<&str>, session_id: Option<&str>) -> String {
    let mut path = "/room_keys/keys".to_owned();
    if let Some(room_id) = room_id {
        path.push_str(&format!("/{}", enc(room_id)));
    }
    if let Some(session_id) = session_id {
        path.push_str(&format!("/{}", enc(session_id)));
    }
    format!("{path}?version={}", enc(version))
}

/// The `etag` and `count` of a `RoomKeysUpdateResponse` (or of a version).
#[track_caller]
fn etag_and_count(body: &Value) -> (String, u64) {
    let etag = body["etag"].as_str().unwrap_or_else(|| panic!("no string etag in {body}")).to_owned();
    (etag, body["count"].as_u64().unwrap_or_else(|| panic!("no count in {body}")))
}

async fn version_state(account: &Account, version: &str) -> (String, u64) {
    etag_and_count(&get_ok(account, &format!("/room_keys/version/{version}")).await)
}

async fn versions_are_created_read_updated_and_deleted(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[_; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();

    let none = alice.get("/room_keys/version").await.unwrap();
    assert_eq!(none.err(404, "M_NOT_FOUND")["error"], "No current backup version");
    assert_eq!(create_version(&alice, "one").await, "1");
    let current = get_ok(&alice, "/room_keys/version").await;
    let (etag, count) = etag_and_count(&current);
    assert_eq!(count, 0);
    assert_eq!(
        current,
        json!({
            "algorithm": ALGORITHM,
            "auth_data": auth_data("one"),
            "count": 0,
            "etag": etag,
            "version": "1",
        })
    );

    assert_eq!(create_version(&alice, "two").await, "2");
    assert_eq!(get_ok(&alice, "/room_keys/version").await["version"], "2");
    assert_eq!(get_ok(&alice, "/room_keys/version/1").await["auth_data"], auth_data("one"));
    // Backups are per user.
    bob.get("/room_keys/version").await.unwrap().err(404, "M_NOT_FOUND");
    bob.get("/room_keys/version/1").await.unwrap().err(404, "M_NOT_FOUND");

    // Only `auth_data` changes; a `version` in the body must be the path's.
    let update = json!({ "algorithm": ALGORITHM, "auth_data": auth_data("two'"), "version": "2" });
    assert_eq!(alice.put("/room_keys/version/2", &update).await.unwrap().ok(), json!({}));
    let without_version = json!({ "algorithm": ALGORITHM, "auth_data": auth_data("two''") });
    alice.put("/room_keys/version/2", &without_version).await.unwrap().ok();
    assert_eq!(get_ok(&alice, "/room_keys/version/2").await["auth_data"], auth_data("two''"));
    let mismatch = json!({ "algorithm": ALGORITHM, "auth_data": auth_data("x"), "version": "1" });
    alice.put("/room_keys/version/2", &mismatch).await.unwrap().err(400, "M_INVALID_PARAM");
    let other_algorithm = json!({ "algorithm": "m.megolm_backup.v2", "auth_data": auth_data("x") });
    alice.put("/room_keys/version/2", &other_algorithm).await.unwrap().err(400, "M_INVALID_PARAM");
    alice.put("/room_keys/version/9", &without_version).await.unwrap().err(404, "M_NOT_FOUND");
    bob.put("/room_keys/version/2", &without_version).await.unwrap().err(404, "M_NOT_FOUND");
    assert_eq!(get_ok(&alice, "/room_keys/version/2").await["auth_data"], auth_data("two''"));

    // Deleting the current version makes the one before current; deleting twice succeeds.
    assert_eq!(alice.delete("/room_keys/version/2", None).await.unwrap().ok(), json!({}));
    alice.delete("/room_keys/version/2", None).await.unwrap().ok();
    alice.get("/room_keys/version/2").await.unwrap().err(404, "M_NOT_FOUND");
    assert_eq!(get_ok(&alice, "/room_keys/version").await["version"], "1");
    bob.delete("/room_keys/version/1", None).await.unwrap().err(404, "M_NOT_FOUND");
    for unknown in ["9", "abc", "01", "-1"] {
        alice.get(&format!("/room_keys/version/{unknown}")).await.unwrap().err(404, "M_NOT_FOUND");
        alice.delete(&format!("/room_keys/version/{unknown}"), None).await.unwrap().err(404, "M_NOT_FOUND");
    }
    // Numbers are never handed out twice.
    assert_eq!(create_version(&alice, "three").await, "3");
    alice.delete("/room_keys/version/1", None).await.unwrap().ok();
    alice.delete("/room_keys/version/3", None).await.unwrap().ok();
    alice.get("/room_keys/version").await.unwrap().err(404, "M_NOT_FOUND");
    // Authenticated only.
    alice.api.get("/room_keys/version", None).await.unwrap().err(401, "M_MISSING_TOKEN");
}

async fn keys_are_stored_read_and_deleted_at_each_level(backend: Backend) {
    let server = start(backend).await;
    let alice = register_all(&server, &["alice"]).await.remove(0);
    let version = create_version(&alice, "k").await;
    let (etag_before, _) = version_state(&alice, &version).await;

    let body = json!({ "rooms": {
        ROOM_A: { "sessions": { "s1": key_data(false, 1, 0), "s2": key_data(true, 2, 0) } },
        ROOM_B: { "sessions": { "s3": key_data(false, 3, 1) } },
    } });
    let (etag_1, count) =
        etag_and_count(&alice.put(&keys_path(&version, None, None), &body).await.unwrap().ok());
    assert_eq!(count, 3);
    assert_ne!(etag_1, etag_before);
    let body = json!({ "sessions": { "s4": key_data(false, 4, 0) } });
    let (etag_2, count) =
        etag_and_count(&alice.put(&keys_path(&version, Some(ROOM_A), None), &body).await.unwrap().ok());
    assert_eq!(count, 4);
    let path = keys_path(&version, Some(ROOM_B), Some("s5"));
    let (etag_3, count) = etag_and_count(&alice.put(&path, &key_data(true, 0, 0)).await.unwrap().ok());
    assert_eq!(count, 5);
    assert!(etag_1 != etag_2 && etag_2 != etag_3 && etag_1 != etag_3, "{etag_1} {etag_2} {etag_3}");
    assert_eq!(version_state(&alice, &version).await, (etag_3.clone(), 5));
    assert_eq!(get_ok(&alice, "/room_keys/version").await["count"], 5);

    let all = json!({ "rooms": {
        ROOM_A: { "sessions": {
            "s1": key_data(false, 1, 0),
            "s2": key_data(true, 2, 0),
            "s4": key_data(false, 4, 0),
        } },
        ROOM_B: { "sessions": { "s3": key_data(false, 3, 1), "s5": key_data(true, 0, 0) } },
    } });
    assert_eq!(get_ok(&alice, &keys_path(&version, None, None)).await, all);
    assert_eq!(get_ok(&alice, &keys_path(&version, Some(ROOM_A), None)).await, all["rooms"][ROOM_A]);
    assert_eq!(
        get_ok(&alice, &keys_path(&version, Some("!c:example.org"), None)).await,
        json!({ "sessions": {} })
    );
    assert_eq!(get_ok(&alice, &keys_path(&version, Some(ROOM_B), Some("s5"))).await, key_data(true, 0, 0));
    let missing = alice.get(&keys_path(&version, Some(ROOM_B), Some("s9"))).await.unwrap();
    missing.err(404, "M_NOT_FOUND");
    // The `r0` path is the same endpoint.
    let r0 = format!("/_matrix/client/r0/room_keys/keys?version={version}");
    assert_eq!(get_ok(&alice, &r0).await, all);

    // Deleting at each level; deleting nothing leaves the etag.
    let path = keys_path(&version, Some(ROOM_B), Some("s5"));
    let (etag_4, count) = etag_and_count(&alice.delete(&path, None).await.unwrap().ok());
    assert_eq!(count, 4);
    assert_ne!(etag_4, etag_3);
    assert_eq!(etag_and_count(&alice.delete(&path, None).await.unwrap().ok()), (etag_4.clone(), 4));
    let (etag_5, count) =
        etag_and_count(&alice.delete(&keys_path(&version, Some(ROOM_A), None), None).await.unwrap().ok());
    assert_eq!(count, 1);
    assert_ne!(etag_5, etag_4);
    assert_eq!(
        get_ok(&alice, &keys_path(&version, None, None)).await["rooms"],
        json!({ ROOM_B: { "sessions": { "s3": key_data(false, 3, 1) } } })
    );
    let (_, count) =
        etag_and_count(&alice.delete(&keys_path(&version, None, None), None).await.unwrap().ok());
    assert_eq!(count, 0);
    assert_eq!(get_ok(&alice, &keys_path(&version, None, None)).await, json!({ "rooms": {} }));

    // Deleting the version deletes its keys.
    alice.put(&keys_path(&version, Some(ROOM_A), Some("s1")), &key_data(false, 1, 0)).await.unwrap().ok();
    alice.delete(&format!("/room_keys/version/{version}"), None).await.unwrap().ok();
    alice.get(&keys_path(&version, None, None)).await.unwrap().err(404, "M_NOT_FOUND");
    alice.get(&keys_path(&version, Some(ROOM_A), Some("s1"))).await.unwrap().err(404, "M_NOT_FOUND");
}

async fn only_a_better_key_replaces_the_stored_one(backend: Backend) {
    let server = start(backend).await;
    let alice = register_all(&server, &["alice"]).await.remove(0);
    let version = create_version(&alice, "k").await;
    let session_path = keys_path(&version, Some(ROOM_A), Some("s"));
    let (mut etag, _) = etag_and_count(&alice.put(&session_path, &key_data(false, 5, 2)).await.unwrap().ok());

    // Each upload goes through one of the three levels; `better` says whether it is kept.
    let uploads = [
        (key_data(false, 6, 0), false),
        (key_data(false, 5, 3), false),
        (key_data(false, 5, 2), false),
        (key_data(false, 5, 1), true),
        (key_data(false, 4, 9), true),
        (key_data(true, 9, 9), true),
        (key_data(false, 0, 0), false),
        (key_data(true, 9, 10), false),
        (key_data(true, 8, 10), true),
    ];
    let mut kept = key_data(false, 5, 2);
    for (index, (upload, better)) in uploads.into_iter().enumerate() {
        let response = match index % 3 {
            0 => {
                let body = json!({ "rooms": { ROOM_A: { "sessions": { "s": upload.clone() } } } });
                alice.put(&keys_path(&version, None, None), &body).await
            }
            1 => {
                let body = json!({ "sessions": { "s": upload.clone() } });
                alice.put(&keys_path(&version, Some(ROOM_A), None), &body).await
            }
            _ => alice.put(&session_path, &upload).await,
        };
        let (new_etag, count) = etag_and_count(&response.unwrap().ok());
        assert_eq!(count, 1);
        assert_eq!(new_etag != etag, better, "upload {index} {upload}: etag {etag} then {new_etag}");
        if better {
            kept = upload;
        }
        etag = new_etag;
        assert_eq!(get_ok(&alice, &session_path).await, kept, "after upload {index}");
    }
    assert_eq!(kept, key_data(true, 8, 10));
}

async fn keys_go_only_into_the_current_version(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[_; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let one_key = json!({ "rooms": { ROOM_A: { "sessions": { "s": key_data(false, 0, 0) } } } });
    // No backup at all.
    alice.put(&keys_path("1", None, None), &one_key).await.unwrap().err(404, "M_NOT_FOUND");

    let old = create_version(&alice, "old").await;
    let current = create_version(&alice, "current").await;
    let writes = [
        (keys_path(&old, None, None), one_key.clone()),
        (keys_path(&old, Some(ROOM_A), None), json!({ "sessions": { "s": key_data(false, 0, 0) } })),
        (keys_path(&old, Some(ROOM_A), Some("s")), key_data(false, 0, 0)),
    ];
    for (path, body) in &writes {
        let response = alice.put(path, body).await.unwrap();
        let error = response.err(403, "M_WRONG_ROOM_KEYS_VERSION");
        assert_eq!(error["current_version"], json!(current), "{}", response.text);
    }
    assert_eq!(get_ok(&alice, &keys_path(&old, None, None)).await, json!({ "rooms": {} }));
    assert_eq!(version_state(&alice, &old).await.1, 0);
    for missing in ["9", "abc", "0"] {
        alice.put(&keys_path(missing, None, None), &one_key).await.unwrap().err(404, "M_NOT_FOUND");
        alice.get(&keys_path(missing, None, None)).await.unwrap().err(404, "M_NOT_FOUND");
        alice.delete(&keys_path(missing, None, None), None).await.unwrap().err(404, "M_NOT_FOUND");
    }
    // The version is required.
    alice.put("/room_keys/keys", &one_key).await.unwrap().err(400, "M_MISSING_PARAM");
    alice.get("/room_keys/keys").await.unwrap().err(400, "M_MISSING_PARAM");
    alice.delete("/room_keys/keys", None).await.unwrap().err(400, "M_MISSING_PARAM");
    // Another user's version numbers name nothing of theirs.
    bob.put(&keys_path(&current, None, None), &one_key).await.unwrap().err(404, "M_NOT_FOUND");

    alice.put(&keys_path(&current, None, None), &one_key).await.unwrap().ok();
    // Keys of an older version may still be read and deleted (as Synapse; the spec names no 403).
    alice.delete(&keys_path(&old, None, None), None).await.unwrap().ok();
    // Once the current version is deleted, the one before takes keys again.
    alice.delete(&format!("/room_keys/version/{current}"), None).await.unwrap().ok();
    let (_, count) = etag_and_count(&alice.put(&keys_path(&old, None, None), &one_key).await.unwrap().ok());
    assert_eq!(count, 1);
    let response = alice.put(&keys_path(&current, None, None), &one_key).await.unwrap();
    response.err(404, "M_NOT_FOUND");
}

async fn bad_bodies_are_refused_and_store_nothing(backend: Backend) {
    let server = start(backend).await;
    let alice = register_all(&server, &["alice"]).await.remove(0);

    let bad_versions = [
        (json!({}), "M_BAD_JSON"),
        (json!({ "algorithm": ALGORITHM }), "M_BAD_JSON"),
        (json!({ "algorithm": 5, "auth_data": {} }), "M_BAD_JSON"),
        (json!({ "algorithm": ALGORITHM, "auth_data": "key" }), "M_BAD_JSON"),
        (json!({ "algorithm": ALGORITHM, "auth_data": { "n": 1.5 } }), "M_BAD_JSON"),
        (json!({ "algorithm": "", "auth_data": {} }), "M_INVALID_PARAM"),
        (json!([ALGORITHM]), "M_BAD_JSON"),
    ];
    for (body, errcode) in &bad_versions {
        let response = alice.post("/room_keys/version", body).await.unwrap();
        assert_eq!((response.status, response.errcode()), (400, Some(*errcode)), "{body}: {}", response.text);
    }
    let token = Some(alice.access_token.as_str());
    let not_json = alice
        .api
        .raw(Method::POST, "/room_keys/version", token, Some("application/json"), Some(b"{".to_vec()))
        .await
        .unwrap();
    not_json.err(400, "M_NOT_JSON");
    alice.get("/room_keys/version").await.unwrap().err(404, "M_NOT_FOUND");

    let version = create_version(&alice, "k").await;
    for (body, errcode) in &bad_versions {
        let response = alice.put(&format!("/room_keys/version/{version}"), body).await.unwrap();
        assert_eq!((response.status, response.errcode()), (400, Some(*errcode)), "{body}: {}", response.text);
    }
    assert_eq!(get_ok(&alice, "/room_keys/version").await["auth_data"], auth_data("k"));

    let state_before = version_state(&alice, &version).await;
    // A good session beside a bad one: the whole upload is refused.
    let with = |key: Value| {
        let sessions = json!({ "good": key_data(true, 0, 0), "bad": key });
        json!({ "rooms": { ROOM_A: { "sessions": sessions } } })
    };
    let changed = |field: &str, value: Value| {
        let mut key = key_data(false, 0, 0);
        key[field] = value;
        with(key)
    };
    let mut no_index = key_data(false, 0, 0);
    no_index.as_object_mut().unwrap().remove("first_message_index");
    let bad_keys = [
        (json!({}), "M_BAD_JSON"),
        (json!({ "rooms": [] }), "M_BAD_JSON"),
        (json!({ "rooms": { ROOM_A: { "sessions": [] } } }), "M_BAD_JSON"),
        (json!({ "rooms": { ROOM_A: {} } }), "M_BAD_JSON"),
        (with(no_index), "M_BAD_JSON"),
        (changed("first_message_index", json!(-1)), "M_BAD_JSON"),
        (changed("first_message_index", json!(0.5)), "M_BAD_JSON"),
        (changed("forwarded_count", json!("0")), "M_BAD_JSON"),
        (changed("is_verified", json!("yes")), "M_BAD_JSON"),
        (changed("session_data", json!("c")), "M_BAD_JSON"),
        (
            json!({ "rooms": { "not-a-room": { "sessions": { "s": key_data(false, 0, 0) } } } }),
            "M_INVALID_PARAM",
        ),
        (
            json!({ "rooms": { ROOM_A: { "sessions": { "s".repeat(300): key_data(false, 0, 0) } } } }),
            "M_INVALID_PARAM",
        ),
    ];
    for (body, errcode) in &bad_keys {
        let response = alice.put(&keys_path(&version, None, None), body).await.unwrap();
        assert_eq!((response.status, response.errcode()), (400, Some(*errcode)), "{body}: {}", response.text);
    }
    let room_path = keys_path(&version, Some(ROOM_A), None);
    alice.put(&room_path, &json!({ "sessions": { "s": "key" } })).await.unwrap().err(400, "M_BAD_JSON");
    alice.put(&room_path, &json!({})).await.unwrap().err(400, "M_BAD_JSON");
    let bad_room = keys_path(&version, Some("not-a-room"), None);
    let sessions = json!({ "sessions": { "s": key_data(false, 0, 0) } });
    alice.put(&bad_room, &sessions).await.unwrap().err(400, "M_INVALID_PARAM");
    let session_path = keys_path(&version, Some(ROOM_A), Some("s"));
    alice.put(&session_path, &json!({ "is_verified": true })).await.unwrap().err(400, "M_BAD_JSON");
    let long_session = keys_path(&version, Some(ROOM_A), Some(&"s".repeat(300)));
    alice.put(&long_session, &key_data(false, 0, 0)).await.unwrap().err(400, "M_INVALID_PARAM");
    alice.get(&keys_path(&version, Some("not-a-room"), None)).await.unwrap().err(400, "M_INVALID_PARAM");

    assert_eq!(version_state(&alice, &version).await, state_before);
    assert_eq!(get_ok(&alice, &keys_path(&version, None, None)).await, json!({ "rooms": {} }));
}
