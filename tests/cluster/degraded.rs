//! The cluster with a part missing: the master down (writes answer 503, reads keep working, and
//! everything recovers by itself), Redis down (workers poll the database; invalidations still
//! take effect), and logout on one worker ending the session on every worker.

use std::time::Duration;

use ganglion_testkit::{Account, Api, Cluster, ServerOptions, enc, eventually};
use serde_json::json;

/// `account` as seen through one process directly.
fn via(cluster: &Cluster, name: &str, account: &Account) -> Account {
    Account::new(Api::new(cluster.url_of(name)), &account.user_id, &account.access_token, &account.device_id)
}

#[tokio::test]
async fn master_down_answers_503_and_recovers() {
    crate::run(async {
        let mut cluster = Cluster::start(ServerOptions::default()).await?;
        let alice = Api::new(cluster.base_url()).register("alice", "password-alice").await?;
        let room = alice.create_room(&json!({})).await?;
        alice.send_text(&room, "before").await?;

        cluster.kill("master");
        let path = format!("/rooms/{}/send/m.room.message/while-down", enc(&room));
        let refused = alice.put(&path, &json!({"msgtype": "m.text", "body": "while down"})).await?;
        refused.err(503, "M_UNKNOWN");
        // Reads need only the database.
        let joined = alice.get("/joined_rooms").await?.ok();
        assert_eq!(joined["joined_rooms"], json!([room]));
        let sync = alice.sync("timeout=0").await?;
        assert!(sync["rooms"]["join"][&room].is_object());

        cluster.start_instance("master").await?;
        // The same transaction id now succeeds, once.
        let sent = eventually(Duration::from_secs(30), "the send succeeds once the master is back", || {
            let (alice, path) = (alice.clone(), path.clone());
            async move {
                let response = alice.put(&path, &json!({"msgtype": "m.text", "body": "while down"})).await?;
                Ok((response.status == 200)
                    .then(|| response.body["event_id"].as_str().unwrap_or("").to_owned()))
            }
        })
        .await?;
        let again = alice.put(&path, &json!({"msgtype": "m.text", "body": "while down"})).await?.ok();
        assert_eq!(again["event_id"], json!(sent), "a retried transaction made a second event");
        let page = alice.get(&format!("/rooms/{}/messages?dir=b&limit=10", enc(&room))).await?.ok();
        let bodies: Vec<&str> = page["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.room.message")
            .filter_map(|e| e["content"]["body"].as_str())
            .collect();
        assert_eq!(bodies, ["while down", "before"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn logout_ends_the_session_on_every_worker_with_or_without_redis() {
    crate::run(async {
        let mut cluster = Cluster::start(ServerOptions::default()).await?;
        let api = Api::new(cluster.base_url());
        api.register("bob", "password-bob").await?;
        for redis_up in [true, false] {
            if !redis_up {
                cluster.redis().stop()?;
            }
            let session = api.login("bob", "password-bob").await?;
            // Every worker has the session cached.
            for name in ["reader1", "reader2", "sync1", "sync2"] {
                let account = via(&cluster, name, &session);
                let path = if name.starts_with("sync") { "/sync?timeout=0" } else { "/account/whoami" };
                let response = account.get(path).await?;
                assert_eq!(response.status, 200, "{name}: {}", response.text);
            }
            via(&cluster, "reader1", &session).post("/logout", &json!({})).await?.ok();
            for name in ["reader2", "sync1", "sync2"] {
                let account = via(&cluster, name, &session);
                let path = if name.starts_with("sync") { "/sync?timeout=0" } else { "/account/whoami" };
                eventually(Duration::from_secs(5), "the logout reaches every worker", || {
                    let account = account.clone();
                    async move {
                        let response = account.get(path).await?;
                        Ok((response.status == 401 && response.errcode() == Some("M_UNKNOWN_TOKEN"))
                            .then_some(()))
                    }
                })
                .await
                .map_err(|e| e.context(format!("{name}, redis up: {redis_up}")))?;
            }
        }
        cluster.redis().start_again()?;
        Ok(())
    })
    .await
}

/// Lines of `log` at WARN level or above that mention Redis.
fn redis_warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| (line.contains(" WARN ") || line.contains(" ERROR ")) && line.contains("Redis"))
        .collect()
}

#[tokio::test]
async fn a_redis_outage_is_logged_once_and_summarised_when_it_ends() {
    crate::run(async {
        let mut cluster = Cluster::start(ServerOptions::default()).await?;
        let alice = Api::new(cluster.base_url()).register("alice", "password-alice").await?;
        let room = alice.create_room(&json!({})).await?;
        let names = cluster.instance_names();
        let before: Vec<usize> =
            names.iter().map(|name| redis_warnings(&cluster.stderr_log(name)).len()).collect();

        cluster.redis().stop()?;
        // Keep writing while Redis is down, for several of the old 500 ms retry periods.
        for i in 0..30 {
            alice.send_text(&room, &format!("while Redis is down {i}")).await?;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        cluster.redis().start_again()?;
        let mut since = alice.sync("timeout=0").await?["next_batch"].as_str().unwrap_or_default().to_owned();
        eventually(Duration::from_secs(30), "every process logs that Redis is back", || {
            let (alice, room) = (alice.clone(), room.clone());
            let logs: Vec<String> = names.iter().map(|name| cluster.stderr_log(name)).collect();
            let since_now = since.clone();
            async move {
                // Writes after the outage make the master publish (and so notice Redis is back).
                alice.send_text(&room, "after the outage").await?;
                let _ = alice.sync(&format!("since={since_now}&timeout=0")).await?;
                Ok(logs.iter().all(|log| log.contains("Redis is reachable again")).then_some(()))
            }
        })
        .await?;
        since.clear();
        for (name, before) in names.iter().zip(before) {
            let log = cluster.stderr_log(name);
            let warnings = redis_warnings(&log);
            assert_eq!(
                warnings.len() - before,
                1,
                "{name} should warn once per outage, got:\n{}",
                warnings[before..].join("\n")
            );
            let summary =
                log.lines().find(|line| line.contains("Redis is reachable again")).unwrap_or_default();
            assert!(summary.contains("failed attempts"), "{name}: {summary}");
        }
        Ok(())
    })
    .await
}
