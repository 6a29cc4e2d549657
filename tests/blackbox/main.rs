//! Black-box suite: real `ganglion` processes driven over HTTP by matrix-sdk and reqwest.
//!
//! Every scenario is an `async fn(Backend)` and runs three times, as `<area>::sqlite::<name>`,
//! `<area>::postgres::<name>` and `<area>::cluster::<name>` (see [`on_all_backends!`]): the
//! embedded default on both databases, and a cluster (master, 2 sync workers, 2 client-readers,
//! Redis, nginx) driven through nginx. Each run starts its own servers; the PostgreSQL runs share
//! one throwaway cluster per test process, with a fresh database each.
//! Waits are bounded: long-poll syncs with a deadline, never sleeps.

use std::{future::Future, time::Duration};

use ganglion_testkit::{Account, Api, Backend, ServerOptions, TestServer, enc};
use serde_json::Value;

/// Generates one `#[tokio::test]` per scenario and backend, in `mod sqlite` and `mod postgres`.
macro_rules! on_all_backends {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    crate::run(super::$scenario(ganglion_testkit::Backend::Sqlite)).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    crate::run(super::$scenario(ganglion_testkit::Backend::Postgres)).await
                }
            )+
        }
        mod cluster {
            $(
                #[tokio::test]
                async fn $scenario() {
                    crate::run(super::$scenario(ganglion_testkit::Backend::Cluster)).await
                }
            )+
        }
    };
}

mod accounts;
mod ansible;
mod backup;
mod chat;
mod config;
mod dashboards;
mod deactivation;
mod directories;
mod e2ee;
mod errors;
mod federation;
mod federation_edus;
mod federation_events;
mod federation_media;
mod federation_rooms;
mod haproxy;
mod ignoring;
mod interop;
mod knocking;
mod legacy;
mod limits;
mod media;
mod membership;
mod metrics;
mod notifications;
mod pagination;
mod presence;
mod push_rules;
mod pushers;
mod ratelimits;
mod readme_cluster;
mod relations;
mod restart;
mod rooms;
mod search;
mod sliding_sync;
mod sliding_sync_sdk;
mod spaces;
mod strangers;
mod sync;
mod sync_memory;
mod tags;
mod third_party;
mod timestamps;
mod traces;

/// Upper bound for one scenario, server start included, so a hung server fails instead of hanging.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(300);
/// Upper bound for waiting on a condition through repeated syncs.
const SYNC_DEADLINE: Duration = Duration::from_secs(30);
pub const PASSWORD: &str = "correct horse battery staple";

async fn run(scenario: impl Future<Output = ()>) {
    tokio::time::timeout(SCENARIO_DEADLINE, scenario)
        .await
        .unwrap_or_else(|_| panic!("scenario did not finish within {SCENARIO_DEADLINE:?}"));
}

/// A server with registration on and generous rate limits.
pub async fn start(backend: Backend) -> TestServer {
    TestServer::start(backend, ServerOptions::default()).await.unwrap()
}

/// Registers each name (plain HTTP, UIA dummy flow).
pub async fn register_all(server: &TestServer, names: &[&str]) -> Vec<Account> {
    let mut accounts = Vec::new();
    for name in names {
        accounts.push(server.register(name, PASSWORD).await.unwrap());
    }
    accounts
}

/// Starts `account`'s long-poll (up to 20 s) from where it stands now: answered once news arrives.
pub async fn long_poll(account: &Account) -> tokio::task::JoinHandle<ganglion_testkit::Response> {
    let since = account.get("/sync?timeout=0").await.unwrap().ok()["next_batch"].as_str().unwrap().to_owned();
    let account =
        Account::new(account.api.clone(), &account.user_id, &account.access_token, &account.device_id);
    tokio::spawn(async move { account.get(&format!("/sync?timeout=20000&since={since}")).await.unwrap() })
}

/// Alice, Bob and Carol, all joined to a public room Alice created; returns them and the room.
pub async fn three_in_a_public_room(server: &TestServer) -> ([Account; 3], String) {
    let accounts = register_all(server, &["alice", "bob", "carol"]).await;
    let [alice, bob, carol] = <[Account; 3]>::try_from(accounts).unwrap();
    let room = alice.create_room(&serde_json::json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room).await.unwrap();
    carol.join(&room).await.unwrap();
    ([alice, bob, carol], room)
}

