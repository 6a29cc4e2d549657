//! Each class of request lands on its role through the generated nginx config.

use ganglion_testkit::{Cluster, ServerOptions};
use serde_json::json;

fn instance(response: &reqwest::Response) -> String {
    response.headers().get("x-ganglion-instance").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

#[tokio::test]
async fn classes_land_on_their_roles() {
    crate::run(async {
        let cluster = Cluster::start(ServerOptions::default()).await?;
        let http = reqwest::Client::new();
        let base = cluster.base_url();
        let api = ganglion_testkit::Api::new(base.clone());
        let alice = api.register("alice", "password-alice").await?;
        let token = alice.access_token.clone();

        let sync =
            http.get(format!("{base}/_matrix/client/v3/sync?timeout=0")).bearer_auth(&token).send().await?;
        assert_eq!(sync.status(), 200);
        assert!(instance(&sync).starts_with("sync/"), "{}", instance(&sync));

        let room = alice.create_room(&json!({})).await?;
        let messages = http
            .get(format!("{base}/_matrix/client/v3/rooms/{}/messages?dir=b", ganglion_testkit::enc(&room)))
            .bearer_auth(&token)
            .send()
            .await?;
        assert_eq!(messages.status(), 200);
        assert!(instance(&messages).starts_with("client-reader/"), "{}", instance(&messages));

        let login = http.get(format!("{base}/_matrix/client/v3/login")).send().await?;
        assert!(instance(&login).starts_with("client-reader/"), "{}", instance(&login));

        let versions = http.get(format!("{base}/_matrix/client/versions")).send().await?;
        assert_eq!(versions.status(), 200);

        let unknown = http.get(format!("{base}/_matrix/client/v3/no/such/endpoint")).send().await?;
        assert_eq!(unknown.status(), 404);
        let body: serde_json::Value = unknown.json().await?;
        assert_eq!(body["errcode"], "M_UNRECOGNIZED");

        // A worker answers 404 M_UNRECOGNIZED for classes it does not serve.
        let direct = http
            .get(format!(
                "{}/_matrix/client/v3/rooms/{}/messages?dir=b",
                cluster.url_of("sync1"),
                ganglion_testkit::enc(&room)
            ))
            .bearer_auth(&token)
            .send()
            .await?;
        assert_eq!(direct.status(), 404);
        let direct = http
            .get(format!("{}/_matrix/client/v3/sync?timeout=0", cluster.url_of("reader1")))
            .bearer_auth(&token)
            .send()
            .await?;
        assert_eq!(direct.status(), 404);
        // /sync for one token always lands on the same worker.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10 {
            let sync = http
                .get(format!("{base}/_matrix/client/v3/sync?timeout=0"))
                .bearer_auth(&token)
                .send()
                .await?;
            seen.insert(instance(&sync));
        }
        assert_eq!(seen.len(), 1, "{seen:?}");
        Ok(())
    })
    .await
}
