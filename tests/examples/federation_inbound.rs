//! Inbound PDU rate from a Synapse peer: Synapse users send messages as fast as Synapse takes
//! them into a room of an embedded Ganglion, and the time until Ganglion has every one is timed.
//! Both are started as the tests start them (Synapse from PyPI; Ganglion from `GANGLION_BIN`,
//! else the release build).
//!
//! `GANGLION_BIN=target/release/ganglion cargo run -p ganglion-tests --example federation_inbound -- [MESSAGES] [SENDERS]`
//! (defaults: 1000 messages from 4 Synapse users). Results are in docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use ganglion_testkit::{Account, FederationNode, Synapse, enc};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let messages: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1000);
    let senders: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(4).max(1);
    let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
    let (synapse, ganglion) = (synapse?, ganglion?);
    let alice = ganglion.client_api().register("alice", "correct horse battery").await?;
    let room_id = alice.create_room(&json!({ "preset": "public_chat" })).await?;
    let mut bobs = Vec::new();
    for n in 0..senders {
        let (user_id, token) = synapse.register(&format!("bob{n}"), "correct horse battery").await?;
        let whoami =
            Account::new(synapse.client_api(), &user_id, &token, "").get("/account/whoami").await?.ok();
        let bob =
            Account::new(synapse.client_api(), &user_id, &token, whoami["device_id"].as_str().unwrap_or(""));
        let join = bob
            .post(&format!("/join/{}?server_name={}", enc(&room_id), enc(ganglion.server_name())), &json!({}))
            .await?;
        anyhow::ensure!(join.status == 200, "join: {}", join.text);
        bobs.push(bob);
    }
    let filter =
        enc(&json!({ "room": { "timeline": { "limit": 5000, "types": ["m.room.message"] } } }).to_string());
    let mut since =
        alice.sync(&format!("filter={filter}")).await?["next_batch"].as_str().unwrap_or("").to_owned();

    let started = Instant::now();
    let sending: Vec<_> = bobs
        .into_iter()
        .enumerate()
        .map(|(n, bob)| {
            let room_id = room_id.clone();
            let share = messages / senders + usize::from(n < messages % senders);
            tokio::spawn(async move {
                for m in 0..share {
                    bob.send_text(&room_id, &format!("bob{n} {m}")).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let mut received = 0;
    let mut sent_after = None;
    let deadline = started + Duration::from_secs(600);
    while received < messages && Instant::now() < deadline {
        let sync = alice.sync(&format!("since={}&timeout=1000&filter={filter}", enc(&since))).await?;
        since = sync["next_batch"].as_str().unwrap_or("").to_owned();
        received += sync["rooms"]["join"][&room_id]["timeline"]["events"].as_array().map_or(0, Vec::len);
        if sent_after.is_none() && sending.iter().all(|task| task.is_finished()) {
            sent_after = Some(started.elapsed());
        }
    }
    let received_after = started.elapsed();
    for task in sending {
        task.await??;
    }
    let sent_after = sent_after.unwrap_or(received_after);
    println!(
        "{messages} messages from {senders} Synapse users: Synapse took them in {:.1} s ({:.0}/s); \
         Ganglion had {received} of them after {:.1} s ({:.0} PDUs/s received)",
        sent_after.as_secs_f64(),
        messages as f64 / sent_after.as_secs_f64(),
        received_after.as_secs_f64(),
        received as f64 / received_after.as_secs_f64(),
    );
    anyhow::ensure!(received == messages, "Ganglion received {received} of {messages}");
    Ok(())
}
