//! What a client meets of the things this server does not support: third-party identifiers
//! (email, phone) and bridged networks answer honestly (empty lists, `M_THREEPID_DENIED`,
//! `M_NOT_FOUND`) rather than 404 `M_UNRECOGNIZED`; and TURN credentials from `[voip]`.

use base64::Engine as _;
use ganglion_testkit::{Backend, ServerOptions, TestServer};
use serde_json::{Value, json};

on_all_backends!(
    third_party_identifiers_are_refused_honestly,
    bridged_networks_are_none_and_no_turn_server_by_default,
    turn_credentials_come_from_the_shared_secret,
);

async fn third_party_identifiers_are_refused_honestly(backend: Backend) {
    let server = crate::start(backend).await;
    let alice = crate::register_all(&server, &["alice"]).await.remove(0);
    assert_eq!(alice.get("/account/3pid").await.unwrap().ok(), json!({ "threepids": [] }));
    let unauthenticated = alice.api.get("/account/3pid", None).await.unwrap();
    assert_eq!((unauthenticated.status, unauthenticated.errcode()), (401, Some("M_MISSING_TOKEN")));

    let session = json!({ "sid": "1", "client_secret": "secret" });
    for path in ["/account/3pid/add", "/account/3pid/bind", "/account/3pid"] {
        let refused = alice.post(path, &json!({ "three_pid_creds": session, "id_server": "id.example.org", "sid": "1", "client_secret": "secret", "id_access_token": "t" })).await.unwrap();
        assert_eq!(
            (refused.status, refused.errcode()),
            (403, Some("M_THREEPID_DENIED")),
            "{path}: {}",
            refused.text
        );
    }
    let email = json!({ "client_secret": "secret", "email": "alice@example.org", "send_attempt": 1 });
    let phone = json!({ "client_secret": "secret", "country": "GB", "phone_number": "07700900000", "send_attempt": 1 });
    for (path, body) in [
        ("/register/email/requestToken", &email),
        ("/register/msisdn/requestToken", &phone),
        ("/account/password/email/requestToken", &email),
        ("/account/password/msisdn/requestToken", &phone),
        ("/account/3pid/email/requestToken", &email),
        ("/account/3pid/msisdn/requestToken", &phone),
    ] {
        // No email or SMS goes out, signed in or not.
        let refused = alice.api.post(path, None, body).await.unwrap();
        assert_eq!(
            (refused.status, refused.errcode()),
            (403, Some("M_THREEPID_DENIED")),
            "{path}: {}",
            refused.text
        );
    }
    let not_json = alice
        .api
        .raw(
            reqwest::Method::POST,
            "/register/email/requestToken",
            None,
            Some("application/json"),
            Some(b"{".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!((not_json.status, not_json.errcode()), (400, Some("M_NOT_JSON")));

    for path in ["/account/3pid/delete", "/account/3pid/unbind"] {
        let forgotten =
            alice.post(path, &json!({ "medium": "email", "address": "alice@example.org" })).await.unwrap();
        assert_eq!(forgotten.ok(), json!({ "id_server_unbind_result": "no-support" }), "{path}");
        let missing = alice.post(path, &json!({ "medium": "email" })).await.unwrap();
        assert_eq!((missing.status, missing.errcode()), (400, Some("M_MISSING_PARAM")), "{path}");
        let wrong = alice.post(path, &json!({ "medium": "email", "address": 7 })).await.unwrap();
        assert_eq!((wrong.status, wrong.errcode()), (400, Some("M_BAD_JSON")), "{path}");
    }
    assert_eq!(alice.get("/account/3pid").await.unwrap().ok(), json!({ "threepids": [] }), "still none");
}

async fn bridged_networks_are_none_and_no_turn_server_by_default(backend: Backend) {
    let server = crate::start(backend).await;
    let alice = crate::register_all(&server, &["alice"]).await.remove(0);
    assert_eq!(alice.get("/thirdparty/protocols").await.unwrap().ok(), json!({}));
    for path in
        ["/thirdparty/protocol/irc", "/thirdparty/location/irc?channel=x", "/thirdparty/user/irc?nick=x"]
    {
        let unknown = alice.get(path).await.unwrap();
        assert_eq!(
            (unknown.status, unknown.errcode()),
            (404, Some("M_NOT_FOUND")),
            "{path}: {}",
            unknown.text
        );
    }
    for path in
        ["/thirdparty/location?alias=%23irc_x:example.org", "/thirdparty/user?userid=@irc_x:example.org"]
    {
        assert_eq!(alice.get(path).await.unwrap().ok(), json!([]), "{path}");
    }
    let unauthenticated = alice.api.get("/thirdparty/protocols", None).await.unwrap();
    assert_eq!(unauthenticated.status, 401);
    // Without `[voip]` there is no TURN server either.
    assert_eq!(alice.get("/voip/turnServer").await.unwrap().ok(), json!({}));
}

async fn turn_credentials_come_from_the_shared_secret(backend: Backend) {
    let options = ServerOptions {
        extra_toml: "[voip]\nturn_uris = [\"turn:turn.example.org:3478?transport=udp\", \"turns:turn.example.org:5349\"]\nturn_shared_secret = \"s3cret\"\nturn_user_lifetime_s = 600\n".to_owned(),
        ..ServerOptions::default()
    };
    let server = TestServer::start(backend, options).await.unwrap();
    let bob = crate::register_all(&server, &["bob"]).await.remove(0);
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let answer = bob.get("/voip/turnServer").await.unwrap().ok();
    let after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(
        answer["uris"],
        json!(["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"])
    );
    assert_eq!(answer["ttl"], 600);
    let username = answer["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, bob.user_id);
    let expiry: u64 = expiry.parse().unwrap();
    assert!((before + 600..=after + 600).contains(&expiry), "{expiry} is not 600 s from now");
    // What coturn checks: base64(HMAC-SHA1(secret, username)).
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"s3cret");
    let expected =
        base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, username.as_bytes()));
    assert_eq!(answer["password"], Value::from(expected));
}
