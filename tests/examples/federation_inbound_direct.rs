//! Ganglion's own inbound PDU rate, without Synapse's send path in front of it: a user of a second
//! embedded Ganglion (B) joins a room of the Ganglion measured (A); then the example, holding B's
//! signing key, builds PDUS messages from that user (each following the last, signed and hashed
//! as B would) and posts them to A's federation listener as B's transactions of 50 PDUs, one
//! transaction at a time as a server sends to one destination, and times how fast A takes them.
//! A checks every PDU as it would B's own (signatures against B's published key, hashes, auth),
//! and persists it. Both are started as the tests start them (`GANGLION_BIN`, else the release
//! build).
//!
//! `GANGLION_BIN=target/release/ganglion cargo run --release -p ganglion-tests --example federation_inbound_direct -- [PDUS]`
//! (default 5,000). Results are in docs/BENCHMARKS.md.

use std::time::Instant;

use ganglion_events::{EventTemplate, ServerKey, build_pdu};
use ganglion_testkit::{FederationNode, enc};
use ruma::{
    OwnedEventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
    api::federation::authentication::{ServerSignaturesInput, XMatrix},
};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const PDUS_PER_TRANSACTION: usize = 50;

/// A request of `method uri` from `from` to `to`, signed with `key` (certificates not verified).
async fn signed(
    http: &reqwest::Client,
    method: reqwest::Method,
    uri: &str,
    body: Option<&Value>,
    from: &FederationNode,
    to: &FederationNode,
    key: &ServerKey,
) -> anyhow::Result<Value> {
    let bytes = body.map(serde_json::to_vec).transpose()?.unwrap_or_default();
    let request = http::Request::builder().method(method.as_str()).uri(uri).body(&bytes[..])?;
    let origin: OwnedServerName = ServerName::parse(from.server_name())?;
    let destination: OwnedServerName = ServerName::parse(to.server_name())?;
    let header = XMatrix::try_from_http_request(
        &request,
        ServerSignaturesInput::new(origin, destination, &key.key_pair),
    )?;
    let mut request = http
        .request(method, format!("{}{uri}", to.federation_url()))
        .header("authorization", http::HeaderValue::from(&header));
    if body.is_some() {
        request = request.header("content-type", "application/json").body(bytes);
    }
    let response = request.send().await?;
    let status = response.status();
    let answer: Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "{uri}: {status} {answer}");
    Ok(answer)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pdus: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(5000);
    let (a, b) = tokio::join!(FederationNode::start(), FederationNode::start());
    let (a, b) = (a?, b?);
    let alice = a.client_api().register("alice", PASSWORD).await?;
    let room_id = alice.create_room(&json!({ "preset": "public_chat", "room_version": "12" })).await?;
    let bob = b.client_api().register("bob", PASSWORD).await?;
    let joined = bob
        .post(&format!("/join/{}?server_name={}", enc(&room_id), enc(a.server_name())), &json!({}))
        .await?;
    anyhow::ensure!(joined.status == 200, "join: {}", joined.text);

    // What B's next event in the room follows and is authorised by, as A has them.
    let key = ServerKey::load_or_generate(b.server_name(), &b.dir().join("data/signing.key"))?;
    let http = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build()?;
    let state = alice.get(&format!("/rooms/{}/state", enc(&room_id))).await?.ok();
    let id_of = |kind: &str, state_key: &str| -> anyhow::Result<OwnedEventId> {
        let event = state
            .as_array()
            .into_iter()
            .flatten()
            .find(|event| event["type"] == kind && event["state_key"] == state_key)
            .ok_or_else(|| anyhow::anyhow!("no {kind} {state_key:?} in the room's state"))?;
        Ok(event["event_id"].as_str().unwrap_or_default().try_into()?)
    };
    let power_levels = id_of("m.room.power_levels", "")?;
    let bob_join = id_of("m.room.member", &bob.user_id)?;
    let uri = format!("/_matrix/federation/v1/event/{}", enc(bob_join.as_str()));
    let join_pdu = signed(&http, reqwest::Method::GET, &uri, None, &b, &a, &key).await?;
    let mut depth = join_pdu["pdus"][0]["depth"].as_u64().unwrap_or(1);

    // Built (hashed, signed) before the clock starts: that is B's work, not A's.
    let rules = RoomVersionId::V12.rules().ok_or_else(|| anyhow::anyhow!("no v12 rules"))?;
    let sender = UserId::parse(&bob.user_id)?;
    let room = RoomId::parse(&room_id)?;
    let auth = [power_levels, bob_join.clone()];
    let mut prev = bob_join;
    let mut built = Vec::with_capacity(pdus);
    let base_ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    for n in 0..pdus {
        depth += 1;
        let template = EventTemplate::message(
            "m.room.message",
            json!({ "msgtype": "m.text", "body": format!("direct {n}") }),
        );
        let pdu = build_pdu(
            &key,
            &rules,
            Some(&room),
            &sender,
            &template,
            &[prev],
            &auth,
            depth,
            base_ts + n as u64,
        )?;
        prev = pdu.event_id.clone();
        built.push((pdu.event_id.to_string(), serde_json::from_str::<Value>(&pdu.json)?));
    }

    let started = Instant::now();
    for (number, chunk) in built.chunks(PDUS_PER_TRANSACTION).enumerate() {
        let transaction = json!({
            "origin": b.server_name(),
            "origin_server_ts": base_ts,
            "pdus": chunk.iter().map(|(_, pdu)| pdu).collect::<Vec<_>>(),
        });
        let uri = format!("/_matrix/federation/v1/send/direct{number}");
        let answer = signed(&http, reqwest::Method::PUT, &uri, Some(&transaction), &b, &a, &key).await?;
        for (event_id, _) in chunk {
            anyhow::ensure!(answer["pdus"][event_id] == json!({}), "{event_id} was refused: {answer}");
        }
    }
    let took = started.elapsed();
    // A has them all, in order, as its user reads them.
    let last = alice.get(&format!("/rooms/{}/messages?dir=b&limit=1", enc(&room_id))).await?.ok();
    let newest = last["chunk"][0]["content"]["body"].as_str().unwrap_or_default().to_owned();
    anyhow::ensure!(newest == format!("direct {}", pdus - 1), "A's newest message is {newest:?}");
    println!(
        "{pdus} PDUs in transactions of {PDUS_PER_TRANSACTION}, one at a time: A took them in {:.1} s \
         ({:.0} PDUs/s, {:.1} ms per transaction)",
        took.as_secs_f64(),
        pdus as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / pdus.div_ceil(PDUS_PER_TRANSACTION) as f64,
    );
    Ok(())
}
