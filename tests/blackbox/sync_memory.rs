//! Incremental syncs answered from memory give the same JSON as the same syncs answered from the
//! database: each token is synced once on the running server (from memory where it can) and
//! once after a restart, when nothing is in memory and every answer reads the database.
//! `X-Ganglion-Sync-Source` tells which it was.

use ganglion_testkit::{Account, Backend, ServerOptions, TestServer, enc};
use serde_json::{Value, json};

use crate::{filter_param, joined_events, message_bodies, register_all};

on_all_backends!(
    memory_and_database_answers_agree,
    operators_see_where_answers_came_from,
    answers_to_a_device_are_spaced_by_the_interval
);

/// Token fields that may differ across a restart: the typing position and its epoch (typing
/// lives in the master's memory and restarts with it).
const TYPING_FIELDS: [usize; 2] = [3, 5];

struct Answer {
    body: Value,
    source: String,
}

async fn sync_once(account: &Account, filter: &str, since: Option<&str>) -> Answer {
    let mut query = vec!["timeout=0".to_owned()];
    query.extend(since.map(|since| format!("since={}", enc(since))));
    if !filter.is_empty() {
        query.push(filter.to_owned());
    }
    let response = account.get(&format!("/sync?{}", query.join("&"))).await.unwrap();
    let source = response
        .headers
        .get("x-ganglion-sync-source")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Answer { body: response.ok(), source }
}

/// The answer without what depends on the clock (`age`) or on the typing epoch.
fn comparable(mut body: Value) -> Value {
    fn strip_age(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("age");
                map.values_mut().for_each(strip_age);
            }
            Value::Array(items) => items.iter_mut().for_each(strip_age),
            _ => {}
        }
    }
    strip_age(&mut body);
    if let Some(token) = body["next_batch"].as_str() {
        let parts: Vec<&str> = token
            .split('_')
            .enumerate()
            .map(|(index, part)| if TYPING_FIELDS.contains(&index) { "*" } else { part })
            .collect();
        body["next_batch"] = json!(parts.join("_"));
    }
    body
}

