//! Error responses, each checked by HTTP status and `errcode`, and that failures write nothing.

use std::time::Duration;

use ganglion_testkit::{Backend, Bucket, RateLimits, ServerOptions, TestServer, enc, eventually};
use reqwest::Method;
use serde_json::json;

use crate::{PASSWORD, get_ok, initial_since, register_all, start};

on_all_backends!(
    malformed_and_wrong_shape_bodies,
    unknown_endpoints_and_wrong_methods,
    missing_and_invalid_tokens,
    oversized_body_is_too_large,
    rate_limit_answers_429_with_retry_after,
    registration_disabled_is_forbidden,
    failed_create_room_leaves_nothing_behind,
    junk_on_every_route_never_answers_5xx,
);

async fn malformed_and_wrong_shape_bodies(backend: Backend) {
    let server = start(backend).await;
    let alice = register_all(&server, &["alice"]).await.remove(0);
    let api = server.api();
    let token = Some(alice.access_token.as_str());

    for body in [&b"{not json"[..], b"", b"[1, 2", b"\xff\xfe"] {
        let response = api
            .raw(Method::POST, "/createRoom", token, Some("application/json"), Some(body.to_vec()))
            .await
            .unwrap();
        response.err(400, "M_NOT_JSON");
    }
    let login =
        api.raw(Method::POST, "/login", None, Some("application/json"), Some(b"{".to_vec())).await.unwrap();
    login.err(400, "M_NOT_JSON");

    for body in [json!({ "preset": 5 }), json!({ "invite": "@bob:localhost" }), json!([]), json!("room")] {
        alice.post("/createRoom", &body).await.unwrap().err(400, "M_BAD_JSON");
    }
    let room = alice.create_room(&json!({})).await.unwrap();
    let typing = format!("/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id));
    alice.put(&typing, &json!({ "typing": "yes" })).await.unwrap().err(400, "M_BAD_JSON");
    let login = json!({ "type": "m.login.password", "identifier": "alice", "password": 1 });
    api.post("/login", None, &login).await.unwrap().err(400, "M_BAD_JSON");
}

async fn unknown_endpoints_and_wrong_methods(backend: Backend) {
    let server = start(backend).await;
    let alice = register_all(&server, &["alice"]).await.remove(0);
    let api = server.api();

    for token in [None, Some(alice.access_token.as_str())] {
        api.get("/no_such_endpoint", token).await.unwrap().err(404, "M_UNRECOGNIZED");
        api.get("/_matrix/client/v3/rooms/!a:localhost/no_such_thing", token)
            .await
            .unwrap()
            .err(404, "M_UNRECOGNIZED");
        api.get("/_matrix/client/v0/login", token).await.unwrap().err(404, "M_UNRECOGNIZED");
    }
    api.get("/createRoom", Some(&alice.access_token)).await.unwrap().err(405, "M_UNRECOGNIZED");
    api.request(Method::PUT, "/login", None, Some(&json!({}))).await.unwrap().err(405, "M_UNRECOGNIZED");
    api.request(Method::DELETE, "/account/whoami", Some(&alice.access_token), None)
        .await
        .unwrap()
        .err(405, "M_UNRECOGNIZED");
}

async fn missing_and_invalid_tokens(backend: Backend) {
    let server = start(backend).await;
    register_all(&server, &["alice"]).await;
    let api = server.api();

    for path in ["/account/whoami", "/sync", "/joined_rooms", "/devices"] {
        api.get(path, None).await.unwrap().err(401, "M_MISSING_TOKEN");
        api.get(path, Some("not-a-token")).await.unwrap().err(401, "M_UNKNOWN_TOKEN");
    }
    api.post("/createRoom", None, &json!({})).await.unwrap().err(401, "M_MISSING_TOKEN");
    api.post("/createRoom", Some("not-a-token"), &json!({})).await.unwrap().err(401, "M_UNKNOWN_TOKEN");
    // Public endpoints need no token.
    api.get("/login", None).await.unwrap().ok();
    api.get("/_matrix/client/versions", None).await.unwrap().ok();
}

async fn oversized_body_is_too_large(backend: Backend) {
    let options = ServerOptions { max_body_bytes: Some(2048), ..ServerOptions::default() };
    let server = TestServer::start(backend, options).await.unwrap();
    let alice = register_all(&server, &["alice"]).await.remove(0);

    let small = json!({ "topic": "x".repeat(1000) });
    let room = alice.create_room(&small).await.unwrap();
    let large = json!({ "topic": "x".repeat(4000) });
    alice.post("/createRoom", &large).await.unwrap().err(413, "M_TOO_LARGE");
    let message = json!({ "msgtype": "m.text", "body": "y".repeat(10_000) });
    let path = format!("/rooms/{}/send/m.room.message/big-1", enc(&room));
    alice.put(&path, &message).await.unwrap().err(413, "M_TOO_LARGE");
    let joined = get_ok(&alice, "/joined_rooms").await;
    assert_eq!(joined["joined_rooms"], json!([room]), "the refused createRoom made a room");
}

async fn rate_limit_answers_429_with_retry_after(backend: Backend) {
    let limits = RateLimits::generous().with("message", Bucket { per_second: 1.0, burst: 5 });
    let options = ServerOptions { rate_limits: Some(limits), ..ServerOptions::default() };
    let server = TestServer::start(backend, options).await.unwrap();
    let [alice, bob] = <[_; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room).await.unwrap();
    let send = |account: &ganglion_testkit::Account, n: usize| {
        let path = format!("/rooms/{}/send/m.room.message/t{n}", enc(&room));
        let account = account.clone();
        async move { account.put(&path, &json!({ "msgtype": "m.text", "body": "x" })).await }
    };

    let mut statuses = Vec::new();
    let mut limited = None;
    for n in 0..20 {
        let response = send(&alice, n).await.unwrap();
        statuses.push(response.status);
        if response.status == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited =
        limited.unwrap_or_else(|| panic!("20 quick sends with burst 5 were never limited: {statuses:?}"));
    assert_eq!(statuses[0], 200, "the first send fits in the burst");
    assert!(statuses.len() > 1, "burst 5 allows more than one send");
    let body = limited.err(429, "M_LIMIT_EXCEEDED");
    let retry_after = body["retry_after_ms"].as_u64().unwrap_or_else(|| panic!("no retry_after_ms: {body}"));
    assert!(retry_after > 0 && retry_after <= 5_000, "retry_after_ms {retry_after} for a 1/s bucket");
    assert!(limited.headers.contains_key("retry-after"), "a Retry-After header");

    // Per user and per action: bob still sends, alice still reads; and alice gets through
    // again once her bucket refills.
    assert_eq!(send(&bob, 100).await.unwrap().status, 200);
    get_ok(&alice, "/account/whoami").await;
    let (alice, send) = (&alice, &send);
    eventually(Duration::from_secs(10), "alice's bucket to refill", move || async move {
        Ok((send(alice, 200).await?.status == 200).then_some(()))
    })
    .await
    .unwrap();
}

async fn registration_disabled_is_forbidden(backend: Backend) {
    let options = ServerOptions { registration: false, ..ServerOptions::default() };
    let server = TestServer::start(backend, options).await.unwrap();
    let api = server.api();
    api.post("/register", None, &json!({})).await.unwrap().err(403, "M_FORBIDDEN");
    let body = json!({
        "username": "mallory",
        "password": PASSWORD,
        "auth": { "type": "m.login.dummy" },
    });
    api.post("/register", None, &body).await.unwrap().err(403, "M_FORBIDDEN");
    let login = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "mallory" },
        "password": PASSWORD,
    });
    api.post("/login", None, &login).await.unwrap().err(403, "M_FORBIDDEN");
}

