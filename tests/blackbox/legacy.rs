//! What older clients and browsers rely on: the `r0` paths and versions (Element Web releases
//! of 2023, bots and bridges still call them), display names from registration, answers that
//! no cache keeps, and account data only the server may write.

use ganglion_testkit::{Account, Backend, enc};
use serde_json::{Value, json};

use crate::{PASSWORD, start};

on_all_backends!(
    an_r0_client_registers_syncs_and_chats,
    answers_are_not_cached_and_server_managed_account_data_is_refused,
);

const R0: &str = "/_matrix/client/r0";

/// The flow Element Web (2023) runs on its first screens, on `r0` paths only.
async fn an_r0_client_registers_syncs_and_chats(backend: Backend) {
    let server = start(backend).await;
    let api = server.api();

    let versions = api.get("/_matrix/client/versions", None).await.unwrap().ok();
    let listed: Vec<&str> =
        versions["versions"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for version in ["r0.0.1", "r0.5.0", "r0.6.1", "v1.1", "v1.12"] {
        assert!(listed.contains(&version), "/versions lacks {version}: {listed:?}");
    }

    // "Unable to query for supported registration methods" was this request answering 404.
    let flows = api.post(&format!("{R0}/register"), None, &json!({})).await.unwrap();
    assert_eq!(flows.status, 401, "{}", flows.text);
    assert!(flows.body["flows"].as_array().is_some_and(|flows| !flows.is_empty()), "{}", flows.text);
    let body = json!({
        "username": "r0user",
        "password": PASSWORD,
        "initial_device_display_name": "Element Web",
        "auth": { "type": "m.login.dummy", "session": flows.body["session"] },
    });
    let registered = api.post(&format!("{R0}/register"), None, &body).await.unwrap().ok();
    let user_id = registered["user_id"].as_str().unwrap().to_owned();
    assert_eq!(user_id, "@r0user:localhost");
    let alice = Account::new(
        api.clone(),
        &user_id,
        registered["access_token"].as_str().unwrap(),
        registered["device_id"].as_str().unwrap(),
    );

    // A new account has a display name (its localpart), so clients don't show the full id.
    let name = alice.get(&format!("{R0}/profile/{}/displayname", enc(&user_id))).await.unwrap().ok();
    assert_eq!(name["displayname"], "r0user");
    let device = alice.get(&format!("{R0}/devices/{}", enc(&alice.device_id))).await.unwrap().ok();
    assert_eq!(device["display_name"], "Element Web");

    // The same account logs in again through r0.
    let login_flows = api.get(&format!("{R0}/login"), None).await.unwrap().ok();
    assert!(login_flows["flows"].as_array().unwrap().iter().any(|f| f["type"] == "m.login.password"));
    let login = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "r0user" },
        "password": PASSWORD,
    });
    let second = api.post(&format!("{R0}/login"), None, &login).await.unwrap().ok();
    assert_eq!(second["user_id"], user_id.as_str());

    for path in ["capabilities", "pushrules/", "account/whoami", "joined_rooms"] {
        alice.get(&format!("{R0}/{path}")).await.unwrap().ok();
    }
    let filter = json!({ "room": { "state": { "lazy_load_members": true } } });
    let filter_id =
        alice.post(&format!("{R0}/user/{}/filter", enc(&user_id)), &filter).await.unwrap().ok()["filter_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let first_sync = alice.get(&format!("{R0}/sync?filter={filter_id}&timeout=0")).await.unwrap().ok();
    let since = first_sync["next_batch"].as_str().unwrap().to_owned();

    let room = alice.post(&format!("{R0}/createRoom"), &json!({ "name": "legacy" })).await.unwrap().ok();
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let sent = alice
        .put(
            &format!("{R0}/rooms/{}/send/m.room.message/r0txn", enc(&room_id)),
            &json!({ "msgtype": "m.text", "body": "hello from r0" }),
        )
        .await
        .unwrap()
        .ok();
    let event_id = sent["event_id"].as_str().unwrap().to_owned();

    // The message arrives through r0 /sync and r0 /messages; the member event carries the name.
    // The room's events may come over several syncs (the room's creation before the message).
    let mut events: Vec<Value> = Vec::new();
    let mut since = since;
    for _ in 0..20 {
        let sync = alice
            .get(&format!("{R0}/sync?filter={filter_id}&since={since}&timeout=5000"))
            .await
            .unwrap()
            .ok();
        since = sync["next_batch"].as_str().unwrap().to_owned();
        if let Some(timeline) = sync["rooms"]["join"][&room_id]["timeline"]["events"].as_array() {
            events.extend(timeline.iter().cloned());
        }
        if events.iter().any(|e| e["event_id"] == event_id.as_str()) {
            break;
        }
    }
    assert!(events.iter().any(|e| e["event_id"] == event_id.as_str()), "the message never reached r0 /sync");
    let member = events
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == user_id.as_str())
        .expect("own member event in the new room's timeline");
    assert_eq!(member["content"]["displayname"], "r0user");
    let messages =
        alice.get(&format!("{R0}/rooms/{}/messages?dir=b&limit=10", enc(&room_id))).await.unwrap().ok();
    assert!(messages["chunk"].as_array().unwrap().iter().any(|e| e["content"]["body"] == "hello from r0"));

    // r0 paths that never existed are unknown, as any other unknown path.
    alice.get(&format!("{R0}/no_such_endpoint")).await.unwrap().err(404, "M_UNRECOGNIZED");
}

async fn answers_are_not_cached_and_server_managed_account_data_is_refused(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("cachealice", PASSWORD).await.unwrap();
    let cache_control = |response: &ganglion_testkit::Response| {
        response.headers.get("cache-control").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    for path in ["/account/whoami", "/sync?timeout=0", "/_matrix/client/versions", "/capabilities"] {
        let response = alice.get(path).await.unwrap();
        assert_eq!(response.status, 200, "{path}: {}", response.text);
        assert_eq!(cache_control(&response), "no-store", "{path}");
    }
    // Errors are not kept either (a 401 must not be replayed by a proxy after login).
    let unauthenticated = server.api().get("/account/whoami", None).await.unwrap();
    unauthenticated.err(401, "M_MISSING_TOKEN");
    assert_eq!(cache_control(&unauthenticated), "no-store");
    // Discovery is the same for everyone and may be cached.
    let well_known = server.api().get("/.well-known/matrix/client", None).await.unwrap();
    assert_eq!(well_known.status, 200);
    assert!(cache_control(&well_known).contains("max-age"), "{:?}", well_known.headers);

    // The spec: 405 M_BAD_JSON for account data the server manages through other endpoints.
    let room_id = alice.create_room(&json!({})).await.unwrap();
    let user = enc(&alice.user_id);
    for data_type in ["m.push_rules", "m.fully_read"] {
        let global = alice.put(&format!("/user/{user}/account_data/{data_type}"), &json!({})).await.unwrap();
        global.err(405, "M_BAD_JSON");
        let in_room = alice
            .put(&format!("/user/{user}/rooms/{}/account_data/{data_type}", enc(&room_id)), &json!({}))
            .await
            .unwrap();
        in_room.err(405, "M_BAD_JSON");
    }
    // Other types are still writable.
    alice
        .put(&format!("/user/{user}/account_data/org.example.prefs"), &json!({ "a": 1 }))
        .await
        .unwrap()
        .ok();
}
