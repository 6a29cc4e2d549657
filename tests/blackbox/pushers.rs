//! Pushers: `/pushers` and `/pushers/set` (errors included), and notifications delivered to an
//! HTTP push gateway the test runs, exactly once per (event, pusher), through a gateway outage,
//! a rejected pushkey and (on a cluster with two pusher workers) one of them killed mid-burst.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Json, extract::State, routing::post};
use ganglion_testkit::{Account, Backend, ServerOptions, TestServer};
use serde_json::{Value, json};

use crate::{PASSWORD, SYNC_DEADLINE, get_ok};

on_all_backends!(
    pushers_are_set_listed_replaced_and_deleted,
    bad_pushers_get_matrix_errors_and_nothing_is_stored,
    each_notification_reaches_the_gateway_once_per_pusher,
    a_failing_gateway_gets_every_notification_once_it_recovers,
    a_rejected_pushkey_drops_its_pusher,
    the_badge_counts_unread_rooms_through_receipts_and_leaves,
);

/// A push gateway on loopback: records what it is sent; answers 500 while told to fail, and
/// rejects the pushkeys it is told to.
#[derive(Clone, Default)]
pub(crate) struct Gateway {
    received: Arc<std::sync::Mutex<Vec<Value>>>,
    failing: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    rejecting: Arc<std::sync::Mutex<HashSet<String>>>,
}

async fn notify(
    State(gateway): State<Gateway>,
    Json(body): Json<Value>,
) -> (axum::http::StatusCode, Json<Value>) {
    if gateway.failing.load(Ordering::SeqCst) {
        gateway.failures.fetch_add(1, Ordering::SeqCst);
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, Json(json!({})));
    }
    let rejecting = gateway.rejecting.lock().unwrap().clone();
    let rejected: Vec<&str> = body["notification"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|device| device["pushkey"].as_str())
        .filter(|key| rejecting.contains(*key))
        .collect();
    let answer = json!({ "rejected": rejected });
    gateway.received.lock().unwrap().push(body["notification"].clone());
    (axum::http::StatusCode::OK, Json(answer))
}

