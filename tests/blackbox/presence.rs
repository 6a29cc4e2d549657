//! Presence: `GET`/`PUT /presence/{userId}/status`, `/sync`'s `set_presence` and `presence`
//! section, the idle and offline timeouts, and presence switched off.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ganglion_testkit::{Account, Backend, ServerOptions, TestServer, enc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{events_of, filter_param, get_ok, initial_since, register_all, start, sync_until};

on_all_backends!(
    own_status_round_trips,
    a_room_mate_sees_changes_and_its_long_poll_wakes,
    strangers_may_not_see_presence,
    set_presence_on_sync_sets_or_keeps_presence,
    bad_input_gets_the_right_errcode,
    presence_switched_off_stores_and_sends_nothing,
    idle_and_offline_timeouts_apply_unless_syncing,
);

fn status_path(user_id: &str) -> String {
    format!("/presence/{}/status", enc(user_id))
}

async fn put_status(account: &Account, body: Value) {
    assert_eq!(account.put(&status_path(&account.user_id), &body).await.unwrap().ok(), json!({}));
}

/// The `m.presence` events of a sync response.
fn presence_events(sync: &Value) -> Vec<&Value> {
    events_of(&sync["presence"])
}

/// The content of `user_id`'s presence event in a sync response, if any.
fn presence_of<'a>(sync: &'a Value, user_id: &str) -> Option<&'a Value> {
    presence_events(sync).into_iter().rev().find(|event| event["sender"] == user_id).map(|event| {
        assert_eq!(event["type"], "m.presence", "{event}");
        &event["content"]
    })
}

/// alice and bob in a public room alice created.
async fn alice_and_bob(server: &TestServer) -> (Account, Account, String) {
    let [alice, bob] = <[Account; 2]>::try_from(register_all(server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room).await.unwrap();
    (alice, bob, room)
}

/// Long-polls as `observer` until it sees `user_id` with `state`; the content seen.
async fn wait_for_state(observer: &Account, since: &mut String, user_id: &str, state: &str) -> Value {
    let seen = sync_until(observer, since, "", |sync| {
        presence_of(sync, user_id).is_some_and(|content| content["presence"] == state)
    })
    .await;
    presence_of(seen.last().unwrap(), user_id).unwrap().clone()
}

async fn own_status_round_trips(backend: Backend) {
    let server = start(backend).await;
    let [alice] = <[Account; 1]>::try_from(register_all(&server, &["alice"]).await).unwrap();
    let path = status_path(&alice.user_id);
    // Never seen: offline, and never active.
    assert_eq!(get_ok(&alice, &path).await, json!({ "presence": "offline" }));

    put_status(&alice, json!({ "presence": "online", "status_msg": "Making tea" })).await;
    let status = get_ok(&alice, &path).await;
    assert_eq!((&status["presence"], &status["status_msg"]), (&json!("online"), &json!("Making tea")));
    assert_eq!(status["currently_active"], true, "{status}");
    let ago = status["last_active_ago"].as_i64().expect("last_active_ago");
    assert!((0..30_000).contains(&ago), "{status}");

    // Without `status_msg` the message is cleared; `currently_active` is only said while online.
    put_status(&alice, json!({ "presence": "unavailable" })).await;
    let status = get_ok(&alice, &path).await;
    assert_eq!(status["presence"], "unavailable", "{status}");
    assert!(status.get("status_msg").is_none() && status.get("currently_active").is_none(), "{status}");
    // The r0 path is the same endpoint.
    let r0 = format!("/_matrix/client/r0/presence/{}/status", enc(&alice.user_id));
    assert_eq!(get_ok(&alice, &r0).await["presence"], "unavailable");

    put_status(&alice, json!({ "presence": "offline", "status_msg": "On holiday" })).await;
    let status = get_ok(&alice, &path).await;
    assert_eq!((&status["presence"], &status["status_msg"]), (&json!("offline"), &json!("On holiday")));
    // The user's own sync shows it too.
    let sync = alice.sync("").await.unwrap();
    let own = presence_of(&sync, &alice.user_id).expect("own presence in an initial sync");
    assert_eq!(own["presence"], "online", "the sync itself brings alice online: {own}");
    assert_eq!(own["status_msg"], "On holiday", "a sync keeps the status message: {own}");
}

async fn a_room_mate_sees_changes_and_its_long_poll_wakes(backend: Backend) {
    let server = start(backend).await;
    let (alice, bob, _room) = alice_and_bob(&server).await;
    let since = initial_since(&bob, "").await;

    let poller = bob.clone();
    let mut poll =
        tokio::spawn(
            async move { poller.sync(&format!("since={}&timeout=30000", enc(&since))).await.unwrap() },
        );
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut poll).await.is_err(),
        "the long-poll returned although nothing happened"
    );
    let put_at = Instant::now();
    put_status(&alice, json!({ "presence": "online", "status_msg": "Hello" })).await;
    let sync = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the long-poll did not wake for alice's presence")
        .unwrap();
    assert!(put_at.elapsed() < Duration::from_secs(5), "woke {:?} after the PUT", put_at.elapsed());
    let content =
        presence_of(&sync, &alice.user_id).unwrap_or_else(|| panic!("no presence of alice: {sync}"));
    assert_eq!((&content["presence"], &content["status_msg"]), (&json!("online"), &json!("Hello")));
    assert_eq!(content["currently_active"], true);
    assert!(content["last_active_ago"].as_i64().is_some_and(|ago| ago >= 0), "{content}");
    // bob may read it directly too.
    assert_eq!(get_ok(&bob, &status_path(&alice.user_id)).await["status_msg"], "Hello");

    // An initial sync has the current presence of both.
    let initial = bob.sync("").await.unwrap();
    assert_eq!(presence_of(&initial, &alice.user_id).unwrap()["presence"], "online");
    assert_eq!(presence_of(&initial, &bob.user_id).unwrap()["presence"], "online");
    // The filter's presence section applies.
    let none = json!({ "presence": { "not_types": ["m.presence"] } });
    let sync = bob.sync(&filter_param(&none)).await.unwrap();
    assert!(presence_events(&sync).is_empty(), "{sync}");
    let not_alice = json!({ "presence": { "not_senders": [alice.user_id] } });
    let sync = bob.sync(&filter_param(&not_alice)).await.unwrap();
    assert!(presence_of(&sync, &alice.user_id).is_none() && presence_of(&sync, &bob.user_id).is_some());
    let one = json!({ "presence": { "limit": 1 } });
    assert_eq!(presence_events(&bob.sync(&filter_param(&one)).await.unwrap()).len(), 1);
}

