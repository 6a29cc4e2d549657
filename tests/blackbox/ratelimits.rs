//! Rate limits on production defaults (a config file): actions are limited per user and per
//! address, reads never, so an office of users behind one address is not throttled while a user
//! flooding messages and an address guessing passwords are.

use ganglion_testkit::{Account, Api, Backend, ServerOptions, TestServer, enc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::PASSWORD;

on_all_backends!(an_office_behind_one_address_is_not_throttled, flooding_and_password_guessing_are_limited);

/// A config file with registration on and no `[rate_limits]`: the production limits.
async fn start_on_production_limits(backend: Backend) -> TestServer {
    let options = ServerOptions { registration: true, rate_limits: None, ..ServerOptions::default() };
    TestServer::start(backend, options).await.unwrap()
}

/// Runs `work` for each item, at most `parallel` at a time; the results in order.
async fn each<T, R, F>(items: Vec<T>, parallel: usize, work: impl Fn(T) -> F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: std::future::Future<Output = R> + Send + 'static,
{
    let mut results = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let tasks: Vec<_> = items.by_ref().take(parallel).map(|item| tokio::spawn(work(item))).collect();
        for task in tasks {
            results.push(task.await.unwrap());
        }
    }
    results
}

/// What one member of staff's client does when it opens: log in, discover the server, read
/// its settings and rooms, upload a filter, sync, join the office room and say hello. The
/// statuses of every request, by what it was.
async fn open_a_client(api: Api, name: String, room_id: String) -> Vec<(String, u16)> {
    let mut statuses = Vec::new();
    let login = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": name },
        "password": PASSWORD,
    });
    let response = api.post("/login", None, &login).await.unwrap();
    statuses.push(("login".to_owned(), response.status));
    if response.status != 200 {
        return statuses;
    }
    let account = Account::new(
        api.clone(),
        response.body["user_id"].as_str().unwrap(),
        response.body["access_token"].as_str().unwrap(),
        response.body["device_id"].as_str().unwrap(),
    );
    let token = Some(account.access_token.as_str());
    for path in [
        "/_matrix/client/versions",
        "/login",
        "/capabilities",
        "/pushrules/",
        "/joined_rooms",
        "/account/whoami",
    ] {
        statuses.push((path.to_owned(), api.get(path, token).await.unwrap().status));
    }
    let filter = format!("/user/{}/filter", enc(&account.user_id));
    let uploaded = account.post(&filter, &json!({ "room": { "timeline": { "limit": 20 } } })).await.unwrap();
    statuses.push(("filter".to_owned(), uploaded.status));
    let filter_id = uploaded.body["filter_id"].as_str().unwrap_or_default().to_owned();
    let sync = account.get(&format!("/sync?filter={}&timeout=0", enc(&filter_id))).await.unwrap();
    statuses.push(("initial sync".to_owned(), sync.status));
    let joined = account.post(&format!("/rooms/{}/join", enc(&room_id)), &json!({})).await.unwrap();
    statuses.push(("join".to_owned(), joined.status));
    for n in 0..3 {
        let path = format!("/rooms/{}/send/m.room.message/hello-{n}", enc(&room_id));
        let sent =
            account.put(&path, &json!({ "msgtype": "m.text", "body": format!("hello {n}") })).await.unwrap();
        statuses.push((format!("send {n}"), sent.status));
    }
    let since = sync.body["next_batch"].as_str().unwrap_or_default();
    let again = account.get(&format!("/sync?since={}&timeout=0", enc(since))).await.unwrap();
    statuses.push(("incremental sync".to_owned(), again.status));
    statuses
}

async fn an_office_behind_one_address_is_not_throttled(backend: Backend) {
    let server = start_on_production_limits(backend).await;
    let api = server.api();
    let names: Vec<String> = (0..200).map(|n| format!("staff{n}")).collect();
    let registered = each(names.clone(), 20, {
        let api = api.clone();
        move |name: String| {
            let api = api.clone();
            async move { api.register(&name, PASSWORD).await.unwrap() }
        }
    })
    .await;
    let room_id =
        registered[0].create_room(&json!({ "preset": "public_chat", "name": "Office" })).await.unwrap();

    // All 200 open their clients within moments, from 127.0.0.1 (through nginx on the
    // cluster); 40 at a time, so that password hashing on this small machine keeps within
    // the cluster's gRPC deadline.
    let opened = each(names, 40, move |name: String| open_a_client(api.clone(), name, room_id.clone())).await;
    let mut refused = Vec::new();
    for (name, statuses) in (0..).zip(&opened) {
        assert_eq!(statuses.len(), 14, "staff{name}'s client stopped early: {statuses:?}");
        refused.extend(
            statuses
                .iter()
                .filter(|(_, status)| *status != 200)
                .map(|(what, status)| format!("staff{name} {what}: {status}")),
        );
    }
    assert!(
        refused.is_empty(),
        "{} requests of the office refused: {:?}",
        refused.len(),
        &refused[..refused.len().min(20)]
    );
}