async fn failed_create_room_leaves_nothing_behind(backend: Backend) {
    let server = start(backend).await;
    let alice = register_all(&server, &["alice"]).await.remove(0);
    let existing = alice.create_room(&json!({ "room_alias_name": "taken" })).await.unwrap();
    let since = initial_since(&alice, "").await;

    let invalid_state = json!({
        "name": "half",
        "initial_state": [{ "type": "m.room.topic", "state_key": 5, "content": { "topic": "t" } }],
    });
    let failed = alice.post("/createRoom", &invalid_state).await.unwrap();
    assert_eq!(failed.status, 400, "invalid initial_state: {}", failed.text);
    let bad_invite = json!({ "name": "half", "invite": ["not-a-user-id"] });
    let failed = alice.post("/createRoom", &bad_invite).await.unwrap();
    assert_eq!(failed.status, 400, "invalid invitee: {}", failed.text);
    assert!(
        matches!(failed.errcode(), Some("M_BAD_JSON" | "M_INVALID_PARAM")),
        "invalid invitee errcode: {}",
        failed.text
    );
    let taken = json!({ "name": "half", "room_alias_name": "taken" });
    alice.post("/createRoom", &taken).await.unwrap().err(400, "M_ROOM_IN_USE");

    let joined = get_ok(&alice, "/joined_rooms").await;
    assert_eq!(joined["joined_rooms"], json!([existing]), "a failed createRoom left a room behind");
    let directory = get_ok(&alice, &format!("/directory/room/{}", enc("#taken:localhost"))).await;
    assert_eq!(directory["room_id"], existing.as_str(), "the alias moved");
    let sync = alice.sync(&format!("since={}&timeout=0", enc(&since))).await.unwrap();
    let new_rooms: Vec<&String> = ["join", "invite", "leave"]
        .iter()
        .filter_map(|section| sync["rooms"][section].as_object())
        .flat_map(|rooms| rooms.keys())
        .collect();
    assert!(new_rooms.is_empty(), "sync shows rooms from failed requests: {new_rooms:?}");
}

