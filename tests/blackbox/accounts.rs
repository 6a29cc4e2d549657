//! Accounts: registration (UIA), availability, login, whoami, logout, password change, devices.

use std::{collections::HashSet, time::Duration};

use ganglion_testkit::{Account, Api, Backend, Response, enc, eventually};
use serde_json::{Value, json};

use crate::{PASSWORD, get_ok, start};

on_all_backends!(
    registration_is_user_interactive_and_checks_names,
    login_whoami_and_logout,
    login_as_an_existing_device_revokes_its_old_token,
    logout_all_ends_every_session,
    password_change_needs_uia_and_replaces_the_password,
    devices_can_be_listed_renamed_and_deleted,
);

/// `{ "type": "m.login.password", … }` auth for user-interactive requests.
fn password_auth(user: &str, password: &str, session: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
        "session": session,
    })
}

/// A UIA 401: `flows` (each a list of stages) and a `session`; returns the session.
#[track_caller]
fn uia_session(response: &Response, stage: &str) -> String {
    assert_eq!(response.status, 401, "expected a UIA 401: {}", response.text);
    let flows = response.body["flows"].as_array().unwrap_or_else(|| panic!("no flows: {}", response.text));
    assert!(
        flows.iter().any(|flow| flow["stages"].as_array().is_some_and(|s| s.contains(&json!(stage)))),
        "no flow offers {stage}: {}",
        response.text
    );
    let session =
        response.body["session"].as_str().unwrap_or_else(|| panic!("no session: {}", response.text));
    assert!(!session.is_empty());
    session.to_owned()
}

/// Runs `/register` with `body` through the dummy stage, whatever it answers in the end.
/// A server may reject a bad username before or after the UIA stage; both are fine.
async fn register_through_uia(api: &Api, mut body: Value) -> Response {
    let first = api.post("/register", None, &body).await.unwrap();
    if first.status != 401 {
        return first;
    }
    body["auth"] = json!({ "type": "m.login.dummy", "session": uia_session(&first, "m.login.dummy") });
    api.post("/register", None, &body).await.unwrap()
}

async fn whoami(account: &Account) -> Response {
    account.get("/account/whoami").await.unwrap()
}

async fn registration_is_user_interactive_and_checks_names(backend: Backend) {
    let server = start(backend).await;
    let api = server.api();

    let bare = api.post("/register", None, &json!({})).await.unwrap();
    uia_session(&bare, "m.login.dummy");

    let body = json!({ "username": "carol", "password": PASSWORD });
    let first = api.post("/register", None, &body).await.unwrap();
    let session = uia_session(&first, "m.login.dummy");
    let mut with_auth = body.clone();
    with_auth["auth"] = json!({ "type": "m.login.dummy", "session": session });
    let done = api.post("/register", None, &with_auth).await.unwrap().ok();
    assert_eq!(done["user_id"], "@carol:localhost");
    let carol = Account::new(
        api.clone(),
        "@carol:localhost",
        done["access_token"].as_str().expect("no access_token"),
        done["device_id"].as_str().expect("no device_id"),
    );
    let me = whoami(&carol).await.ok();
    assert_eq!(me["user_id"], "@carol:localhost");
    assert_eq!(me["device_id"], carol.device_id.as_str());

    register_through_uia(&api, body).await.err(400, "M_USER_IN_USE");
    register_through_uia(&api, json!({ "username": "Not Valid!", "password": PASSWORD }))
        .await
        .err(400, "M_INVALID_USERNAME");

    let available = |name: &str| format!("/register/available?username={}", enc(name));
    assert_eq!(api.get(&available("dave"), None).await.unwrap().ok(), json!({ "available": true }));
    api.get(&available("carol"), None).await.unwrap().err(400, "M_USER_IN_USE");
    api.get(&available("Not Valid!"), None).await.unwrap().err(400, "M_INVALID_USERNAME");
}

