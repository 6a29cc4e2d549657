//! Crash safety: what the server acknowledged survives `kill -9` and a restart.

use ganglion_testkit::{Backend, enc};
use serde_json::json;

use crate::{PASSWORD, get_ok, message_bodies, register_all, start};

on_all_backends!(acknowledged_writes_survive_kill_and_restart);

async fn acknowledged_writes_survive_kill_and_restart(backend: Backend) {
    let mut server = start(backend).await;
    let [alice, bob] = <[_; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Durable" })).await.unwrap();
    bob.join(&room).await.unwrap();
    for i in 0..5 {
        alice.send_text(&room, &format!("before crash {i}")).await.unwrap();
    }
    let old_pid = server.pid;
    let base_url = server.base_url.clone();

    server.restart().await.unwrap();
    assert_ne!(server.pid, old_pid, "a new process");
    assert_eq!(server.base_url, base_url, "restart keeps the port, so clients keep working");

    // Tokens, rooms, membership and history are all still there.
    let me = get_ok(&alice, "/account/whoami").await;
    assert_eq!(me["user_id"], "@alice:localhost");
    assert_eq!(get_ok(&bob, "/joined_rooms").await["joined_rooms"], json!([room]));
    let name = get_ok(&bob, &format!("/rooms/{}/state/m.room.name/", enc(&room))).await;
    assert_eq!(name["name"], "Durable");
    let page = get_ok(&bob, &format!("/rooms/{}/messages?dir=b&limit=5", enc(&room))).await;
    let chunk: Vec<&serde_json::Value> = page["chunk"].as_array().unwrap().iter().collect();
    let expected: Vec<String> = (0..5).rev().map(|i| format!("before crash {i}")).collect();
    assert_eq!(message_bodies(&chunk), expected);

    // And the restarted server keeps working: new logins and new events.
    server.api().login("bob", PASSWORD).await.unwrap();
    alice.send_text(&room, "after restart").await.unwrap();
    let page = get_ok(&bob, &format!("/rooms/{}/messages?dir=b&limit=1", enc(&room))).await;
    assert_eq!(page["chunk"][0]["content"]["body"], "after restart");
}