/// The account behind a logged-in matrix-sdk client, for raw requests with the same device.
pub fn account_of(server: &TestServer, client: &matrix_sdk::Client) -> Account {
    account_at(&server.base_url, client)
}

/// [`account_of`] for the server at `base_url`.
pub fn account_at(base_url: &str, client: &matrix_sdk::Client) -> Account {
    Account::new(
        Api::new(base_url),
        client.user_id().unwrap().as_str(),
        &client.access_token().unwrap(),
        client.device_id().unwrap().as_str(),
    )
}

/// `filter=<url-encoded JSON>` for `/sync` or `/messages`.
pub fn filter_param(filter: &Value) -> String {
    format!("filter={}", enc(&filter.to_string()))
}

/// `rooms.<section>.<room_id>` of a sync response (`Null` if absent).
pub fn room_in<'a>(sync: &'a Value, section: &str, room_id: &str) -> &'a Value {
    &sync["rooms"][section][room_id]
}

/// Events of `rooms.join.<room_id>.<field>.events` (empty if absent).
pub fn joined_events<'a>(sync: &'a Value, room_id: &str, field: &str) -> Vec<&'a Value> {
    events_of(&room_in(sync, "join", room_id)[field])
}

/// The `events` array of a sync section object.
pub fn events_of(section: &Value) -> Vec<&Value> {
    section["events"].as_array().map(|events| events.iter().collect()).unwrap_or_default()
}

/// Event ids of the `m.room.message` events of a list, in order.
pub fn message_ids(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .map(|event| event["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Bodies of the `m.room.message` events of a list, in order.
pub fn message_bodies(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .map(|event| event["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

/// `next_batch` of an initial sync (with an optional extra query such as a filter).
pub async fn initial_since(account: &Account, query: &str) -> String {
    account.sync(query).await.unwrap()["next_batch"].as_str().unwrap().to_owned()
}

/// Long-polls `/sync` from `since` (advancing it) until `done` accepts a response; returns every
/// response seen, the accepted one last. `extra` is appended to the query (`&filter=…`).
pub async fn sync_until(
    account: &Account,
    since: &mut String,
    extra: &str,
    mut done: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    let polls = async {
        loop {
            let query = format!("since={}&timeout=5000{extra}", enc(since));
            let body = account.sync(&query).await.unwrap();
            *since = body["next_batch"].as_str().expect("sync without next_batch").to_owned();
            let accepted = done(&body);
            seen.push(body);
            if accepted {
                return;
            }
        }
    };
    if tokio::time::timeout(SYNC_DEADLINE, polls).await.is_err() {
        panic!(
            "{}: condition not met within {SYNC_DEADLINE:?}; last responses: {:#}",
            account.user_id,
            Value::Array(seen.iter().rev().take(3).cloned().collect())
        );
    }
    seen
}

/// `GET` that must answer 200; its body.
pub async fn get_ok(account: &Account, path: &str) -> Value {
    account.get(path).await.unwrap().ok()
}

/// Pages `/rooms/{room}/messages` in `dir` from `from` (or the room's edge), following `end`,
/// until the server says there is no more; every event, in the order returned.
pub async fn paginate(
    account: &Account,
    room_id: &str,
    dir: &str,
    from: Option<&str>,
    limit: u32,
) -> Vec<Value> {
    let mut events = Vec::new();
    let mut from = from.map(str::to_owned);
    for _ in 0..1000 {
        let mut path = format!("/rooms/{}/messages?dir={dir}&limit={limit}", enc(room_id));
        if let Some(from) = &from {
            path.push_str(&format!("&from={}", enc(from)));
        }
        let page = get_ok(account, &path).await;
        let chunk = page["chunk"].as_array().expect("messages without chunk").clone();
        assert!(chunk.len() <= limit as usize, "page of {} events exceeds limit {limit}", chunk.len());
        let empty = chunk.is_empty();
        events.extend(chunk);
        match page["end"].as_str() {
            Some(end) if !empty => from = Some(end.to_owned()),
            _ => return events,
        }
    }
    panic!("pagination did not end after 1000 pages");
}