async fn login_whoami_and_logout(backend: Backend) {
    let server = start(backend).await;
    let api = server.api();
    let registered = server.register("alice", PASSWORD).await.unwrap();

    let flows = api.get("/login", None).await.unwrap().ok();
    assert!(
        flows["flows"].as_array().unwrap().iter().any(|flow| flow["type"] == "m.login.password"),
        "GET /login must offer m.login.password: {flows}"
    );
    let login = api.login("alice", PASSWORD).await.unwrap();
    assert_eq!(login.user_id, "@alice:localhost");
    assert_ne!(login.device_id, registered.device_id, "each login is a new device");
    assert_ne!(login.access_token, registered.access_token);
    let me = whoami(&login).await.ok();
    assert_eq!(me["user_id"], "@alice:localhost");
    assert_eq!(me["device_id"], login.device_id.as_str());

    let wrong = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": "not the password",
    });
    api.post("/login", None, &wrong).await.unwrap().err(403, "M_FORBIDDEN");
    let mut nobody = wrong.clone();
    nobody["identifier"]["user"] = json!("nobody");
    api.post("/login", None, &nobody).await.unwrap().err(403, "M_FORBIDDEN");

    login.post("/logout", &json!({})).await.unwrap().ok();
    whoami(&login).await.err(401, "M_UNKNOWN_TOKEN");
    login.post("/logout", &json!({})).await.unwrap().err(401, "M_UNKNOWN_TOKEN");
    whoami(&registered).await.ok();
    let devices = get_ok(&registered, "/devices").await;
    let ids: Vec<&str> =
        devices["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [registered.device_id.as_str()], "logout deletes the device");
}

/// Logging in again with a `device_id` replaces that device's session: the old token answers
/// 401 `M_UNKNOWN_TOKEN` on every process (a cluster learns of it through the caches stream),
/// the new one works, and the device is still listed once.
async fn login_as_an_existing_device_revokes_its_old_token(backend: Backend) {
    let mut server = start(backend).await;
    let api = server.api();
    let registered = server.register("alice", PASSWORD).await.unwrap();
    let login_as_phone = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": PASSWORD,
        "device_id": "PHONE",
    });
    let session_of = |body: &Value| {
        assert_eq!(body["device_id"], "PHONE", "{body}");
        Account::new(api.clone(), "@alice:localhost", body["access_token"].as_str().unwrap(), "PHONE")
    };
    let old = session_of(&api.post("/login", None, &login_as_phone).await.unwrap().ok());

    // Every process that serves the client API, with how to ask it whether a token works: the
    // direct address of each cluster worker, and the front door (nginx or the one process).
    let mut targets = vec![(api.clone(), "/account/whoami"), (api.clone(), "/sync?timeout=0")];
    if let Some(cluster) = server.cluster() {
        for name in ["reader1", "reader2", "sync1", "sync2"] {
            let path = if name.starts_with("sync") { "/sync?timeout=0" } else { "/account/whoami" };
            targets.push((Api::new(cluster.url_of(name)), path));
        }
    }
    let through = |target: &Api, account: &Account| {
        Account::new(target.clone(), &account.user_id, &account.access_token, &account.device_id)
    };
    // Each process caches the old session before it is revoked.
    for (target, path) in &targets {
        let response = through(target, &old).get(path).await.unwrap();
        assert_eq!(response.status, 200, "{} {path}: {}", target.base_url(), response.text);
    }

    let new = session_of(&api.post("/login", None, &login_as_phone).await.unwrap().ok());
    assert_ne!(new.access_token, old.access_token);
    for (target, path) in &targets {
        let old = through(target, &old);
        eventually(Duration::from_secs(5), "the old token is refused", || {
            let old = old.clone();
            async move {
                let response = old.get(path).await?;
                Ok((response.status == 401 && response.errcode() == Some("M_UNKNOWN_TOKEN")).then_some(()))
            }
        })
        .await
        .unwrap_or_else(|error| panic!("{} {path}: {error:#}", target.base_url()));
    }
    // Once refused, refused for good, wherever the request lands.
    for _ in 0..5 {
        for (target, path) in &targets {
            through(target, &old).get(path).await.unwrap().err(401, "M_UNKNOWN_TOKEN");
            let response = through(target, &new).get(path).await.unwrap();
            assert_eq!(response.status, 200, "{} {path}: {}", target.base_url(), response.text);
        }
    }
    let me = whoami(&new).await.ok();
    assert_eq!(me["device_id"], "PHONE");
    let devices = get_ok(&new, "/devices").await;
    let mut ids: Vec<&str> =
        devices["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected = vec!["PHONE", registered.device_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "the device is listed once");
    whoami(&registered).await.ok();
}

