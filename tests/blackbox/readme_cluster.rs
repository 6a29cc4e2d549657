//! The README's one-command cluster (`scripts/cluster.sh`) starts, serves Element X's engine
//! (matrix-sdk-ui over simplified sliding sync) and `/sync` through nginx, brings back a killed
//! master, and stops everything on SIGTERM.

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use futures_util::FutureExt as _;
use ganglion_testkit::{Api, eventually};
use serde_json::json;

/// Kills whatever is left of the cluster if the test ends early (a panic or the deadline), so no
/// process outlives the test holding its ports.
struct Leftovers(String);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in pids_of(&self.0) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// A base port with every port the script derives from it free. Below the testkit's ports
/// (20,000 to 32,000, handed to the other tests running at the same time) and the kernel's
/// ephemeral range, so no other test's process can take one between this check and the
/// script's start.
fn free_base() -> anyhow::Result<u16> {
    for attempt in 0..200u32 {
        let base = 10_000 + ((std::process::id() * 7 + attempt * 131) % 8_000) as u16;
        let ports = [0, 1, 2, 3, 4, 5, 6, 100, 200, 201, 202, 203, 204, 205, 206, 1000, 1001, 1500]
            .map(|offset| base + offset);
        if ports.iter().all(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return Ok(base);
        }
    }
    anyhow::bail!("no free port range")
}

fn pids_of(pattern: &str) -> Vec<u32> {
    let output = Command::new("pgrep").args(["-f", pattern]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&output).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[tokio::test]
async fn the_readme_cluster_script_serves_element_x_and_recovers() {
    crate::run(async { scenario().await.unwrap() }).await
}

async fn scenario() -> anyhow::Result<()> {
    {
        let binary = ganglion_testkit::ganglion_binary()?;
        let dir = tempfile::Builder::new().prefix("ganglion-script-").tempdir()?;
        let base = free_base()?;
        let listen = format!("127.0.0.1:{}", base + 1500);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster.sh");
        let mut child = Command::new("bash")
            .arg(script)
            .arg(dir.path())
            .env("GANGLION_BIN", &binary)
            .env("BASE_PORT", base.to_string())
            .env("LISTEN", &listen)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let ready = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout).lines().map_while(Result::ok).any(|line| line.contains("cluster ready"))
        });
        let ready = tokio::time::timeout(Duration::from_secs(120), ready).await;
        let pattern = dir.path().display().to_string();
        let _leftovers = Leftovers(pattern.clone());
        let result = async {
            anyhow::ensure!(matches!(ready, Ok(Ok(true))), "scripts/cluster.sh did not get ready");
            let base_url = format!("http://{listen}");
            // Element X's engine logs in, lists rooms by recency, chats and decrypts.
            let element_x = crate::sliding_sync_sdk::lists_rooms_by_recency_and_chats_encrypted(&base_url);
            if let Err(panic) = std::panic::AssertUnwindSafe(element_x).catch_unwind().await {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                anyhow::bail!("Element X on the README cluster: {message}");
            }

            // Every process serves its metrics on its port + 200, as the script's header says.
            for offset in 200..=206 {
                let url = format!("http://127.0.0.1:{}/metrics", base + offset);
                let exposition = reqwest::get(&url).await?.error_for_status()?.text().await?;
                anyhow::ensure!(
                    exposition.contains("ganglion_process_cpu_seconds_total"),
                    "{url}: {exposition}"
                );
            }

            let api = Api::new(base_url);
            let alice = api.register("operator", "password-operator").await?;
            let room = alice.create_room(&json!({})).await?;
            alice.send_text(&room, "hello").await?;

            let masters = pids_of(&format!("{pattern}/cluster.toml --worker master"));
            anyhow::ensure!(masters.len() == 1, "master pids: {masters:?}");
            Command::new("kill").args(["-9", &masters[0].to_string()]).status()?;
            eventually(Duration::from_secs(60), "a send succeeds after the master is killed", || {
                let (alice, room) = (alice.clone(), room.clone());
                async move { Ok(alice.send_text(&room, "after").await.ok()) }
            })
            .await?;
            let sync = alice.sync("timeout=0").await?;
            let bodies: Vec<&str> = sync["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["content"]["body"].as_str())
                .collect();
            anyhow::ensure!(bodies.ends_with(&["hello", "after"]), "timeline: {bodies:?}");
            // Element X's sync: simplified sliding sync is routed to the sync workers too.
            let versions = api.get("/_matrix/client/versions", None).await?.ok();
            anyhow::ensure!(versions["unstable_features"]["org.matrix.simplified_msc3575"] == true);
            let list = json!({ "lists": { "all": { "ranges": [[0, 0]], "timeline_limit": 2 } } });
            let sliding =
                alice.post("/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", &list).await?.ok();
            let bodies: Vec<&str> = sliding["rooms"][&room]["timeline"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["content"]["body"].as_str())
                .collect();
            anyhow::ensure!(bodies == ["hello", "after"], "sliding sync: {sliding:#}");
            Ok(())
        }
        .await;
        // SIGTERM stops the cluster: nothing of it may be left running.
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        let stopped = tokio::task::spawn_blocking(move || child.wait());
        tokio::time::timeout(Duration::from_secs(30), stopped)
            .await
            .context("the script did not stop")???;
        let left = eventually(Duration::from_secs(10), "every process of the cluster stops", || {
            let pattern = pattern.clone();
            async move { Ok(pids_of(&pattern).is_empty().then_some(())) }
        })
        .await;
        if left.is_err() {
            for pid in pids_of(&pattern) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        result?;
        left
    }
}
