//! The cluster behind HAProxy instead of nginx: the config `ganglion routes --format haproxy`
//! prints for the cluster's own `cluster.toml`, run by a real HAProxy on a port of its own in
//! front of the same processes. A client that only knows HAProxy's address registers, chats,
//! has a long-poll woken by a message, and moves a file through the media workers; every answer
//! comes from a process whose role serves the endpoint (`X-Ganglion-Instance`).

use ganglion_testkit::{Account, Api, Backend, Response, enc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{PASSWORD, joined_events, message_bodies};

/// The role part of `X-Ganglion-Instance: <role>/<name>` (empty without the header).
fn role_of(response: &Response) -> &str {
    response
        .headers
        .get("x-ganglion-instance")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap()
}

fn instance_of(response: &Response) -> String {
    response.headers.get("x-ganglion-instance").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// The number of `/sync` requests waiting for news on the cluster's sync workers now.
async fn waiting_long_polls(metrics_urls: &[String]) -> u64 {
    let mut waiting = 0;
    for url in metrics_urls {
        let exposition = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
        waiting += exposition
            .lines()
            .find_map(|line| line.strip_prefix("ganglion_sync_long_polls "))
            .map_or(0, |value| value.parse::<f64>().unwrap() as u64);
    }
    waiting
}

#[tokio::test]
async fn a_client_uses_the_cluster_through_haproxy() {
    crate::run(scenario()).await
}

async fn scenario() {
    let mut server = crate::start(Backend::Cluster).await;
    let cluster = server.cluster().unwrap();
    let base_url = cluster.haproxy().await.unwrap();
    assert_ne!(base_url, cluster.base_url(), "HAProxy has a port of its own, beside nginx");
    let sync_metrics: Vec<String> = cluster
        .instance_names()
        .into_iter()
        .filter(|name| cluster.role_of(name) == "sync")
        .map(|name| cluster.metrics_url_of(name))
        .collect();
    let api = Api::new(&base_url);

    let versions = api.get("/_matrix/client/versions", None).await.unwrap();
    assert_eq!(role_of(&versions), "client-reader");
    assert!(versions.clone().ok()["versions"].as_array().is_some_and(|v| !v.is_empty()));

    let alice = api.register("alice", PASSWORD).await.unwrap();
    let bob = api.register("bob", PASSWORD).await.unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    alice.send_text(&room, "hello through haproxy").await.unwrap();
    bob.join(&room).await.unwrap();

    // Bob's syncs all go to one sync worker (his token is the hash key), and see the message.
    let first = bob.get("/sync?timeout=0").await.unwrap();
    assert_eq!(role_of(&first), "sync", "{first:?}");
    let worker = instance_of(&first);
    let first = first.ok();
    assert!(
        message_bodies(&joined_events(&first, &room, "timeline"))
            .contains(&"hello through haproxy".to_owned()),
        "{first:#}"
    );
    let mut since = first["next_batch"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        let next = bob.get(&format!("/sync?timeout=0&since={}", enc(&since))).await.unwrap();
        assert_eq!(instance_of(&next), worker);
        since = next.ok()["next_batch"].as_str().unwrap().to_owned();
    }

    // A long-poll waits on its worker until Alice's message wakes it.
    let poll = {
        let bob = Account::new(bob.api.clone(), &bob.user_id, &bob.access_token, &bob.device_id);
        tokio::spawn(
            async move { bob.get(&format!("/sync?timeout=30000&since={}", enc(&since))).await.unwrap() },
        )
    };
    let waiting = async {
        while waiting_long_polls(&sync_metrics).await != 1 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await.expect("the long-poll waits");
    alice.send_text(&room, "wake up").await.unwrap();
    let woken = tokio::time::timeout(std::time::Duration::from_secs(15), poll)
        .await
        .expect("the message wakes the long-poll before its timeout")
        .unwrap();
    assert_eq!(instance_of(&woken), worker);
    let woken: Value = woken.ok();
    assert_eq!(message_bodies(&joined_events(&woken, &room, "timeline")), ["wake up"], "{woken:#}");

    // A file over `http.max_body_bytes` (1 MiB) goes up and comes back down through the media
    // workers: uploads have `media.max_upload_bytes` instead.
    let file: Vec<u8> = (0..2 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let uploaded = alice
        .api
        .raw(
            Method::POST,
            "/_matrix/media/v3/upload?filename=big.bin",
            Some(&alice.access_token),
            Some("application/octet-stream"),
            Some(file.clone()),
        )
        .await
        .unwrap();
    assert_eq!(role_of(&uploaded), "media", "{uploaded:?}");
    let uri = uploaded.ok()["content_uri"].as_str().unwrap().trim_start_matches("mxc://").to_owned();
    let download = format!("{base_url}/_matrix/client/v1/media/download/{uri}");
    let response = reqwest::Client::new().get(&download).bearer_auth(&bob.access_token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["x-ganglion-instance"].to_str().unwrap().starts_with("media/"));
    assert!(response.bytes().await.unwrap() == file, "the download differs from the upload");

    // Unknown paths reach a client-reader; operators' endpoints are not for clients.
    let unknown = alice.get("/_matrix/client/v3/no_such_endpoint").await.unwrap();
    assert_eq!(role_of(&unknown), "client-reader");
    unknown.err(404, "M_UNRECOGNIZED");
    // (`Api` would put this path under `/_matrix/client/v3`.)
    let replication = reqwest::get(format!("{base_url}/_ganglion/v1/replication")).await.unwrap();
    assert_eq!(replication.status(), 404);
    assert!(replication.headers().get("x-ganglion-instance").is_none(), "HAProxy answers itself");
    let body: Value = serde_json::from_str(&replication.text().await.unwrap()).unwrap();
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
}