async fn logout_all_ends_every_session(backend: Backend) {
    let server = start(backend).await;
    let api = server.api();
    let registered = server.register("alice", PASSWORD).await.unwrap();
    let first = api.login("alice", PASSWORD).await.unwrap();
    let second = api.login("alice", PASSWORD).await.unwrap();
    let bob = server.register("bob", PASSWORD).await.unwrap();

    first.post("/logout/all", &json!({})).await.unwrap().ok();
    for account in [&registered, &first, &second] {
        whoami(account).await.err(401, "M_UNKNOWN_TOKEN");
    }
    whoami(&bob).await.ok();
    let again = api.login("alice", PASSWORD).await.unwrap();
    let devices = get_ok(&again, "/devices").await;
    let ids: Vec<&str> =
        devices["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [again.device_id.as_str()], "logout/all deletes every device");
}

async fn password_change_needs_uia_and_replaces_the_password(backend: Backend) {
    let server = start(backend).await;
    let api = server.api();
    let main = server.register("alice", PASSWORD).await.unwrap();
    let other = api.login("alice", PASSWORD).await.unwrap();
    let new_password = "a whole new password";

    let first = main.post("/account/password", &json!({ "new_password": new_password })).await.unwrap();
    let session = uia_session(&first, "m.login.password");
    let bad = json!({ "new_password": new_password, "auth": password_auth("alice", "wrong", &session) });
    let refused = main.post("/account/password", &bad).await.unwrap();
    assert_eq!((refused.status, refused.errcode()), (401, Some("M_FORBIDDEN")), "{}", refused.text);
    api.login("alice", PASSWORD).await.expect("a refused change must keep the old password");

    let good = json!({ "new_password": new_password, "auth": password_auth("alice", PASSWORD, &session) });
    main.post("/account/password", &good).await.unwrap().ok();
    let old = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": PASSWORD,
    });
    api.post("/login", None, &old).await.unwrap().err(403, "M_FORBIDDEN");
    api.login("alice", new_password).await.unwrap();
    whoami(&main).await.ok();
    // logout_devices defaults to true: the other sessions are gone.
    whoami(&other).await.err(401, "M_UNKNOWN_TOKEN");
}

async fn devices_can_be_listed_renamed_and_deleted(backend: Backend) {
    let server = start(backend).await;
    let api = server.api();
    let main = server.register("alice", PASSWORD).await.unwrap();
    let second = api.login("alice", PASSWORD).await.unwrap();
    let bob = server.register("bob", PASSWORD).await.unwrap();

    let devices = get_ok(&main, "/devices").await;
    let ids: HashSet<&str> =
        devices["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert_eq!(ids, HashSet::from([main.device_id.as_str(), second.device_id.as_str()]));
    let path = format!("/devices/{}", enc(&second.device_id));
    let device = get_ok(&main, &path).await;
    assert_eq!(device["device_id"], second.device_id.as_str());
    assert_eq!(device["display_name"], "ganglion-testkit login");

    main.put(&path, &json!({ "display_name": "renamed" })).await.unwrap().ok();
    assert_eq!(get_ok(&main, &path).await["display_name"], "renamed");
    main.get("/devices/NOSUCHDEVICE").await.unwrap().err(404, "M_NOT_FOUND");
    bob.get(&path).await.unwrap().err(404, "M_NOT_FOUND");

    let first = main.delete(&path, Some(&json!({}))).await.unwrap();
    let session = uia_session(&first, "m.login.password");
    get_ok(&main, &path).await;
    whoami(&second).await.ok();
    let auth = json!({ "auth": password_auth("alice", PASSWORD, &session) });
    main.delete(&path, Some(&auth)).await.unwrap().ok();
    main.get(&path).await.unwrap().err(404, "M_NOT_FOUND");
    whoami(&second).await.err(401, "M_UNKNOWN_TOKEN");
    let devices = get_ok(&main, "/devices").await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
}