async fn memory_and_database_answers_agree(backend: Backend) {
    // Presence off: it would write rows of its own across the restart.
    let options = ServerOptions { extra_toml: "[presence]\nenabled = false\n".into(), ..Default::default() };
    let mut server = TestServer::start(backend, options).await.unwrap();
    let [alice, bob, carol] =
        <[Account; 3]>::try_from(register_all(&server, &["alice", "bob", "carol"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Memory" })).await.unwrap();
    bob.join(&room).await.unwrap();
    let quiet = alice.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
    alice.invite(&quiet, &bob.user_id).await.unwrap();
    bob.join(&quiet).await.unwrap();
    let lazy = json!({ "room": { "state": { "lazy_load_members": true }, "timeline": { "limit": 10 } } });
    let filters = [String::new(), filter_param(&lazy)];

    // Bob syncs as a client does: an initial sync, then incremental ones from each answer.
    let mut tokens: Vec<Vec<String>> = vec![Vec::new(); filters.len()];
    for (filter, tokens) in filters.iter().zip(&mut tokens) {
        let initial = sync_once(&bob, filter, None).await;
        tokens.push(initial.body["next_batch"].as_str().unwrap().to_owned());
    }
    // Moves every filter's client on by one sync, returning the answers.
    async fn step(bob: &Account, filters: &[String], tokens: &mut [Vec<String>]) -> Vec<Answer> {
        let mut answers = Vec::new();
        for (filter, tokens) in filters.iter().zip(tokens.iter_mut()) {
            let answer = sync_once(bob, filter, tokens.last().map(String::as_str)).await;
            tokens.push(answer.body["next_batch"].as_str().unwrap().to_owned());
            answers.push(answer);
        }
        answers
    }
    step(&bob, &filters, &mut tokens).await;
    // A first message in each room: a worker of a cluster may still read the room's current
    // state once.
    alice.send_text(&room, "warm-up").await.unwrap();
    alice.send_text(&quiet, "warm-up").await.unwrap();
    step(&bob, &filters, &mut tokens).await;

    // Messages only: the steady state of a long-poller, answered from memory.
    for i in 0..3 {
        alice.send_text(&room, &format!("message {i}")).await.unwrap();
    }
    let message = alice.send_text(&quiet, "in the quiet room").await.unwrap();
    for answer in step(&bob, &filters, &mut tokens).await {
        assert_eq!(answer.source, "memory", "messages only: {}", answer.body);
        let bodies = message_bodies(&joined_events(&answer.body, &room, "timeline"));
        assert_eq!(bodies, ["message 0", "message 1", "message 2"]);
    }

    // A receipt, room account data, a redaction, a member joining, a state change.
    alice
        .post(&format!("/rooms/{}/receipt/m.read/{}", enc(&quiet), enc(&message)), &json!({}))
        .await
        .unwrap()
        .ok();
    step(&bob, &filters, &mut tokens).await;
    let note = format!("/user/{}/rooms/{}/account_data/org.example.note", enc(&bob.user_id), enc(&room));
    bob.put(&note, &json!({ "text": "remember" })).await.unwrap().ok();
    step(&bob, &filters, &mut tokens).await;
    let doomed = alice.send_text(&room, "to be redacted").await.unwrap();
    step(&bob, &filters, &mut tokens).await;
    alice
        .put(&format!("/rooms/{}/redact/{}/r1", enc(&room), enc(&doomed)), &json!({ "reason": "test" }))
        .await
        .unwrap()
        .ok();
    step(&bob, &filters, &mut tokens).await;
    carol.join(&room).await.unwrap();
    carol.send_text(&room, "hello from carol").await.unwrap();
    step(&bob, &filters, &mut tokens).await;
    alice.send_state(&room, "m.room.name", "", &json!({ "name": "Renamed" })).await.unwrap();
    step(&bob, &filters, &mut tokens).await;

    // More events than memory keeps of a room: older tokens go to the database, and once the
    // client has caught up, memory answers again.
    for i in 0..140 {
        alice.send_text(&room, &format!("flood {i}")).await.unwrap();
    }
    step(&bob, &filters, &mut tokens).await;
    alice.send_text(&room, "after the flood").await.unwrap();
    for answer in step(&bob, &filters, &mut tokens).await {
        assert_eq!(answer.source, "memory", "after the flood: {}", answer.body);
    }

    // Every token again, then again after a restart, with nothing written in between.
    let mut before = Vec::new();
    for (filter, tokens) in filters.iter().zip(&tokens) {
        before.push(sync_once(&bob, filter, None).await.body);
        for token in tokens {
            before.push(sync_once(&bob, filter, Some(token)).await.body);
        }
    }
    server.restart().await.unwrap();
    let mut index = 0;
    for (filter, tokens) in filters.iter().zip(&tokens) {
        let initial = sync_once(&bob, filter, None).await;
        assert_eq!(
            comparable(initial.body),
            comparable(before[index].clone()),
            "initial sync, filter {filter:?}"
        );
        index += 1;
        for (position, token) in tokens.iter().enumerate() {
            let answer = sync_once(&bob, filter, Some(token)).await;
            // (The newest token is where the restarted server starts: memory may know it.)
            if position + 1 < tokens.len() {
                assert_eq!(answer.source, "database", "after a restart, memory knows nothing of {token}");
            }
            assert_eq!(
                comparable(answer.body),
                comparable(before[index].clone()),
                "since {token}, filter {filter:?}"
            );
            index += 1;
        }
    }
}

/// The answers of each minute are logged, and `ganglion_storage::lazy=debug` names the read
/// that memory could not answer.
async fn operators_see_where_answers_came_from(backend: Backend) {
    let options = ServerOptions {
        env: vec![("RUST_LOG".into(), "info,ganglion_storage::lazy=debug".into())],
        ..Default::default()
    };
    let server = TestServer::start(backend, options).await.unwrap();
    let [alice] = <[Account; 1]>::try_from(register_all(&server, &["alice"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
    let initial = sync_once(&alice, "", None).await;
    assert_eq!(initial.source, "database", "an initial sync reads the database");
    alice.send_text(&room, "hello").await.unwrap();
    let since = initial.body["next_batch"].as_str().unwrap().to_owned();
    sync_once(&alice, "", Some(&since)).await;
    // The minute's line comes within a minute (bounded: 75 s).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(75);
    loop {
        let log = server.stderr_log();
        if log.contains("sync answers") && log.contains("from_memory") {
            assert!(log.contains("first database read"), "the initial sync's first read is named");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no `sync answers` line: {}", log);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `sync.answer_interval_ms`: a device that polls again right after an answer is held until the
/// interval has passed, and what arrived meanwhile comes in one answer; `timeout=0` is never held.
async fn answers_to_a_device_are_spaced_by_the_interval(backend: Backend) {
    const INTERVAL_MS: u64 = 1_500;
    let options = ServerOptions {
        extra_toml: format!("[sync]\nanswer_interval_ms = {INTERVAL_MS}\n"),
        ..Default::default()
    };
    let server = TestServer::start(backend, options).await.unwrap();
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room).await.unwrap();
    let initial = bob.sync("").await.unwrap();
    alice.send_text(&room, "one").await.unwrap();
    let since = initial["next_batch"].as_str().unwrap();
    let first = bob.sync(&format!("since={}&timeout=10000", enc(since))).await.unwrap();
    let answered = std::time::Instant::now();
    assert_eq!(message_bodies(&joined_events(&first, &room, "timeline")), ["one"]);
    alice.send_text(&room, "two").await.unwrap();
    alice.send_text(&room, "three").await.unwrap();
    let since = first["next_batch"].as_str().unwrap();

    // Not held: a client that asks for an answer at once gets one (again, until a cluster's
    // sync worker has read the second message too).
    let mut at_once = Vec::new();
    for _ in 0..40 {
        let asked = std::time::Instant::now();
        let answer = bob.sync(&format!("since={}&timeout=0", enc(since))).await.unwrap();
        assert!(asked.elapsed().as_millis() < u128::from(INTERVAL_MS), "timeout=0 was held");
        at_once = message_bodies(&joined_events(&answer, &room, "timeline"));
        if at_once.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(at_once, ["two", "three"]);

    // Held: the long-poll waits out the interval, then both messages come in one answer.
    let held = bob.sync(&format!("since={}&timeout=10000", enc(since))).await.unwrap();
    let waited = answered.elapsed().as_millis();
    assert!(waited >= u128::from(INTERVAL_MS), "answered {waited} ms after the last answer");
    assert_eq!(message_bodies(&joined_events(&held, &room, "timeline")), ["two", "three"]);
}
