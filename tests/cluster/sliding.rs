//! Sliding sync across sync workers: nginx keeps a client's connection on one worker, and a
//! client whose requests reach another worker (a worker restarted, or the load balancer moved
//! it) is told `M_UNKNOWN_POS` and rebuilds its connection there, never answered from another
//! worker's guess of what it holds.

use std::time::Duration;

use ganglion_testkit::{Account, Api, Cluster, ServerOptions, enc, eventually};
use serde_json::{Value, json};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

fn via(cluster: &Cluster, name: &str, account: &Account) -> Account {
    Account::new(Api::new(cluster.url_of(name)), &account.user_id, &account.access_token, &account.device_id)
}

fn list() -> Value {
    json!({ "conn_id": "room-list", "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 5 } } })
}

/// A fresh connection's answer once it shows `room` with `body` in its timeline.
async fn first_answer_with(account: &Account, room: &str, body: &str) -> anyhow::Result<Value> {
    let (room, body) = (room.to_owned(), body.to_owned());
    eventually(Duration::from_secs(30), "the worker shows the message", || {
        let (account, room, body) = (account.clone(), room.clone(), body.clone());
        async move {
            let answer = account.post(PATH, &list()).await?.ok();
            let shown = answer["rooms"][&room]["timeline"]
                .as_array()
                .is_some_and(|events| events.iter().any(|event| event["content"]["body"] == body.as_str()));
            Ok(shown.then_some(answer))
        }
    })
    .await
}

fn pos_of(answer: &Value) -> String {
    answer["pos"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_connection_moved_to_another_worker_starts_over() {
    crate::run(async {
        let mut cluster = Cluster::start(ServerOptions::default()).await?;
        let alice = Api::new(cluster.base_url()).register("alice", "password-alice").await?;
        let room = alice.create_room(&json!({ "name": "Moving" })).await?;
        alice.send_text(&room, "first").await?;

        // Through nginx every request of one access token reaches the same sync worker, so a
        // connection's `pos` keeps working.
        let first = first_answer_with(&alice, &room, "first").await?;
        let mut pos = pos_of(&first);
        for _ in 0..5 {
            let answer = alice.post(&format!("{PATH}?timeout=0&pos={}", enc(&pos)), &list()).await?.ok();
            pos = pos_of(&answer);
        }

        // The same connection's `pos` on the other worker: unknown there.
        let on_sync1 = via(&cluster, "sync1", &alice);
        let on_sync2 = via(&cluster, "sync2", &alice);
        let answer = first_answer_with(&on_sync1, &room, "first").await?;
        let sync1_pos = pos_of(&answer);
        on_sync2.post(&format!("{PATH}?pos={}", enc(&sync1_pos)), &list()).await?.err(400, "M_UNKNOWN_POS");
        // Starting over there gives the room whole.
        let rebuilt = first_answer_with(&on_sync2, &room, "first").await?;
        assert_eq!(rebuilt["rooms"][&room]["initial"], true);
        assert_eq!(rebuilt["rooms"][&room]["name"], "Moving");

        // A restarted worker knows none of its earlier connections.
        cluster.restart("sync1").await?;
        let on_sync1 = via(&cluster, "sync1", &alice);
        on_sync1.post(&format!("{PATH}?pos={}", enc(&sync1_pos)), &list()).await?.err(400, "M_UNKNOWN_POS");
        alice.send_text(&room, "after the restart").await?;
        let rebuilt = first_answer_with(&on_sync1, &room, "after the restart").await?;
        assert_eq!(rebuilt["rooms"][&room]["initial"], true);
        Ok(())
    })
    .await
}
