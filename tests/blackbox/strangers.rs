//! A stranger probes another user's private room and account with every read and write of the
//! route table: each is refused with a 4xx Matrix error, nothing leaks, and nothing changes.

use ganglion_testkit::{Backend, Response, enc};
use serde_json::{Value, json};

use crate::{PASSWORD, get_ok, register_all, start};

on_all_backends!(a_stranger_can_read_or_change_nothing_of_a_private_room_or_account);

/// Asserts a refusal: a 4xx Matrix error (never 2xx, never 5xx).
#[track_caller]
fn refused(what: &str, response: &Response) {
    assert!(
        (400..500).contains(&response.status) && response.errcode().is_some_and(|e| e.starts_with("M_")),
        "{what}: expected a 4xx Matrix error, got {} {}",
        response.status,
        response.text
    );
}

async fn a_stranger_can_read_or_change_nothing_of_a_private_room_or_account(backend: Backend) {
    let server = start(backend).await;
    let accounts = register_all(&server, &["owner", "stranger"]).await;
    let (owner, stranger) = (&accounts[0], &accounts[1]);
    let room = owner
        .post(
            "/createRoom",
            &json!({ "preset": "private_chat", "name": "secret", "room_alias_name": "secret" }),
        )
        .await
        .unwrap()
        .ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret = owner.send_text(&room, "the secret").await.unwrap();
    let user = enc(&owner.user_id);
    owner
        .put(&format!("/user/{user}/account_data/org.example.private"), &json!({ "k": "v" }))
        .await
        .unwrap()
        .ok();
    owner
        .put(
            &format!("/user/{user}/rooms/{}/account_data/org.example.private", enc(&room)),
            &json!({ "k": "v" }),
        )
        .await
        .unwrap()
        .ok();
    let filter_id = owner.post(&format!("/user/{user}/filter"), &json!({})).await.unwrap().ok()["filter_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = enc(&room);
    let e = enc(&secret);
    let alias = enc("#secret:localhost");

    let reads = [
        format!("/rooms/{r}/event/{e}"),
        format!("/rooms/{r}/joined_members"),
        format!("/rooms/{r}/members"),
        format!("/rooms/{r}/messages?dir=b"),
        format!("/rooms/{r}/state"),
        format!("/rooms/{r}/state/m.room.name/"),
        format!("/rooms/{r}/state/m.room.name"),
        format!("/rooms/{r}/aliases"),
        format!("/user/{user}/account_data/org.example.private"),
        format!("/user/{user}/rooms/{r}/account_data/org.example.private"),
        format!("/user/{user}/filter/{filter_id}"),
        format!("/devices/{}", enc(&owner.device_id)),
    ];
    for path in &reads {
        let response = stranger.get(path).await.unwrap();
        refused(&format!("GET {path}"), &response);
        assert!(!response.text.contains("the secret") && !response.text.contains("\"v\""), "{path} leaked");
    }

    let message = json!({ "msgtype": "m.text", "body": "intruder" });
    let writes: Vec<(&str, String, Value)> = vec![
        ("POST", format!("/rooms/{r}/join"), json!({})),
        ("POST", format!("/join/{alias}"), json!({})),
        ("POST", format!("/join/{r}"), json!({})),
        ("POST", format!("/rooms/{r}/invite"), json!({ "user_id": stranger.user_id })),
        ("POST", format!("/rooms/{r}/kick"), json!({ "user_id": owner.user_id })),
        ("POST", format!("/rooms/{r}/ban"), json!({ "user_id": owner.user_id })),
        ("POST", format!("/rooms/{r}/unban"), json!({ "user_id": stranger.user_id })),
        ("POST", format!("/rooms/{r}/leave"), json!({})),
        ("PUT", format!("/rooms/{r}/send/m.room.message/probe1"), message.clone()),
        ("PUT", format!("/rooms/{r}/state/m.room.name/"), json!({ "name": "pwned" })),
        ("PUT", format!("/rooms/{r}/state/m.room.name"), json!({ "name": "pwned" })),
        ("PUT", format!("/rooms/{r}/redact/{e}/probe2"), json!({})),
        (
            "PUT",
            format!("/rooms/{r}/typing/{}", enc(&stranger.user_id)),
            json!({ "typing": true, "timeout": 1000 }),
        ),
        ("PUT", format!("/rooms/{r}/typing/{user}"), json!({ "typing": true, "timeout": 1000 })),
        ("POST", format!("/rooms/{r}/receipt/m.read/{e}"), json!({})),
        ("POST", format!("/rooms/{r}/read_markers"), json!({ "m.fully_read": secret, "m.read": secret })),
        ("PUT", format!("/directory/room/{}", enc("#stolen:localhost")), json!({ "room_id": room })),
        ("DELETE", format!("/directory/room/{alias}"), json!({})),
        ("PUT", format!("/directory/list/room/{r}"), json!({ "visibility": "public" })),
        ("PUT", format!("/user/{user}/account_data/org.example.private"), json!({ "k": "stolen" })),
        ("PUT", format!("/user/{user}/rooms/{r}/account_data/org.example.private"), json!({ "k": "stolen" })),
        ("POST", format!("/user/{user}/filter"), json!({})),
        ("PUT", format!("/profile/{user}/displayname"), json!({ "displayname": "pwned" })),
        ("PUT", format!("/profile/{user}/avatar_url"), json!({ "avatar_url": "mxc://localhost/pwned" })),
        ("PUT", format!("/devices/{}", enc(&owner.device_id)), json!({ "display_name": "pwned" })),
    ];
    for (method, path, body) in &writes {
        let response = match *method {
            "POST" => stranger.post(path, body).await.unwrap(),
            "PUT" => stranger.put(path, body).await.unwrap(),
            _ => stranger.delete(path, Some(body)).await.unwrap(),
        };
        refused(&format!("{method} {path}"), &response);
    }
    // Deleting the owner's device through the stranger's own user-interactive auth.
    let auth = json!({
        "auth": {
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "stranger" },
            "password": PASSWORD,
        },
        "devices": [owner.device_id],
    });
    let _ = stranger.post("/delete_devices", &auth).await.unwrap();
    let _ = stranger.delete(&format!("/devices/{}", enc(&owner.device_id)), Some(&auth)).await.unwrap();

    // Nothing changed: the owner's session, device, profile, data, room and alias are intact,
    // and the stranger's sync knows nothing of the room.
    get_ok(owner, "/account/whoami").await;
    let device = get_ok(owner, &format!("/devices/{}", enc(&owner.device_id))).await;
    assert_ne!(device["display_name"], "pwned");
    let profile = get_ok(owner, &format!("/profile/{user}")).await;
    assert_eq!(profile["displayname"], "owner");
    assert!(profile.get("avatar_url").is_none_or(Value::is_null), "{profile}");
    let data = get_ok(owner, &format!("/user/{user}/account_data/org.example.private")).await;
    assert_eq!(data, json!({ "k": "v" }));
    let state = get_ok(owner, &format!("/rooms/{r}/state/m.room.name/")).await;
    assert_eq!(state["name"], "secret");
    let resolved = get_ok(owner, &format!("/directory/room/{alias}")).await;
    assert_eq!(resolved["room_id"], room.as_str());
    let stolen = owner.get(&format!("/directory/room/{}", enc("#stolen:localhost"))).await.unwrap();
    stolen.err(404, "M_NOT_FOUND");
    let visibility = get_ok(owner, &format!("/directory/list/room/{r}")).await;
    assert_eq!(visibility["visibility"], "private");
    let members = get_ok(owner, &format!("/rooms/{r}/joined_members")).await;
    assert_eq!(members["joined"].as_object().unwrap().len(), 1, "{members}");
    let page = get_ok(owner, &format!("/rooms/{r}/messages?dir=b&limit=50")).await;
    let intruded =
        page["chunk"].as_array().unwrap().iter().any(|event| {
            event["sender"] == stranger.user_id.as_str() || event["content"]["body"] == "intruder"
        });
    assert!(!intruded, "the stranger wrote into the room: {page}");
    let redacted = get_ok(owner, &format!("/rooms/{r}/event/{e}")).await;
    assert_eq!(redacted["content"]["body"], "the secret");
    let sync = stranger.sync("timeout=0").await.unwrap();
    for section in ["join", "invite", "leave"] {
        assert!(sync["rooms"][section][&room].is_null(), "the room is in the stranger's sync: {sync}");
    }
    assert!(!sync.to_string().contains("the secret"));
}