async fn strangers_may_not_see_presence(backend: Backend) {
    let server = start(backend).await;
    let (alice, bob, room) = alice_and_bob(&server).await;
    let [carol] = <[Account; 1]>::try_from(register_all(&server, &["carol"]).await).unwrap();
    put_status(&alice, json!({ "presence": "online" })).await;

    let response = carol.get(&status_path(&alice.user_id)).await.unwrap();
    response.err(403, "M_FORBIDDEN");
    let nobody = format!("@nobody:{}", server.server_name);
    carol.get(&status_path(&nobody)).await.unwrap().err(403, "M_FORBIDDEN");
    carol.get(&status_path("not-a-user-id")).await.unwrap().err(400, "M_INVALID_PARAM");
    let response = carol.put(&status_path(&alice.user_id), &json!({ "presence": "offline" })).await.unwrap();
    response.err(403, "M_FORBIDDEN");
    // carol's syncs show nothing of alice.
    let sync = carol.sync("").await.unwrap();
    assert!(presence_of(&sync, &alice.user_id).is_none(), "{sync}");
    let mut since = sync["next_batch"].as_str().unwrap().to_owned();

    // Once carol joins, she may, and the sync that shows the room brings alice's presence.
    carol.join(&room).await.unwrap();
    assert_eq!(get_ok(&carol, &status_path(&alice.user_id)).await["presence"], "online");
    let seen = sync_until(&carol, &mut since, "", |sync| !sync["rooms"]["join"][&room].is_null()).await;
    let content = seen.iter().find_map(|sync| presence_of(sync, &alice.user_id));
    assert_eq!(content.map(|content| &content["presence"]), Some(&json!("online")), "{seen:?}");
    // Once bob leaves, he may not.
    bob.post(&format!("/rooms/{}/leave", enc(&room)), &json!({})).await.unwrap().ok();
    bob.get(&status_path(&alice.user_id)).await.unwrap().err(403, "M_FORBIDDEN");
}

async fn set_presence_on_sync_sets_or_keeps_presence(backend: Backend) {
    let server = start(backend).await;
    let (alice, bob, _room) = alice_and_bob(&server).await;
    let mut since = initial_since(&bob, "").await;

    alice.sync("set_presence=unavailable").await.unwrap();
    let content = wait_for_state(&bob, &mut since, &alice.user_id, "unavailable").await;
    assert!(content.get("currently_active").is_none(), "{content}");
    // `offline` on a sync leaves presence as it is.
    alice.sync("set_presence=offline").await.unwrap();
    assert_eq!(get_ok(&bob, &status_path(&alice.user_id)).await["presence"], "unavailable");
    // The default is online.
    alice.sync("timeout=0").await.unwrap();
    let content = wait_for_state(&bob, &mut since, &alice.user_id, "online").await;
    assert_eq!(content["currently_active"], true);
    assert_eq!(get_ok(&alice, &status_path(&alice.user_id)).await["presence"], "online");
}