/// Every route of the route table (`tests/snapshots/routes.json`), with junk in its path
/// parameters, query and body, with and without a token: the answer is always a Matrix error or
/// a success, never a 5xx.
async fn junk_on_every_route_never_answers_5xx(backend: Backend) {
    let server = start(backend).await;
    let alice = register_all(&server, &["alice"]).await.remove(0);
    let room = alice.create_room(&json!({ "name": "junk" })).await.unwrap();
    let api = server.api();
    let routes: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../snapshots/routes.json")).unwrap();
    let params = [
        "%00".to_owned(),
        "!nope".to_owned(),
        "@bad".to_owned(),
        "%24x".to_owned(),
        "%ZZ".to_owned(),
        "a".repeat(300),
        enc(&room),
        enc("@alice:localhost"),
        enc("#a:localhost"),
        "m.room.message".to_owned(),
        "%F0%9F%98%80".to_owned(),
    ];
    let queries = [
        "",
        "?limit=-1",
        "?limit=abc&dir=x",
        "?from=zzz&dir=b",
        "?since=s1_9999_0_0_0_0",
        "?filter=%7B",
        "?at=p-5",
    ];
    let big = format!("{{\"msgtype\":\"m.text\",\"body\":\"{}\"}}", "x".repeat(2_000));
    let bodies: Vec<Option<Vec<u8>>> = vec![
        None,
        Some(b"".to_vec()),
        Some(b"{".to_vec()),
        Some(b"[]".to_vec()),
        Some(b"null".to_vec()),
        Some(b"{\"a\": 1.5}".to_vec()),
        Some(b"{\"user_id\": \"@x\", \"content\": {\"x\": [1]}}".to_vec()),
        Some(big.into_bytes()),
    ];
    let mut requests = 0;
    for (index, route) in routes.iter().enumerate() {
        let method = Method::from_bytes(route["method"].as_str().unwrap().as_bytes()).unwrap();
        for round in 0..4 {
            let pick = index * 7 + round * 3;
            let mut slot = 0;
            let mut path = String::new();
            for piece in route["path"].as_str().unwrap().split_inclusive(['{', '}']) {
                if let Some(literal) = piece.strip_suffix('{') {
                    path.push_str(literal);
                } else if piece.ends_with('}') {
                    slot += 1;
                    path.push_str(&params[(pick + slot) % params.len()]);
                } else {
                    path.push_str(piece);
                }
            }
            path.push_str(queries[(pick + round) % queries.len()]);
            // Bodies only where HTTP carries them: a server may answer a GET before reading one.
            let body =
                if method == Method::GET { None } else { bodies[(pick + 2 * round) % bodies.len()].clone() };
            for token in [Some(alice.access_token.as_str()), None] {
                let response = api
                    .raw(method.clone(), &path, token, Some("application/json"), body.clone())
                    .await
                    .unwrap();
                requests += 1;
                assert!(
                    response.status < 500,
                    "{method} {path} answered {}: {}",
                    response.status,
                    response.text
                );
                // A bare user-interactive-auth challenge is a flows object without an errcode.
                if response.status >= 400 && response.body.get("flows").is_none() {
                    assert!(
                        response.errcode().is_some_and(|code| code.starts_with("M_")),
                        "{method} {path} answered {} without a Matrix errcode: {}",
                        response.status,
                        response.text
                    );
                }
            }
        }
    }
    assert!(requests > 500, "only {requests} requests");
}
