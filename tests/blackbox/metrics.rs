//! Prometheus metrics on every process, off the client API listener: `/metrics` in the
//! Prometheus text format (checked by `promtool check metrics`), `/health` and `/ready`. The
//! requests a process answered show under their route and endpoint class.

use ganglion_testkit::{Account, Backend, Clamd, ServerOptions, TestServer, free_port};

use crate::register_all;

on_all_backends!(every_process_serves_metrics_health_and_readiness);

/// Uploads `body` as text; the `mxc://` URI without its scheme.
async fn upload(account: &Account, body: &[u8]) -> String {
    let uploaded = account
        .api
        .raw(
            reqwest::Method::POST,
            "/_matrix/media/v3/upload",
            Some(&account.access_token),
            Some("text/plain"),
            Some(body.to_vec()),
        )
        .await
        .unwrap();
    uploaded.body["content_uri"].as_str().unwrap().trim_start_matches("mxc://").to_owned()
}

async fn scrape(url: &str) -> (u16, String, String) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = http.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (status, content_type, response.text().await.unwrap())
}

/// `promtool check metrics` (Debian `prometheus`) on an exposition: its complaints, if any.
fn promtool_problems(exposition: &str) -> Option<String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) runs");
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (!output.status.success() || !said.trim().is_empty()).then_some(said)
}

