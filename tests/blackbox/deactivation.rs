//! The end of an account and proofs of identity: `/account/deactivate` through matrix-sdk (UIA,
//! the account can no longer sign in, its rooms are left, its profile erased), OpenID tokens
//! exchanged at `/openid/userinfo`, and reports filed and listed by `ganglion reports`.

use ganglion_testkit::{Backend, enc, sdk_client};
use matrix_sdk::ruma::api::client::uiaa::{AuthData, MatrixUserIdentifier, Password, UserIdentifier};
use serde_json::{Value, json};

use crate::PASSWORD;

on_all_backends!(
    a_deactivated_account_cannot_log_in,
    openid_tokens_are_exchanged_for_the_user_id,
    reports_reach_the_operator,
);

async fn a_deactivated_account_cannot_log_in(backend: Backend) {
    let server = crate::start(backend).await;
    let alice_sdk = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let alice = crate::account_of(&server, &alice_sdk);
    let [bob] = <[_; 1]>::try_from(crate::register_all(&server, &["bob"]).await).unwrap();
    alice_sdk.account().set_display_name(Some("Alice Liddell")).await.unwrap();
    let room = bob.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    alice.join(&room).await.unwrap();
    let invited = bob.create_room(&json!({ "invite": [alice.user_id] })).await.unwrap();

    // A wrong password is refused and changes nothing.
    let first = alice_sdk.account().deactivate(None, None, true).await.unwrap_err();
    let session = first.as_uiaa_response().expect("a UIA answer").session.clone();
    let mut wrong =
        Password::new(UserIdentifier::Matrix(MatrixUserIdentifier::new("alice".into())), "not it".into());
    wrong.session = session.clone();
    assert!(alice_sdk.account().deactivate(None, Some(AuthData::Password(wrong)), true).await.is_err());
    assert_eq!(alice.get("/account/whoami").await.unwrap().status, 200);

    let mut password =
        Password::new(UserIdentifier::Matrix(MatrixUserIdentifier::new("alice".into())), PASSWORD.into());
    password.session = session;
    let done = alice_sdk.account().deactivate(None, Some(AuthData::Password(password)), true).await.unwrap();
    assert_eq!(done.id_server_unbind_result.as_str(), "no-support");

    // Signed out everywhere, and no way back in.
    let whoami = alice.get("/account/whoami").await.unwrap();
    assert_eq!((whoami.status, whoami.errcode()), (401, Some("M_UNKNOWN_TOKEN")));
    let login = server
        .api()
        .post(
            "/login",
            None,
            &json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": PASSWORD }),
        )
        .await
        .unwrap();
    assert_eq!((login.status, login.errcode()), (403, Some("M_FORBIDDEN")), "{}", login.text);
    let again = server
        .api()
        .post(
            "/register",
            None,
            &json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await
        .unwrap();
    assert_eq!(again.errcode(), Some("M_USER_IN_USE"), "the name stays taken: {}", again.text);

    // Alice left the room she was in and declined her invite; her leave carries no profile.
    for room in [&room, &invited] {
        let member = bob
            .get(&format!("/rooms/{}/state/m.room.member/{}", enc(room), enc(&alice.user_id)))
            .await
            .unwrap()
            .ok();
        assert_eq!(member, json!({ "membership": "leave" }), "in {room}");
    }
    let profile = bob.get(&format!("/profile/{}", enc(&alice.user_id))).await.unwrap();
    assert!(profile.status == 404 || profile.body.get("displayname").is_none(), "erased: {}", profile.text);
}

/// What another server (or an integration manager) asks of this server's federation API:
/// `GET {federation}/_matrix/federation/v1/openid/userinfo`. A cluster serves it on its
/// federation listener (nginx's TLS, to the federation reader), with a self-signed certificate.
async fn userinfo(federation: &str, token: &str) -> (u16, Value) {
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let url = format!("{federation}/_matrix/federation/v1/openid/userinfo?access_token={}", enc(token));
    let response = client.get(url).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn openid_tokens_are_exchanged_for_the_user_id(backend: Backend) {
    // A cluster federates only with a federation listener.
    let (_server, _cluster, base_url, federation, server_name) = match backend {
        Backend::Cluster => {
            let cluster =
                ganglion_testkit::Cluster::start_federating(ganglion_testkit::ServerOptions::default())
                    .await
                    .unwrap();
            let (base_url, federation) = (cluster.base_url(), cluster.federation_url().unwrap());
            let server_name = cluster.server_name().to_owned();
            (None, Some(cluster), base_url, federation, server_name)
        }
        _ => {
            let server = crate::start(backend).await;
            let (base_url, server_name) = (server.base_url.clone(), server.server_name.clone());
            (Some(server), None, base_url.clone(), base_url, server_name)
        }
    };
    let api = ganglion_testkit::Api::new(base_url);
    let alice = api.register("alice", PASSWORD).await.unwrap();
    let bob = api.register("bob", PASSWORD).await.unwrap();
    let path = format!("/user/{}/openid/request_token", enc(&alice.user_id));
    let token = alice.post(&path, &json!({})).await.unwrap().ok();
    assert_eq!(token["token_type"], json!("Bearer"));
    assert_eq!(token["matrix_server_name"], json!(server_name));
    assert_eq!(token["expires_in"], json!(3600));
    let info = userinfo(&federation, token["access_token"].as_str().unwrap()).await;
    assert_eq!(info, (200, json!({ "sub": alice.user_id })));
    let (status, forged) = userinfo(&federation, "forged").await;
    assert_eq!((status, forged["errcode"].clone()), (401, json!("M_UNKNOWN_TOKEN")));
    let for_alice = bob.post(&path, &json!({})).await.unwrap();
    assert_eq!((for_alice.status, for_alice.errcode()), (403, Some("M_FORBIDDEN")));
}

async fn reports_reach_the_operator(backend: Backend) {
    let server = crate::start(backend).await;
    let [alice, bob, carol] =
        <[_; 3]>::try_from(crate::register_all(&server, &["alice", "bob", "carol"]).await).unwrap();

    // Reports: an event in a room the reporter is in, a room, a user.
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room).await.unwrap();
    let rude = alice.send_text(&room, "something rude").await.unwrap();
    let report = |path: String, body: Value| {
        let bob = bob.clone();
        async move { bob.post(&path, &body).await.unwrap() }
    };
    let event_path = format!("/rooms/{}/report/{}", enc(&room), enc(&rude));
    assert_eq!(report(event_path.clone(), json!({ "reason": "rude", "score": -100 })).await.ok(), json!({}));
    assert_eq!(
        report(format!("/rooms/{}/report", enc(&room)), json!({ "reason": "a rude room" })).await.ok(),
        json!({})
    );
    assert_eq!(
        report(format!("/users/{}/report", enc(&alice.user_id)), json!({ "reason": "a rude user" }))
            .await
            .ok(),
        json!({})
    );

    // Carol is not in the room: the event is not found for her; unknown targets neither.
    let outsider = carol.post(&event_path, &json!({ "reason": "x" })).await.unwrap();
    assert_eq!((outsider.status, outsider.errcode()), (404, Some("M_NOT_FOUND")));
    let unknown_room =
        report(format!("/rooms/{}/report", enc("!nowhere:localhost")), json!({ "reason": "x" })).await;
    assert_eq!((unknown_room.status, unknown_room.errcode()), (404, Some("M_NOT_FOUND")));
    let unknown_user =
        report(format!("/users/{}/report", enc("@nobody:localhost")), json!({ "reason": "x" })).await;
    assert_eq!((unknown_user.status, unknown_user.errcode()), (404, Some("M_NOT_FOUND")));
    let no_reason = report(format!("/users/{}/report", enc(&alice.user_id)), json!({})).await;
    assert_eq!((no_reason.status, no_reason.errcode()), (400, Some("M_MISSING_PARAM")));
    let long = report(format!("/rooms/{}/report", enc(&room)), json!({ "reason": "x".repeat(5000) })).await;
    assert_eq!((long.status, long.errcode()), (400, Some("M_INVALID_PARAM")));

    // The operator lists them, newest first, with the documented command.
    let output = std::process::Command::new(ganglion_testkit::ganglion_binary().unwrap())
        .args(["reports", "--limit", "10", "--config"])
        .arg(server.config_path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let reports: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let kinds: Vec<&str> = reports.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["user", "room", "event"], "{reports:?}");
    assert_eq!(reports[2]["event_id"], json!(rude));
    assert_eq!(reports[2]["score"], json!(-100));
    assert_eq!(reports[0]["user_id"], json!(alice.user_id));
    assert!(reports.iter().all(|r| r["reporter"] == json!(bob.user_id)));
}