impl Gateway {
    /// Starts it; its notify URL.
    pub(crate) async fn start() -> (Gateway, String) {
        let gateway = Gateway::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().unwrap());
        let app =
            axum::Router::new().route("/_matrix/push/v1/notify", post(notify)).with_state(gateway.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (gateway, url)
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what it received.
    pub(crate) async fn until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + SYNC_DEADLINE * 2;
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: the gateway received {received:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `(event id, pushkey)` of each notification, in arrival order.
fn deliveries(received: &[Value]) -> Vec<(String, String)> {
    received
        .iter()
        .flat_map(|notification| {
            let event = notification["event_id"].as_str().unwrap_or_default().to_owned();
            notification["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |device| (event.clone(), device["pushkey"].as_str().unwrap_or_default().to_owned()))
        })
        .collect()
}

pub(crate) fn pusher(url: &str, pushkey: &str, data: Value) -> Value {
    let mut data = data;
    data["url"] = json!(url);
    json!({
        "kind": "http",
        "app_id": "org.example.app",
        "pushkey": pushkey,
        "app_display_name": "Example",
        "device_display_name": format!("Phone {pushkey}"),
        "lang": "en",
        "data": data,
    })
}

async fn start_pushing(backend: Backend) -> TestServer {
    let options = ServerOptions {
        extra_toml: "[push]\nallowed_address_ranges = [\"127.0.0.0/8\"]\n".to_owned(),
        ..ServerOptions::default()
    };
    TestServer::start_with_pushers(backend, options).await.unwrap()
}

async fn set_pusher(account: &Account, body: &Value) {
    account.post("/pushers/set", body).await.unwrap().ok();
}

/// Alice and Bob in a room of three (Carol too, so no rule for one-to-one rooms applies).
async fn room_of_three(server: &TestServer) -> (Account, Account, String) {
    let ([alice, bob, _carol], room) = crate::three_in_a_public_room(server).await;
    (alice, bob, room)
}

async fn pushers_are_set_listed_replaced_and_deleted(backend: Backend) {
    let server = start_pushing(backend).await;
    let [alice, bob] =
        <[Account; 2]>::try_from(crate::register_all(&server, &["alice", "bob"]).await).unwrap();
    let url = "http://127.0.0.1:9/_matrix/push/v1/notify";
    assert_eq!(get_ok(&alice, "/pushers").await, json!({ "pushers": [] }));
    let mut body = pusher(url, "key-1", json!({ "format": "event_id_only", "brand": "x" }));
    body["profile_tag"] = json!("tag");
    set_pusher(&alice, &body).await;
    let listed = get_ok(&alice, "/pushers").await;
    let mut expected = body.clone();
    expected.as_object_mut().unwrap().remove("profile_tag");
    expected["profile_tag"] = json!("tag");
    assert_eq!(listed["pushers"], json!([expected]), "{listed}");
    // Set again: updated, not doubled.
    body["device_display_name"] = json!("Renamed");
    set_pusher(&alice, &body).await;
    let listed = get_ok(&alice, "/pushers").await;
    assert_eq!(listed["pushers"].as_array().unwrap().len(), 1);
    assert_eq!(listed["pushers"][0]["device_display_name"], "Renamed");

    // The same app and key for Bob: Alice's goes, unless Bob appends.
    let mut appended = pusher(url, "key-1", json!({}));
    appended["append"] = json!(true);
    set_pusher(&bob, &appended).await;
    assert_eq!(
        get_ok(&alice, "/pushers").await["pushers"].as_array().unwrap().len(),
        1,
        "append kept Alice's"
    );
    set_pusher(&bob, &pusher(url, "key-1", json!({}))).await;
    assert_eq!(get_ok(&alice, "/pushers").await["pushers"], json!([]), "the device changed hands");
    assert_eq!(get_ok(&bob, "/pushers").await["pushers"].as_array().unwrap().len(), 1);
    // `kind: null` deletes.
    set_pusher(&bob, &json!({ "kind": null, "app_id": "org.example.app", "pushkey": "key-1" })).await;
    assert_eq!(get_ok(&bob, "/pushers").await["pushers"], json!([]));
}

async fn bad_pushers_get_matrix_errors_and_nothing_is_stored(backend: Backend) {
    let server = start_pushing(backend).await;
    let alice = server.register("alice", PASSWORD).await.unwrap();
    let url = "http://127.0.0.1:9/_matrix/push/v1/notify";
    let good = pusher(url, "key", json!({}));
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let cases = [
        (without("app_id"), 400, "M_MISSING_PARAM"),
        (without("pushkey"), 400, "M_MISSING_PARAM"),
        (without("lang"), 400, "M_MISSING_PARAM"),
        (without("data"), 400, "M_MISSING_PARAM"),
        (with("kind", json!("email")), 400, "M_INVALID_PARAM"),
        (with("kind", json!("sms")), 400, "M_INVALID_PARAM"),
        (with("app_id", json!("a".repeat(65))), 400, "M_INVALID_PARAM"),
        (with("pushkey", json!("k".repeat(513))), 400, "M_INVALID_PARAM"),
        (with("append", json!("yes")), 400, "M_INVALID_PARAM"),
        (with("data", json!({})), 400, "M_MISSING_PARAM"),
        (with("data", json!({ "url": "http://127.0.0.1:9/push" })), 400, "M_INVALID_PARAM"),
        (with("data", json!({ "url": "ftp://127.0.0.1/_matrix/push/v1/notify" })), 400, "M_INVALID_PARAM"),
        (with("data", json!({ "url": "not a url" })), 400, "M_INVALID_PARAM"),
        (with("data", json!({ "url": url, "format": "full" })), 400, "M_INVALID_PARAM"),
        // Internal ranges other than the allowed loopback.
        (with("data", json!({ "url": "http://10.1.2.3/_matrix/push/v1/notify" })), 400, "M_INVALID_PARAM"),
        (with("data", json!({ "url": "http://[::1]:9/_matrix/push/v1/notify" })), 400, "M_INVALID_PARAM"),
        (json!(["not", "an", "object"]), 400, "M_BAD_JSON"),
    ];
    for (body, status, errcode) in cases {
        let response = alice.post("/pushers/set", &body).await.unwrap();
        assert_eq!(
            (response.status, response.body["errcode"].as_str()),
            (status, Some(errcode)),
            "{body}: {}",
            response.text
        );
    }
    let email = alice.post("/pushers/set", &with("kind", json!("email"))).await.unwrap();
    assert!(email.body["error"].as_str().unwrap().contains("email"), "{}", email.text);
    assert_eq!(get_ok(&alice, "/pushers").await["pushers"], json!([]), "a refused pusher was stored");
}

async fn each_notification_reaches_the_gateway_once_per_pusher(backend: Backend) {
    let server = start_pushing(backend).await;
    let (gateway, url) = Gateway::start().await;
    let (alice, bob, room) = room_of_three(&server).await;
    alice.send_state(&room, "m.room.name", "", &json!({ "name": "Pushy" })).await.unwrap();
    set_pusher(&alice, &pusher(&url, "full-key", json!({ "brand": "x" }))).await;
    set_pusher(&alice, &pusher(&url, "short-key", json!({ "format": "event_id_only" }))).await;

    alice.send_text(&room, "mine: never pushed to me").await.unwrap();
    let mut sent = Vec::new();
    for i in 0..4 {
        sent.push(bob.send_text(&room, &format!("message {i}")).await.unwrap());
    }
    let mention =
        json!({ "msgtype": "m.text", "body": "alice!", "m.mentions": { "user_ids": [alice.user_id] } });
    sent.push(bob.send_event(&room, "m.room.message", &mention).await.unwrap());
    let received = gateway.until("ten notifications", |received| deliveries(received).len() >= 10).await;
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = if gateway.received().len() > received.len() { gateway.received() } else { received };
    let mut expected: Vec<(String, String)> = Vec::new();
    for key in ["full-key", "short-key"] {
        expected.extend(sent.iter().map(|event| (event.clone(), key.to_owned())));
    }
    let mut got = deliveries(&received);
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "exactly one per (event, pusher)");
    // Each pusher's in the order sent.
    for key in ["full-key", "short-key"] {
        let order: Vec<String> =
            deliveries(&received).into_iter().filter(|(_, k)| k == key).map(|(event, _)| event).collect();
        assert_eq!(order, sent, "{key}'s order");
    }

    let full: Vec<&Value> = received.iter().filter(|n| n["devices"][0]["pushkey"] == "full-key").collect();
    let first = full[0];
    assert_eq!(
        (&first["room_id"], &first["type"], &first["sender"]),
        (&json!(room), &json!("m.room.message"), &json!(bob.user_id))
    );
    assert_eq!(first["content"]["body"], "message 0");
    assert_eq!(first["room_name"], "Pushy");
    assert_eq!(first["sender_display_name"], "bob");
    assert_eq!(first["counts"]["unread"], 1, "one room with unread notifications: {first}");
    let device = &first["devices"][0];
    assert_eq!(
        (&device["app_id"], &device["data"]),
        (&json!("org.example.app"), &json!({ "brand": "x" })),
        "{first}"
    );
    assert!(device["pushkey_ts"].as_i64().unwrap() > 1_700_000_000, "{first}");
    assert_eq!(first["prio"], "low", "a plain message in a group makes no sound: {first}");
    let last = full.last().unwrap();
    assert_eq!(last["devices"][0]["tweaks"]["highlight"], true, "{last}");
    assert_eq!(last["prio"], "high");

    let short: Vec<&Value> = received.iter().filter(|n| n["devices"][0]["pushkey"] == "short-key").collect();
    let mut fields: Vec<&str> = short[0].as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["counts", "devices", "event_id", "prio", "room_id"], "event_id_only: {}", short[0]);
}

async fn a_failing_gateway_gets_every_notification_once_it_recovers(backend: Backend) {
    let server = start_pushing(backend).await;
    let (gateway, url) = Gateway::start().await;
    let (alice, bob, room) = room_of_three(&server).await;
    set_pusher(&alice, &pusher(&url, "key", json!({}))).await;
    gateway.failing.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(bob.send_text(&room, &format!("during the outage {i}")).await.unwrap());
    }
    let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
    while gateway.failures.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the gateway was not tried again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.failing.store(false, Ordering::SeqCst);
    sent.push(bob.send_text(&room, "after the outage").await.unwrap());
    let received = gateway.until("every notification", |received| received.len() >= 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gateway.received().len(), received.len(), "more came: {:#?}", gateway.received());
    let events: Vec<String> = deliveries(&received).into_iter().map(|(event, _)| event).collect();
    assert_eq!(events, sent, "each once, in order");
}

async fn a_rejected_pushkey_drops_its_pusher(backend: Backend) {
    let server = start_pushing(backend).await;
    let (gateway, url) = Gateway::start().await;
    let (alice, bob, room) = room_of_three(&server).await;
    set_pusher(&alice, &pusher(&url, "stale", json!({}))).await;
    set_pusher(&alice, &pusher(&url, "fresh", json!({}))).await;
    gateway.rejecting.lock().unwrap().insert("stale".to_owned());
    bob.send_text(&room, "hello").await.unwrap();
    gateway.until("both pushers tried", |received| received.len() >= 2).await;
    let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
    loop {
        let keys: Vec<Value> = get_ok(&alice, "/pushers").await["pushers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["pushkey"].clone())
            .collect();
        if keys == [json!("fresh")] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "pushers left: {keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bob.send_text(&room, "again").await.unwrap();
    let received = gateway.until("the fresh pusher's second", |received| received.len() >= 3).await;
    assert_eq!(received[2]["devices"][0]["pushkey"], "fresh");
}

/// Users whose pushers land on both of two pusher workers (by the same stable hash).
fn users_on_both_shards(count: usize) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut shards = [0, 0];
    for n in 0.. {
        let name = format!("user{n}");
        let shard = ganglion_types::shard_of(&format!("@{name}:localhost"), 2);
        if shards[shard] < count / 2 {
            shards[shard] += 1;
            names.push(name);
        }
        if names.len() == count {
            break;
        }
    }
    names
}

/// The judged run: a cluster with two pusher workers, each killed with SIGKILL during a
/// burst and started again. Killed while the gateway answers 500, every (event, pusher) arrives
/// exactly once. Killed while notifications are going through, nothing is lost, and at most the
/// one notification each of the killed worker's pushers had in flight (taken by the gateway, its
/// position not yet written) arrives twice: no delivery to an outside server can be undone.
#[tokio::test]
async fn cluster_pushers_killed_mid_burst_lose_nothing() {
    crate::run(async {
        let mut server = start_pushing(Backend::Cluster).await;
        let (gateway, url) = Gateway::start().await;
        let names = users_on_both_shards(6);
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let users = crate::register_all(&server, &name_refs).await;
        let sender = server.register("sender", PASSWORD).await.unwrap();
        let room = sender.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
        for (n, user) in users.iter().enumerate() {
            user.join(&room).await.unwrap();
            set_pusher(user, &pusher(&url, &format!("key-{n}"), json!({}))).await;
        }
        let keys: Vec<String> = (0..users.len()).map(|n| format!("key-{n}")).collect();
        let burst = 20;

        // Killed while the gateway fails: nothing it took is lost or repeated.
        let mut first = Vec::new();
        for i in 0..burst {
            first.push(sender.send_text(&room, &format!("first burst {i}")).await.unwrap());
            if i == 5 {
                gateway.failing.store(true, Ordering::SeqCst);
                let failures = gateway.failures.load(Ordering::SeqCst);
                let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
                while gateway.failures.load(Ordering::SeqCst) < failures + 2 {
                    assert!(tokio::time::Instant::now() < deadline, "the pushers stopped trying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                server.cluster().unwrap().kill("pusher1");
            }
            if i == 12 {
                server.cluster().unwrap().start_instance("pusher1").await.unwrap();
                gateway.failing.store(false, Ordering::SeqCst);
            }
        }
        let counts = delivered_until(&gateway, &first, &keys).await;
        let twice: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
        assert!(twice.is_empty(), "delivered more than once: {twice:?}");

        // Killed while notifications go through: nothing lost.
        let mut second = Vec::new();
        for i in 0..burst {
            second.push(sender.send_text(&room, &format!("second burst {i}")).await.unwrap());
            if i == 5 {
                server.cluster().unwrap().kill("pusher2");
            }
            if i == 12 {
                server.cluster().unwrap().start_instance("pusher2").await.unwrap();
            }
        }
        let counts = delivered_until(&gateway, &second, &keys).await;
        let mut repeated_per_key: BTreeMap<&str, usize> = BTreeMap::new();
        for ((_, key), count) in &counts {
            assert!(*count <= 2, "{key} got one notification {count} times");
            if *count == 2 {
                *repeated_per_key.entry(key.as_str()).or_default() += 1;
            }
        }
        assert!(
            repeated_per_key.values().all(|repeats| *repeats <= 1),
            "more than the one in flight repeated: {repeated_per_key:?}"
        );

        // pusher2 taken out of instance_map and stopped: after SIGHUP, pusher1 serves every user.
        let cluster = server.cluster().unwrap();
        cluster.remove_from_config("pusher2").unwrap();
        cluster.kill("pusher2");
        cluster.hangup("pusher1").unwrap();
        ganglion_testkit::eventually(Duration::from_secs(10), "pusher1's reload", || async {
            Ok(cluster.stderr_log("pusher1").contains("pushes for changed").then_some(()))
        })
        .await
        .unwrap();
        let mut third = Vec::new();
        for i in 0..5 {
            third.push(sender.send_text(&room, &format!("one pusher left {i}")).await.unwrap());
        }
        let counts = delivered_until(&gateway, &third, &keys).await;
        assert!(counts.values().all(|count| *count == 1), "{counts:?}");

        // pusher1 counted what it sent since its restart (the third burst's 30 at least); the
        // master, with pushers in its instance_map, pushed nothing.
        let cluster = server.cluster().unwrap();
        let sent = pushes(cluster, "pusher1", "sent").await;
        assert!(sent >= 30.0, "pushes sent: {sent}");
        assert_eq!(pushes(cluster, "master", "sent").await, 0.0);
    })
    .await
}

/// Waits until every (event, key) arrived; how often each did.
async fn delivered_until(
    gateway: &Gateway,
    events: &[String],
    keys: &[String],
) -> BTreeMap<(String, String), usize> {
    let wanted: HashSet<(String, String)> =
        events.iter().flat_map(|event| keys.iter().map(move |key| (event.clone(), key.clone()))).collect();
    gateway
        .until("every notification of the burst", |received| {
            let got: HashSet<(String, String)> = deliveries(received).into_iter().collect();
            wanted.is_subset(&got)
        })
        .await;
    // Anything sent twice has arrived by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut counts = BTreeMap::new();
    for delivery in deliveries(&gateway.received()) {
        if wanted.contains(&delivery) {
            *counts.entry(delivery).or_default() += 1;
        }
    }
    counts
}

/// `ganglion_pushes_total{result}` of a cluster process (0 if it never pushed since it started).
async fn pushes(cluster: &ganglion_testkit::Cluster, name: &str, result: &str) -> f64 {
    let url = format!("{}/metrics", cluster.metrics_url_of(name));
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let line = format!("ganglion_pushes_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {line} in {name}'s metrics:\n{text}"))
}

/// A cluster without pusher workers: the master pushes (and counts what it sent).
#[tokio::test]
async fn cluster_without_pushers_has_the_master_push() {
    crate::run(async {
        let options = ServerOptions {
            extra_toml: "[push]\nallowed_address_ranges = [\"127.0.0.0/8\"]\n".to_owned(),
            ..ServerOptions::default()
        };
        let mut server = TestServer::start(Backend::Cluster, options).await.unwrap();
        let (gateway, url) = Gateway::start().await;
        let (alice, bob, room) = room_of_three(&server).await;
        set_pusher(&alice, &pusher(&url, "key", json!({}))).await;
        let event = bob.send_text(&room, "pushed by the master").await.unwrap();
        let received = gateway.until("the notification", |received| !received.is_empty()).await;
        assert_eq!(received[0]["event_id"], event.as_str());
        let cluster = server.cluster().unwrap();
        assert!(pushes(cluster, "master", "sent").await >= 1.0);
    })
    .await
}

/// The badge (`counts.unread`) counts rooms with an unread notification: a second room raises
/// it, a read receipt and leaving a room lower it (the pusher keeps badges between rounds).
async fn the_badge_counts_unread_rooms_through_receipts_and_leaves(backend: Backend) {
    let server = start_pushing(backend).await;
    let (gateway, url) = Gateway::start().await;
    let (alice, bob, first) = room_of_three(&server).await;
    let second = bob.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    alice.join(&second).await.unwrap();
    // A third member, so the one-to-one rule does not apply there either.
    let dave = crate::register_all(&server, &["dave"]).await.remove(0);
    dave.join(&second).await.unwrap();
    set_pusher(&alice, &pusher(&url, "key", json!({}))).await;

    let badge_of = |received: &[Value], event: &str| {
        let notification = received.iter().find(|n| n["event_id"] == event);
        notification.map(|n| n["counts"]["unread"].clone())
    };
    let pushed = |event: String| {
        let gateway = gateway.clone();
        async move {
            let received = gateway.until("the push", |received| badge_of(received, &event).is_some()).await;
            badge_of(&received, &event).unwrap()
        }
    };
    let one = bob.send_text(&first, "one").await.unwrap();
    assert_eq!(pushed(one.clone()).await, 1, "the first room");
    let two = bob.send_text(&second, "two").await.unwrap();
    assert_eq!(pushed(two.clone()).await, 2, "both rooms");
    let path =
        format!("/rooms/{}/receipt/m.read/{}", ganglion_testkit::enc(&first), ganglion_testkit::enc(&one));
    alice.post(&path, &json!({})).await.unwrap().ok();
    let three = bob.send_text(&second, "three").await.unwrap();
    assert_eq!(pushed(three).await, 1, "the first room is read");
    let four = bob.send_text(&first, "four").await.unwrap();
    assert_eq!(pushed(four).await, 2, "the first room is unread again");
    alice.post(&format!("/rooms/{}/leave", ganglion_testkit::enc(&second)), &json!({})).await.unwrap().ok();
    let five = bob.send_text(&first, "five").await.unwrap();
    assert_eq!(pushed(five).await, 1, "the room left does not count");
    // An invite is pushed as one: the invited user is its target, and the room is not joined.
    let private = bob.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
    bob.invite(&private, &alice.user_id).await.unwrap();
    let received = gateway
        .until("the invite's push", |received| received.iter().any(|n| n["type"] == "m.room.member"))
        .await;
    let invite = received.iter().find(|n| n["type"] == "m.room.member").unwrap();
    assert_eq!((&invite["room_id"], &invite["user_is_target"]), (&json!(private), &json!(true)), "{invite}");
    assert_eq!(invite["content"]["membership"], "invite");
    assert_eq!(invite["counts"]["unread"], 1, "the invite's room is not joined: {invite}");
}