async fn every_process_serves_metrics_health_and_readiness(backend: Backend) {
    let port = free_port();
    let options = ServerOptions {
        extra_toml: format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
        ..ServerOptions::default()
    };
    let mut server = TestServer::start(backend, options).await.unwrap();
    let [alice] = <[Account; 1]>::try_from(register_all(&server, &["alice"]).await).unwrap();
    alice.get("/sync?timeout=0").await.unwrap().ok();
    let uri = upload(&alice, b"12345").await;
    assert_eq!(alice.get(&format!("/_matrix/client/v1/media/download/{uri}")).await.unwrap().text, "12345");
    let listeners: Vec<(String, String)> = match server.cluster() {
        Some(cluster) => cluster
            .instance_names()
            .into_iter()
            .map(|name| (name.to_owned(), cluster.metrics_url_of(name)))
            .collect(),
        None => vec![("ganglion".to_owned(), format!("http://127.0.0.1:{port}"))],
    };
    let mut syncs_counted = 0;
    let (mut bytes_in, mut bytes_out) = (0, 0);
    let value = |exposition: &str, prefix: &str| -> u64 {
        exposition
            .lines()
            .find(|line| line.starts_with(prefix))
            .map_or(0, |line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
    };
    // A long-poll woken by a message: counted while it waits, then as a wake-up.
    let room = alice.create_room(&serde_json::json!({})).await.unwrap();
    let mut since =
        alice.get("/sync?timeout=0").await.unwrap().ok()["next_batch"].as_str().unwrap().to_owned();
    // A long-poll that something else answers first (a presence row, say) is polled again from
    // where it left off, until one is seen waiting (bounded).
    let mut attempts = 0;
    let poll = loop {
        attempts += 1;
        assert!(attempts <= 5, "no long-poll was ever counted as waiting");
        let poll = {
            let alice =
                Account::new(alice.api.clone(), &alice.user_id, &alice.access_token, &alice.device_id);
            let since = since.clone();
            tokio::spawn(
                async move { alice.get(&format!("/sync?timeout=20000&since={since}")).await.unwrap() },
            )
        };
        let waiting = async {
            loop {
                let mut waiting = 0;
                for (_, url) in &listeners {
                    waiting += value(&scrape(&format!("{url}/metrics")).await.2, "ganglion_sync_long_polls ");
                }
                if waiting == 1 || poll.is_finished() {
                    return waiting == 1;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        let counted = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the long-poll is counted or answered");
        if counted {
            break poll;
        }
        since = poll.await.unwrap().ok()["next_batch"].as_str().unwrap().to_owned();
    };
    alice.send_text(&room, "wake up").await.unwrap();
    let answer = poll.await.unwrap().ok();
    assert!(answer["rooms"]["join"][&room].is_object(), "the long-poll did not bring the message: {answer}");
    let mut wakeups = 0;
    for (name, url) in &listeners {
        assert_eq!(scrape(&format!("{url}/health")).await.0, 200, "{name} /health");
        let (status, _, text) = scrape(&format!("{url}/ready")).await;
        assert_eq!(status, 200, "{name} /ready: {text}");
        let (status, content_type, exposition) = scrape(&format!("{url}/metrics")).await;
        assert_eq!(status, 200, "{name} /metrics");
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{name}: {content_type}");
        if let Some(problems) = promtool_problems(&exposition) {
            panic!("promtool finds fault with {name}'s metrics:\n{problems}\n{exposition}");
        }
        for metric in [
            "ganglion_process_resident_memory_bytes ",
            "ganglion_process_cpu_seconds_total ",
            "ganglion_process_open_fds ",
        ] {
            assert!(
                exposition.lines().any(|line| line.starts_with(metric)),
                "{name} lacks {metric}:\n{exposition}"
            );
        }
        let sync = exposition.lines().find(|line| {
            line.starts_with("ganglion_http_requests_total{")
                && line.contains(r#"class="sync",route="/_matrix/client/v3/sync",method="GET",status="200""#)
        });
        if let Some(line) = sync {
            syncs_counted += line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
            assert!(
                exposition.contains(r#"ganglion_http_request_duration_seconds_count{class="sync",route="/_matrix/client/v3/sync"}"#),
                "{name} counts syncs but has no latency for them"
            );
        }
        wakeups += value(&exposition, "ganglion_sync_wakeups_total ");
        assert_eq!(value(&exposition, "ganglion_sync_long_polls "), 0, "{name}: a long-poll still counted");
        bytes_in += value(&exposition, r#"ganglion_media_bytes_total{direction="in"} "#);
        bytes_out += value(&exposition, r#"ganglion_media_bytes_total{direction="out"} "#);
        // Every process knows where each stream stands; the room-less account still made events
        // (its profile is not one, but registration's device list change is a stream row).
        for stream in
            ["events", "receipts", "typing", "account_data", "to_device", "device_lists", "presence"]
        {
            let prefix = format!("ganglion_stream_position{{stream=\"{stream}\"}} ");
            assert!(exposition.lines().any(|line| line.starts_with(&prefix)), "{name} lacks {prefix}");
        }
        assert!(
            value(&exposition, r#"ganglion_database_connections{state="reads_max"} "#) >= 1,
            "{name}: no read pool size:\n{exposition}"
        );
        // A sync worker follows the master through Redis: it connected, caught up, and timed
        // the entries it read (the message that woke the long-poll among them).
        if name.starts_with("sync") || name.starts_with("reader") {
            // Workers call the master: every call counted by method, with its latency.
            assert!(
                exposition.contains(r#"ganglion_grpc_client_calls_total{method="Positions",outcome="ok"}"#),
                "{name}: no counted call to the master:\n{exposition}"
            );
            assert!(
                exposition.contains(r#"ganglion_grpc_client_duration_seconds_count{method="Positions"}"#)
            );
        }
        if name.starts_with("sync") {
            for counted in [
                "ganglion_redis_connects_total ",
                "ganglion_replication_catch_ups_total ",
                r#"ganglion_replication_lag_seconds_count{stream="events"} "#,
            ] {
                assert!(value(&exposition, counted) >= 1, "{name}: {counted}is not counted:\n{exposition}");
            }
        }
        // Whoever runs the master's write path counts its events, its batches and its calls.
        if name == "master" || name == "ganglion" {
            assert!(value(&exposition, "ganglion_events_persisted_total ") >= 2, "{name}:\n{exposition}");
            assert!(value(&exposition, "ganglion_write_batch_duration_seconds_count ") >= 1);
            let hits: f64 = exposition
                .lines()
                .filter(|line| line.starts_with("ganglion_cache_hits_total{"))
                .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                .sum();
            assert!(hits >= 1.0, "{name}: no cache hit counted:\n{exposition}");
            assert!(
                value(&exposition, r#"ganglion_database_use_seconds_count{pool="transaction"} "#) >= 1,
                "{exposition}"
            );
        }
        if name == "master" {
            assert!(
                exposition.contains(r#"ganglion_grpc_server_calls_total{method="SendEvent",outcome="ok"} 1"#),
                "the master counts the send it answered:\n{exposition}"
            );
            assert!(value(&exposition, "ganglion_redis_connects_total ") >= 1, "the publisher's connection");
        }
        assert!(
            value(&exposition, r#"ganglion_database_wait_seconds_count{pool="read"} "#) >= 1,
            "{name}:\n{exposition}"
        );
        // The metrics listener is not the client API.
        assert_eq!(scrape(&format!("{url}/_matrix/client/versions")).await.0, 404, "{name}");
    }
    assert_eq!(syncs_counted, 2 + attempts, "each /sync is counted once, by the process that answered it");
    assert!(wakeups >= 1, "the woken long-poll is not counted");
    assert_eq!((bytes_in, bytes_out), (5, 5), "the upload's and the download's bytes");

    // A worker whose Redis or master is gone still lives, but is not ready, and says why.
    if let Some(cluster) = server.cluster() {
        cluster.redis().stop().unwrap();
        for name in ["master", "sync1"] {
            let (status, _, text) = scrape(&format!("{}/ready", cluster.metrics_url_of(name))).await;
            assert_eq!(status, 503, "{name}: {text}");
            assert!(text.contains("Redis"), "{text}");
        }
        cluster.kill("master");
        let url = cluster.metrics_url_of("sync1");
        assert_eq!(scrape(&format!("{url}/health")).await.0, 200);
        let (status, _, text) = scrape(&format!("{url}/ready")).await;
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("Redis") && text.contains("master"), "both are named: {text}");
    }
}

/// `grafana/alerts.yml` passes `promtool check rules` and its unit tests
/// (`grafana/alerts_test.yml`), and names only metrics a live server exports.
#[tokio::test]
async fn alert_rules_pass_promtool_and_name_only_exported_metrics() {
    crate::run(async {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../grafana");
        for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]] {
            let output = std::process::Command::new("promtool").args(args).current_dir(dir).output().unwrap();
            assert!(
                output.status.success(),
                "promtool {}:\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // A server that has answered requests, stored and served a file and scanned it: a
        // family with nothing counted yet is not in the exposition.
        let clamd = Clamd::start().unwrap();
        let port = free_port();
        let options = ServerOptions {
            extra_toml: format!(
                "[metrics]\nlisten = \"127.0.0.1:{port}\"\n[media]\nclamd = \"{}\"\n",
                clamd.address()
            ),
            ..ServerOptions::default()
        };
        let server = TestServer::start(Backend::Sqlite, options).await.unwrap();
        let [alice] = <[Account; 1]>::try_from(register_all(&server, &["alice"]).await).unwrap();
        let uri = upload(&alice, b"scanned").await;
        assert_eq!(
            alice.get(&format!("/_matrix/client/v1/media/download/{uri}")).await.unwrap().text,
            "scanned"
        );
        let (_, _, exposition) = scrape(&format!("http://127.0.0.1:{port}/metrics")).await;
        assert!(exposition.contains(r#"ganglion_media_scans_total{verdict="clean"} 1"#), "{exposition}");
        let exported: Vec<&str> = exposition
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .collect();
        let rules = std::fs::read_to_string(format!("{dir}/alerts.yml")).unwrap();
        let named = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("ganglion_"));
        for name in named {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name, |name, suffix| name.strip_suffix(suffix).unwrap_or(name));
            assert!(
                exported.contains(&family) || exported.contains(&name),
                "grafana/alerts.yml names {name}, which the server does not export:\n{exposition}"
            );
        }
    })
    .await
}
