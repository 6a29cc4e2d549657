//! Joining a room of another server with many members: an embedded Ganglion (A) hosts a public
//! room that the example fills with MEMBERS users of A; then a user of a second embedded
//! Ganglion (B) joins it over federation, and so does a Synapse user. Each join is timed from the
//! request to its answer (the joining server has the room's whole state by then), and the
//! joining server's resident memory is read from `/proc` before the join and at its peak after.
//! Both Ganglions are started as the tests start them (`GANGLION_BIN`, else the release build);
//! Synapse from PyPI.
//!
//! `GANGLION_BIN=target/release/ganglion cargo run --release -p ganglion-tests --example remote_join -- [MEMBERS]`
//! (default 10,000 members). Results are in docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use ganglion_testkit::{Account, FederationNode, Synapse, enc};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

/// `(resident now, peak resident)` of a process, in MiB.
fn memory_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/{pid}/status"))?;
        let kib: f64 = line.split_whitespace().nth(1).unwrap_or("0").parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Joins `account` to `room_id` through `server`; the time the join took.
async fn join(account: &Account, room_id: &str, server: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let joined =
        account.post(&format!("/join/{}?server_name={}", enc(room_id), enc(server)), &json!({})).await?;
    anyhow::ensure!(joined.status == 200, "join by {}: {} {}", account.user_id, joined.status, joined.text);
    Ok(started.elapsed())
}

/// Waits (bounded) until `account`'s server counts `count` joined members in the room.
async fn members_seen(account: &Account, room_id: &str, count: usize) -> anyhow::Result<usize> {
    let mut seen = 0;
    for _ in 0..600 {
        let answer = account.get(&format!("/rooms/{}/joined_members", enc(room_id))).await?;
        seen = answer.body["joined"].as_object().map_or(0, |joined| joined.len());
        if seen >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(seen)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let members: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(10_000);
    let (host, node, synapse) =
        tokio::join!(FederationNode::start(), FederationNode::start(), Synapse::start());
    let (host, node, synapse) = (host?, node?, synapse?);
    let alice = host.client_api().register("alice", PASSWORD).await?;
    let room_id = alice.create_room(&json!({ "preset": "public_chat", "name": "Crowded" })).await?;

    let started = Instant::now();
    let api = host.client_api();
    let joined: usize = stream::iter(1..members)
        .map(|n| {
            let (api, room_id) = (api.clone(), room_id.clone());
            async move {
                let member = api.register(&format!("member{n}"), PASSWORD).await?;
                member.join(&room_id).await?;
                anyhow::Ok(1)
            }
        })
        .buffer_unordered(8)
        .try_fold(0, |total, one| async move { Ok(total + one) })
        .await?;
    eprintln!(
        "the host's room has {} members, built in {:.0} s",
        joined + 1,
        started.elapsed().as_secs_f64()
    );

    let bob = node.client_api().register("bob", PASSWORD).await?;
    let node_pid = node.pid()?;
    let (node_before, _) = memory_mib(node_pid)?;
    let node_took = join(&bob, &room_id, host.server_name()).await?;
    let (_, node_peak) = memory_mib(node_pid)?;
    let node_members = members_seen(&bob, &room_id, members + 1).await?;

    let (carol_id, token) = synapse.register("carol", PASSWORD).await?;
    let whoami = Account::new(synapse.client_api(), &carol_id, &token, "").get("/account/whoami").await?.ok();
    let carol =
        Account::new(synapse.client_api(), &carol_id, &token, whoami["device_id"].as_str().unwrap_or(""));
    let synapse_pid = synapse.pid().ok_or_else(|| anyhow::anyhow!("Synapse is not running"))?;
    let (synapse_before, _) = memory_mib(synapse_pid)?;
    let synapse_took = join(&carol, &room_id, host.server_name()).await?;
    let (_, synapse_peak) = memory_mib(synapse_pid)?;
    let synapse_members = members_seen(&carol, &room_id, members + 2).await?;

    println!("joining a room of {members} members on another server:");
    println!(
        "  Ganglion (embedded, SQLite): {:.1} s; resident {node_before:.0} MiB before, peak {node_peak:.0} MiB; \
         {node_members} joined members seen",
        node_took.as_secs_f64()
    );
    println!(
        "  Synapse 1.163.2 (SQLite): {:.1} s; resident {synapse_before:.0} MiB before, peak {synapse_peak:.0} MiB; \
         {synapse_members} joined members seen",
        synapse_took.as_secs_f64()
    );
    anyhow::ensure!(node_members > members, "Ganglion saw {node_members} members");
    Ok(())
}