/// Sends until a 429; the statuses before it and the 429's body.
async fn send_until_limited(account: &Account, room_id: &str, attempts: usize) -> (Vec<u16>, Option<Value>) {
    let mut statuses = Vec::new();
    for n in 0..attempts {
        let path = format!("/rooms/{}/send/m.room.message/flood-{n}", enc(room_id));
        let response = account.put(&path, &json!({ "msgtype": "m.text", "body": "spam" })).await.unwrap();
        if response.status == 429 {
            return (statuses, Some(response.err(429, "M_LIMIT_EXCEEDED").clone()));
        }
        statuses.push(response.status);
    }
    (statuses, None)
}

/// A login attempt with a forged `X-Forwarded-For` (no proxy is trusted but nginx, so it must
/// change nothing).
async fn login_from(api: &Api, user: &str, password: &str, forged: &str) -> (u16, Value) {
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password });
    let url = format!("{}/_matrix/client/v3/login", api.base_url());
    let response = reqwest::Client::new()
        .request(Method::POST, &url)
        .header("x-forwarded-for", forged)
        .header("x-real-ip", forged)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn flooding_and_password_guessing_are_limited(backend: Backend) {
    let server = start_on_production_limits(backend).await;
    let api = server.api();
    let alice = api.register("alice", PASSWORD).await.unwrap();
    let bob = api.register("bob", PASSWORD).await.unwrap();
    let room_id = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room_id).await.unwrap();

    // A user flooding messages is limited (message: 0.2/s, burst 10)…
    let (statuses, limited) = send_until_limited(&alice, &room_id, 30).await;
    let limited = limited.unwrap_or_else(|| panic!("30 quick sends were never limited: {statuses:?}"));
    assert!(statuses.len() >= 5 && statuses.iter().all(|status| *status == 200), "{statuses:?}");
    let retry_after =
        limited["retry_after_ms"].as_u64().unwrap_or_else(|| panic!("no retry_after_ms: {limited}"));
    assert!(retry_after > 0 && retry_after <= 5_000, "retry_after_ms {retry_after} for 0.2/s");
    // …alone, and only for what it limits: bob still sends, alice still reads.
    let path = format!("/rooms/{}/send/m.room.message/bob-1", enc(&room_id));
    bob.put(&path, &json!({ "msgtype": "m.text", "body": "hi" })).await.unwrap().ok();
    for _ in 0..50 {
        alice.get("/account/whoami").await.unwrap().ok();
    }
    alice.get("/sync?timeout=0").await.unwrap().ok();

    // Wrong passwords for bob from one machine, each claiming another address: limited per
    // account (login_failed_attempts: 0.17/s, burst 3) whatever the forged headers say…
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for n in 0..4 {
        let (status, body) = login_from(&api, "bob", "wrong password", &format!("198.51.100.{n}")).await;
        statuses.push(status);
        if n == 3 {
            assert!(body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{body}");
        }
    }
    assert_eq!(statuses, [403, 403, 403, 429], "three guesses, then 429");
    // …and then the right password is refused too, until the bucket refills (about 6 s).
    let (status, body) = login_from(&api, "bob", PASSWORD, "198.51.100.200").await;
    assert_eq!(status, 429, "the right password after the guesses: {body}");
    for n in 4..30 {
        let (status, body) = login_from(&api, "bob", "wrong password", &format!("198.51.100.{n}")).await;
        assert!(status == 403 || status == 429, "guess {n}: {status} {body}");
        statuses.push(status);
    }
    // Only what the bucket refilled meanwhile got to a password check.
    let checked = statuses.iter().filter(|status| **status == 403).count();
    let refilled = (started.elapsed().as_secs_f64() * 0.17).ceil() as usize;
    assert!(
        checked <= 3 + refilled,
        "{checked} of 30 guesses checked in {:?}: {statuses:?}",
        started.elapsed()
    );

    // Guessing across accounts is limited per address (login_failed_attempts_address: burst
    // 30), the forged addresses notwithstanding.
    let mut guesses = 0;
    let mut limited = None;
    for n in 0..60 {
        let (status, body) =
            login_from(&api, &format!("nobody{n}"), "guess", &format!("203.0.113.{n}")).await;
        if status == 429 {
            limited = Some(body);
            break;
        }
        assert_eq!(status, 403, "guess {n}: {body}");
        guesses += 1;
    }
    let limited =
        limited.unwrap_or_else(|| panic!("60 guesses at 60 accounts from one address were never limited"));
    assert!(limited["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{limited}");
    // The address's 30 failures, less those spent on bob, plus what refilled (0.5/s).
    let refilled = (started.elapsed().as_secs_f64() * 0.5).ceil() as usize;
    assert!(
        guesses + checked >= 30 && guesses + checked <= 30 + refilled,
        "limited after {guesses} guesses (and {checked} on bob) in {:?}",
        started.elapsed()
    );
}
