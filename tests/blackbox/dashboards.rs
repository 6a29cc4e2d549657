//! The Grafana dashboards under `grafana/dashboards/`: their JSON passes Grafana's published
//! schema (`@grafana/schema`'s `Dashboard` type, checked by the TypeScript compiler), and a real
//! Prometheus scraping a live cluster under a small load answers every panel's query with data.
//! A dashboard naming a metric no process exports, or a metric no dashboard shows, fails here.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use ganglion_testkit::{Account, Backend, Clamd, Prometheus, ServerOptions, TestServer};
use serde_json::{Value, json};

use crate::register_all;

/// One dashboard per concern, as operators look for them.
const DASHBOARDS: [&str; 8] = [
    "ganglion-overview",
    "ganglion-master",
    "ganglion-sync",
    "ganglion-client-reader",
    "ganglion-media",
    "ganglion-replication",
    "ganglion-database",
    "ganglion-federation",
];

fn grafana_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../grafana"))
}

fn dashboards() -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(grafana_dir().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let dashboard = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            found.push((path.file_stem().unwrap().to_string_lossy().into_owned(), dashboard));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Every panel's (title, query) of a dashboard.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push((
                panel["title"].as_str().unwrap().to_owned(),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    queries
}

/// The `ganglion_*` metric families a query names (histogram series reduced to their family).
fn metric_families(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("ganglion_"))
        .map(|word| {
            ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .fold(word, |word, suffix| word.strip_suffix(suffix).unwrap_or(word))
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn dashboards_pass_grafanas_schema() {
    let found = dashboards();
    let names: Vec<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names.iter().copied().collect::<BTreeSet<_>>(),
        DASHBOARDS.into_iter().collect(),
        "the dashboards"
    );
    let mut uids = BTreeSet::new();
    for (name, dashboard) in &found {
        assert!(uids.insert(dashboard["uid"].as_str().unwrap().to_owned()), "{name}: uid taken twice");
        let mut ids = BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            assert!(ids.insert(panel["id"].as_i64().unwrap()), "{name}: panel id {} twice", panel["id"]);
            for target in panel["targets"].as_array().unwrap() {
                // Provisioned anywhere: the datasource is picked by the dashboard's variable.
                assert_eq!(target["datasource"]["uid"], "${datasource}", "{name}: {target}");
            }
        }
    }
    let schema = tokio::task::spawn_blocking(ganglion_testkit::grafana_schema).await.unwrap().unwrap();
    let mut source = String::from("import type { Dashboard } from '@grafana/schema';\n");
    for (index, (name, dashboard)) in found.iter().enumerate() {
        source
            .push_str(&format!("// {name}.json\nexport const dashboard{index}: Dashboard = {dashboard};\n"));
    }
    let file = schema.join(format!("dashboards-{}.ts", std::process::id()));
    std::fs::write(&file, &source).unwrap();
    let output = std::process::Command::new("node")
        .arg(schema.join("node_modules/typescript/bin/tsc"))
        .args([
            "--noEmit",
            "--strict",
            "--moduleResolution",
            "bundler",
            "--module",
            "esnext",
            "--target",
            "es2022",
        ])
        .arg(&file)
        .current_dir(&schema)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "the dashboards do not match Grafana's schema:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Traffic that makes every dashboard's metrics move: accounts, a room with messages, a
/// long-poll woken by one, an event the auth rules refuse, an upload scanned and downloaded.
async fn small_load(server: &TestServer) {
    let [alice, bob] = <[Account; 2]>::try_from(register_all(server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room).await.unwrap();
    let poll = crate::long_poll(&bob).await;
    // Let the long-poll start waiting, then wake it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 0..5 {
        alice.send_text(&room, &format!("message {n}")).await.unwrap();
    }
    assert!(poll.await.unwrap().ok()["rooms"]["join"][&room].is_object());
    // Bob may not name the room (state_default 50): the master's auth rules refuse it.
    let refused = bob
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", ganglion_testkit::enc(&room)),
            &json!({"name": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    let uploaded = alice
        .api
        .raw(
            reqwest::Method::POST,
            "/_matrix/media/v3/upload",
            Some(&alice.access_token),
            Some("text/plain"),
            Some(b"dashboards".to_vec()),
        )
        .await
        .unwrap();
    let uri = uploaded.body["content_uri"].as_str().unwrap().trim_start_matches("mxc://").to_owned();
    assert_eq!(
        bob.get(&format!("/_matrix/client/v1/media/download/{uri}")).await.unwrap().text,
        "dashboards"
    );
    for _ in 0..3 {
        alice.get("/sync?timeout=0").await.unwrap().ok();
        bob.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b", ganglion_testkit::enc(&room)))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn every_dashboard_query_returns_data_from_prometheus_scraping_a_cluster() {
    crate::run(async {
        let clamd = Clamd::start().unwrap();
        let options = ServerOptions {
            extra_toml: format!("[media]\nclamd = \"{}\"\n", clamd.address()),
            ..ServerOptions::default()
        };
        let mut server = TestServer::start(Backend::Cluster, options).await.unwrap();
        let cluster = server.cluster().unwrap();
        let targets: Vec<(String, String)> = cluster
            .instance_names()
            .into_iter()
            .map(|name| {
                let url = cluster.metrics_url_of(name);
                (name.to_owned(), url.trim_start_matches("http://").trim_end_matches('/').to_owned())
            })
            .collect();
        let prometheus = Prometheus::start(&targets, &[grafana_dir().join("alerts.yml")]).await.unwrap();
        // The load starts once every process was scraped, so rates see it happen.
        let all_up = || async {
            let up = prometheus.query(r#"count(up{job="ganglion"} == 1)"#).await?;
            let count = up.first().and_then(|sample| sample["value"][1].as_str()?.parse::<usize>().ok());
            anyhow::Ok(count == Some(targets.len()))
        };
        ganglion_testkit::eventually(Duration::from_secs(30), "a first scrape of every process", || async {
            Ok(all_up().await?.then_some(()))
        })
        .await
        .unwrap();
        small_load(&server).await;

        // Every process's exposition, once the load is done: what the code exports.
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut exported = BTreeSet::new();
        for (_, address) in &targets {
            let text =
                http.get(format!("http://{address}/metrics")).send().await.unwrap().text().await.unwrap();
            for line in text.lines().filter_map(|line| line.strip_prefix("# TYPE ")) {
                exported.extend(metric_families(line.split(' ').next().unwrap()));
            }
        }
        // Prometheus has scraped every process twice since the load ended (a rate needs two
        // samples of a series that the load created).
        let loaded_at =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        ganglion_testkit::eventually(
            Duration::from_secs(20),
            "two scrapes of every process after the load",
            || async {
                let scraped = prometheus.query("min(timestamp(ganglion_build_info))").await?;
                let at = scraped.first().and_then(|sample| sample["value"][1].as_str()?.parse::<f64>().ok());
                Ok((all_up().await? && at.is_some_and(|at| at > loaded_at + 2.0)).then_some(()))
            },
        )
        .await
        .unwrap();

        let mut shown = BTreeSet::new();
        let mut empty = Vec::new();
        for (name, dashboard) in dashboards() {
            for (title, expr) in queries(&dashboard) {
                shown.extend(metric_families(&expr));
                // Grafana's variables as a user first sees them: every instance, the whole load.
                let query = expr.replace("$__rate_interval", "5m").replace("$instance", ".+");
                let result = prometheus.query(&query).await.unwrap();
                if result.is_empty() {
                    empty.push(format!("{name} / {title}: {expr}"));
                }
            }
        }
        assert!(empty.is_empty(), "panels without data:\n{}", empty.join("\n"));
        let unknown: Vec<&String> = shown.iter().filter(|family| !exported.contains(*family)).collect();
        assert!(unknown.is_empty(), "dashboards name metrics no process exports: {unknown:?}");
        let unshown: Vec<&String> = exported.iter().filter(|family| !shown.contains(*family)).collect();
        assert!(unshown.is_empty(), "exported metrics on no dashboard: {unshown:?}");

        // Prometheus loaded the alert rules too.
        let rules = prometheus.api("rules").await.unwrap();
        let loaded: usize = rules["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|group| group["rules"].as_array().unwrap().len())
            .sum();
        assert_eq!(loaded, 10, "{rules}");
    })
    .await
}
