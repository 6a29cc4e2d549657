//! To-device messages through sync worker restarts: delivered at least once (a response that was
//! lost is answered again from the same `since`), never again once a later `since`
//! acknowledges them, on any worker, whatever worker restarts in between.

use std::time::Duration;

use anyhow::Context as _;
use ganglion_testkit::{Account, Api, Cluster, ServerOptions, enc, eventually};
use serde_json::{Value, json};

async fn send(from: &Account, to: &Account, txn: &str, n: u32) -> anyhow::Result<()> {
    let body = json!({ "messages": { to.user_id.clone(): { to.device_id.clone(): { "n": n } } } });
    let response = from.put(&format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"), &body).await?;
    anyhow::ensure!(response.status == 200, "sendToDevice: {} {}", response.status, response.text);
    Ok(())
}

/// Long-polls `account` from `since` until a response brings to-device messages; returns their
/// `n` and the response's `next_batch`.
async fn receive(account: &Account, since: &str) -> anyhow::Result<(Vec<u64>, String)> {
    eventually(Duration::from_secs(30), "to-device messages arrive", || async {
        let body = account.sync(&format!("since={}&timeout=2000", enc(since))).await?;
        Ok(received(&body)?.filter(|(messages, _)| !messages.is_empty()))
    })
    .await
}

fn received(body: &Value) -> anyhow::Result<Option<(Vec<u64>, String)>> {
    let next = body["next_batch"].as_str().context("next_batch")?.to_owned();
    let messages = body["to_device"]["events"]
        .as_array()
        .context("to_device.events")?
        .iter()
        .map(|event| event["content"]["n"].as_u64().context("content.n"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some((messages, next)))
}

#[tokio::test]
async fn a_to_device_message_is_delivered_once_across_a_sync_worker_restart() {
    crate::run(async {
        let mut cluster = Cluster::start(ServerOptions::default()).await?;
        let api = Api::new(cluster.base_url());
        let alice = api.register("alice", "password-a").await?;
        let bob = api.register("bob", "password-b").await?;
        // Bob's syncs go to one worker or the other, as a client's would after a restart.
        let on = |name: &str| {
            Account::new(Api::new(cluster.url_of(name)), &bob.user_id, &bob.access_token, &bob.device_id)
        };
        let (bob1, bob2) = (on("sync1"), on("sync2"));
        let t0 = bob1.sync("timeout=0").await?["next_batch"].as_str().context("next_batch")?.to_owned();

        send(&alice, &bob, "one", 1).await?;
        let (first, t1) = receive(&bob1, &t0).await?;
        anyhow::ensure!(first == [1], "sync1 delivered {first:?}");
        // The response was lost: the same `since` brings the message again, on the other worker.
        let (again, _) = receive(&bob2, &t0).await?;
        anyhow::ensure!(again == [1], "sync2 delivered {again:?} from the unacknowledged token");

        // A message sent while the worker is down waits for it.
        cluster.kill("sync1");
        send(&alice, &bob, "two", 2).await?;
        cluster.start_instance("sync1").await?;
        let (second, t2) = receive(&bob1, &t1).await?;
        anyhow::ensure!(second == [2], "the restarted sync1 delivered {second:?} from t1");

        // Acknowledged on one worker, gone on both; and the restart lost nothing else.
        let rest = bob2.sync(&format!("since={}&timeout=0", enc(&t2))).await?;
        anyhow::ensure!(rest["to_device"]["events"] == json!([]), "after t2: {}", rest["to_device"]);
        cluster.restart("sync2").await?;
        let replay = bob2.sync(&format!("since={}&timeout=0", enc(&t1))).await?;
        anyhow::ensure!(replay["to_device"]["events"] == json!([]), "replaying t1: {}", replay["to_device"]);
        Ok(())
    })
    .await
}