async fn bad_input_gets_the_right_errcode(backend: Backend) {
    let server = start(backend).await;
    let [alice] = <[Account; 1]>::try_from(register_all(&server, &["alice"]).await).unwrap();
    let path = status_path(&alice.user_id);
    for (body, status, errcode) in [
        (json!({ "presence": "busy" }), 400, "M_INVALID_PARAM"),
        (json!({}), 400, "M_BAD_JSON"),
        (json!({ "presence": 1 }), 400, "M_BAD_JSON"),
        (json!({ "presence": "online", "status_msg": 5 }), 400, "M_BAD_JSON"),
        (json!({ "presence": "online", "status_msg": null }), 400, "M_BAD_JSON"),
        (json!({ "presence": "online", "last_active_ago": 5 }), 400, "M_BAD_JSON"),
        (json!(["online"]), 400, "M_BAD_JSON"),
    ] {
        let response = alice.put(&path, &body).await.unwrap();
        assert_eq!(
            (response.status, response.errcode()),
            (status, Some(errcode)),
            "{body}: {}",
            response.text
        );
    }
    let token = Some(alice.access_token.as_str());
    let not_json = Some(b"not json".to_vec());
    let response =
        server.api().raw(Method::PUT, &path, token, Some("application/json"), not_json).await.unwrap();
    response.err(400, "M_NOT_JSON");
    server.api().get(&path, None).await.unwrap().err(401, "M_MISSING_TOKEN");
    let response = alice.get("/sync?set_presence=busy").await.unwrap();
    response.err(400, "M_INVALID_PARAM");
    // Nothing was set.
    assert_eq!(get_ok(&alice, &path).await, json!({ "presence": "offline" }));
}

async fn presence_switched_off_stores_and_sends_nothing(backend: Backend) {
    let options = ServerOptions {
        env: vec![("GANGLION_PRESENCE__ENABLED".to_owned(), "false".to_owned())],
        ..ServerOptions::default()
    };
    let server = TestServer::start(backend, options).await.unwrap();
    let (alice, bob, room) = alice_and_bob(&server).await;
    let [carol] = <[Account; 1]>::try_from(register_all(&server, &["carol"]).await).unwrap();
    let mut since = initial_since(&bob, "").await;

    put_status(&alice, json!({ "presence": "online", "status_msg": "Hello" })).await;
    alice.sync("").await.unwrap();
    for reader in [&alice, &bob, &carol] {
        assert_eq!(get_ok(reader, &status_path(&alice.user_id)).await, json!({ "presence": "offline" }));
    }
    // Bad input is still refused.
    alice
        .put(&status_path(&alice.user_id), &json!({ "presence": "busy" }))
        .await
        .unwrap()
        .err(400, "M_INVALID_PARAM");
    // A message shows the long-poll ran past the PUT and the sync; no presence came with it.
    alice.send_text(&room, "after").await.unwrap();
    let seen = sync_until(&bob, &mut since, "", |sync| {
        !events_of(&sync["rooms"]["join"][&room]["timeline"]).is_empty()
    })
    .await;
    for sync in seen.iter().chain([&bob.sync("").await.unwrap(), &alice.sync("").await.unwrap()]) {
        assert!(presence_events(sync).is_empty(), "{sync}");
    }
}

async fn idle_and_offline_timeouts_apply_unless_syncing(backend: Backend) {
    let options = ServerOptions {
        extra_toml: "[presence]\nidle_timeout_ms = 1500\noffline_timeout_ms = 3000\n".to_owned(),
        ..ServerOptions::default()
    };
    let server = TestServer::start(backend, options).await.unwrap();
    let (alice, bob, _room) = alice_and_bob(&server).await;
    let mut since = initial_since(&bob, "").await;

    // Set online by PUT, then nothing: idle, then offline.
    put_status(&alice, json!({ "presence": "online", "status_msg": "brb" })).await;
    wait_for_state(&bob, &mut since, &alice.user_id, "online").await;
    let idle_at = Instant::now();
    wait_for_state(&bob, &mut since, &alice.user_id, "unavailable").await;
    let offline = wait_for_state(&bob, &mut since, &alice.user_id, "offline").await;
    assert!(idle_at.elapsed() >= Duration::from_millis(1500), "offline after {:?}", idle_at.elapsed());
    assert_eq!(offline["status_msg"], "brb", "going offline keeps the status message");

    // Long-polls longer than the offline timeout keep alice online and active.
    let stop = Arc::new(AtomicBool::new(false));
    let syncer = {
        let (alice, stop) = (alice.clone(), stop.clone());
        tokio::spawn(async move {
            let mut since = initial_since(&alice, "").await;
            while !stop.load(Ordering::Relaxed) {
                let sync = alice.sync(&format!("since={}&timeout=4000", enc(&since))).await.unwrap();
                since = sync["next_batch"].as_str().unwrap().to_owned();
            }
        })
    };
    wait_for_state(&bob, &mut since, &alice.user_id, "online").await;
    let watch_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < watch_until {
        let sync = bob.sync(&format!("since={}&timeout=1000", enc(&since))).await.unwrap();
        since = sync["next_batch"].as_str().unwrap().to_owned();
        if let Some(content) = presence_of(&sync, &alice.user_id) {
            assert_eq!(
                (&content["presence"], &content["currently_active"]),
                (&json!("online"), &json!(true))
            );
        }
    }
    // alice stops syncing: offline within the timeouts.
    stop.store(true, Ordering::Relaxed);
    syncer.await.unwrap();
    let stopped_at = Instant::now();
    wait_for_state(&bob, &mut since, &alice.user_id, "offline").await;
    assert!(stopped_at.elapsed() < Duration::from_secs(20), "offline only after {:?}", stopped_at.elapsed());
}
