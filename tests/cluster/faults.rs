//! Under a steady send load: kill -9 a sync worker, a client-reader and the master, stop Redis
//! for 10 s, flush it. Every event acknowledged with an event id must then be seen exactly once,
//! in one order, through every sync worker and `/messages`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use ganglion_testkit::{Account, Api, Cluster, ServerOptions, enc, eventually};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const USERS: usize = 3;
const FILTER: &str = r#"{"room":{"timeline":{"limit":1000}}}"#;

/// Sends until `stop`, retrying each transaction id until it is acknowledged or gives up;
/// returns the acknowledged event ids in order.
async fn send_load(sender: Account, room: String, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut acknowledged = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let path = format!("/rooms/{}/send/m.room.message/load-{n}", enc(&room));
        let body = json!({"msgtype": "m.text", "body": format!("{} #{n}", sender.user_id)});
        // The same transaction id on every attempt: a retry after a lost answer must not
        // duplicate the event.
        for _ in 0..50 {
            match sender.put(&path, &body).await {
                Ok(response) if response.status == 200 => {
                    if let Some(id) = response.body["event_id"].as_str() {
                        acknowledged.push(id.to_owned());
                    }
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acknowledged
}

/// A client long-polling `/sync` from `since` against `urls` in turn (one URL: pinned to a
/// worker; several: alternating between them), recording the room's timeline.
struct Reader {
    account: Account,
    urls: Vec<String>,
    since: String,
    seen: Vec<String>,
}

impl Reader {
    async fn poll(&mut self, room: &str, turn: usize) -> anyhow::Result<()> {
        let api = Api::new(self.urls[turn % self.urls.len()].clone());
        let path = format!("/sync?since={}&timeout=500&filter={}", enc(&self.since), enc(FILTER));
        let response = match api.get(&path, Some(&self.account.access_token)).await {
            Ok(response) if response.status == 200 => response,
            // A worker being killed or catching up: try again with the same token.
            _ => return Ok(()),
        };
        let timeline = &response.body["rooms"]["join"][room]["timeline"];
        anyhow::ensure!(
            timeline["limited"] != json!(true),
            "a gap in the timeline for {}",
            self.account.user_id
        );
        for event in timeline["events"].as_array().into_iter().flatten() {
            if event["type"] == "m.room.message" {
                self.seen.push(event["event_id"].as_str().context("event_id")?.to_owned());
            }
        }
        self.since = response.body["next_batch"].as_str().context("next_batch")?.to_owned();
        Ok(())
    }
}

fn check_exactly_once(what: &str, seen: &[String], acknowledged: &[Vec<String>]) -> anyhow::Result<()> {
    let unique: BTreeSet<&String> = seen.iter().collect();
    anyhow::ensure!(unique.len() == seen.len(), "{what}: {} duplicates", seen.len() - unique.len());
    let position: BTreeMap<&String, usize> = seen.iter().enumerate().map(|(i, id)| (id, i)).collect();
    for sent in acknowledged {
        let mut last = None;
        for id in sent {
            let at = *position.get(id).with_context(|| format!("{what}: acknowledged {id} never seen"))?;
            anyhow::ensure!(last.is_none_or(|last| last < at), "{what}: {id} out of the sender's order");
            last = Some(at);
        }
    }
    Ok(())
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_or_duplicated_through_faults() {
    crate::run(async {
        let mut cluster = Cluster::start(ServerOptions::default()).await?;
        let api = Api::new(cluster.base_url());
        let mut users = Vec::new();
        for i in 0..USERS {
            users.push(api.register(&format!("user{i}"), &format!("password-{i}")).await?);
        }
        let room = users[0].create_room(&json!({"preset": "public_chat"})).await?;
        for user in &users[1..] {
            user.join(&room).await?;
        }
        let mut readers = Vec::new();
        for user in &users {
            let since =
                user.sync("timeout=0").await?["next_batch"].as_str().context("next_batch")?.to_owned();
            for urls in [
                vec![cluster.url_of("sync1")],
                vec![cluster.url_of("sync2")],
                vec![cluster.url_of("sync1"), cluster.url_of("sync2")],
            ] {
                readers.push(Arc::new(Mutex::new(Reader {
                    account: user.clone(),
                    urls,
                    since: since.clone(),
                    seen: Vec::new(),
                })));
            }
        }

        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = users
            .iter()
            .map(|user| tokio::spawn(send_load(user.clone(), room.clone(), stop.clone())))
            .collect();
        let reading = Arc::new(AtomicBool::new(true));
        let reader_tasks: Vec<_> = readers
            .iter()
            .map(|reader| {
                let (reader, room, reading) = (reader.clone(), room.clone(), reading.clone());
                tokio::spawn(async move {
                    let mut turn = 0;
                    while reading.load(Ordering::Relaxed) {
                        reader.lock().await.poll(&room, turn).await?;
                        turn += 1;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();

        let under_load = || tokio::time::sleep(Duration::from_millis(1500));
        under_load().await;
        cluster.kill("sync1");
        under_load().await;
        cluster.start_instance("sync1").await?;
        under_load().await;
        cluster.kill("reader1");
        under_load().await;
        cluster.start_instance("reader1").await?;
        under_load().await;
        cluster.kill("master");
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.start_instance("master").await?;
        under_load().await;
        cluster.redis().stop()?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        cluster.redis().start_again()?;
        under_load().await;
        cluster.redis().flushall()?;
        under_load().await;

        stop.store(true, Ordering::Relaxed);
        let mut acknowledged = Vec::new();
        for sender in senders {
            acknowledged.push(sender.await?);
        }
        let total: usize = acknowledged.iter().map(Vec::len).sum();
        anyhow::ensure!(total > 50, "only {total} sends were acknowledged: the load did not run");
        let all: BTreeSet<String> = acknowledged.iter().flatten().cloned().collect();

        // Every reader gets every acknowledged event (bounded), then stops.
        eventually(Duration::from_secs(60), "every reader sees every acknowledged event", || {
            let (readers, all) = (readers.clone(), all.clone());
            async move {
                for reader in &readers {
                    let reader = reader.lock().await;
                    if !all.iter().all(|id| reader.seen.contains(id)) {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            }
        })
        .await?;
        reading.store(false, Ordering::Relaxed);
        for task in reader_tasks {
            task.await??;
        }

        let mut orders = Vec::new();
        for reader in &readers {
            let reader = reader.lock().await;
            let what = format!("{} via {:?}", reader.account.user_id, reader.urls);
            check_exactly_once(&what, &reader.seen, &acknowledged)?;
            orders
                .push((what, reader.seen.iter().filter(|id| all.contains(*id)).cloned().collect::<Vec<_>>()));
        }
        for (what, order) in &orders[1..] {
            anyhow::ensure!(order == &orders[0].1, "{what} saw another order than {}", orders[0].0);
        }

        // `/messages`, backwards through nginx, returns each exactly once.
        let mut paged = Vec::new();
        let mut from: Option<String> = None;
        for _ in 0..1000 {
            let mut path = format!("/rooms/{}/messages?dir=b&limit=100", enc(&room));
            if let Some(from) = &from {
                path.push_str(&format!("&from={}", enc(from)));
            }
            let page = users[1].get(&path).await?.ok();
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            paged.extend(
                chunk
                    .iter()
                    .filter(|e| e["type"] == "m.room.message")
                    .filter_map(|e| e["event_id"].as_str().map(str::to_owned)),
            );
            match page.get("end").and_then(Value::as_str) {
                Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        paged.reverse();
        check_exactly_once("/messages", &paged, &acknowledged)?;
        Ok(())
    })
    .await
}
