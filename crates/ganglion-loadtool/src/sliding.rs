//! The simplified sliding sync (MSC4186) workloads.
//!
//! `first-list`: one user gets rooms (each with a name and one message, so that their bump
//! stamps differ) up to each of --room-counts in turn; at each count the tool times the first
//! room list a client gets, from a fresh login and a fresh connection each time: simplified
//! sliding sync's first request as Element X sends it (20 rooms, timeline limit 1, its required
//! state and extensions, `timeout=0`, no `pos`) against `/sync` v2's initial sync with a timeline
//! limit of 1 and lazy-loaded members. The first measurement of each after the rooms were
//! created is reported as cold, the --repeats after it as warm.
//!
//! `live-update`: --users users in one shared room each keep one sliding sync connection
//! long-polling (`timeout=30000`, range [[0,19]], timeline limit 1); a user of its own sends
//! --messages messages one at a time, each once every long-poll is parked again, and the tool
//! times each delivery from the send's answer and reads the server's CPU time around it.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::cli::Args;
use crate::matrix::{Api, Reply, Session};
use crate::procfs::{self, Process};
use crate::run::{Progress, REQUEST_TIMEOUT, run_id};
use crate::server::Server;
use crate::setup::Setup;
use crate::stats::{self, Summary};

const PASSWORD: &str = "ganglion-load-password";
/// Rooms in the first list, as Element X asks for them.
const FIRST_LIST_ROOMS: usize = 20;
/// The long-poll of the live-update workload, as Element X's.
const LONG_POLL_MS: u64 = 30_000;
/// A first list or initial sync of thousands of rooms may take a Python server a while.
const INITIAL_TIMEOUT: Duration = Duration::from_secs(600);
/// How long every long-poll gets to be parked before the first message, and again between
/// messages once all have answered and polled again.
const PARK_FIRST: Duration = Duration::from_secs(2);
const PARK_BETWEEN: Duration = Duration::from_millis(500);
/// A message not delivered to every client within this long fails the run.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);

/// The body of Element X's first room-list request.
pub fn element_x_body() -> Value {
    json!({
        "conn_id": "room-list",
        "lists": {
            "all_rooms": {
                "ranges": [[0, FIRST_LIST_ROOMS - 1]],
                "timeline_limit": 1,
                "required_state": [
                    ["m.room.name", ""],
                    ["m.room.encryption", ""],
                    ["m.room.member", "$LAZY"],
                    ["m.room.member", "$ME"],
                    ["m.room.topic", ""],
                    ["m.room.avatar", ""],
                    ["m.room.canonical_alias", ""],
                    ["m.room.power_levels", ""],
                    ["m.room.join_rules", ""],
                    ["m.room.tombstone", ""],
                    ["m.room.create", ""],
                    ["m.room.history_visibility", ""],
                    ["m.space.parent", "*"],
                    ["m.space.child", "*"]
                ],
                "filters": {}
            }
        },
        "extensions": {
            "account_data": { "enabled": true },
            "receipts": { "enabled": true, "rooms": ["*"] },
            "typing": { "enabled": true }
        }
    })
}

/// `/sync` v2's filter for the initial sync compared against.
const V2_FILTER: &str = r#"{"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}}}"#;

/// Server CPU seconds so far: every server process plus the database's process tree.
fn server_cpu(server: &Server) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for pid in server.pids() {
        if let Some(seconds) = Process::Pid(pid).cpu_seconds() {
            total += seconds;
            any = true;
        }
    }
    if let Some(seconds) = server.database_pid.and_then(procfs::tree_cpu_seconds) {
        total += seconds;
        any = true;
    }
    any.then_some(total)
}

fn reply_body(reply: Reply, what: &str) -> anyhow::Result<bytes::Bytes> {
    match reply {
        Reply::Ok { body, .. } => Ok(body),
        Reply::RateLimited(_) => bail!("{what}: rate limited"),
        Reply::Failed { status, body } => bail!("{what}: {status}: {body}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Request {
    SlidingSync,
    SyncV2,
}

impl Request {
    fn as_str(self) -> &'static str {
        match self {
            Request::SlidingSync => "sliding sync",
            Request::SyncV2 => "/sync v2 initial",
        }
    }
}

/// One timed request.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    ms: f64,
    bytes: usize,
    /// Rooms in the answer: `rooms` of sliding sync, `rooms.join` of v2.
    rooms: usize,
    /// Sliding sync: the list's `count` (all the user's rooms).
    list_count: Option<u64>,
    server_cpu_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct FirstListRow {
    room_count: u32,
    request: Request,
    cold: Sample,
    warm: Vec<Sample>,
    warm_ms: Option<Summary>,
}

async fn time_first_list(
    base_url: &str,
    server: &Server,
    session: &Session,
    request: Request,
) -> anyhow::Result<Sample> {
    // A client of its own: a fresh connection, nothing pooled from setup.
    let api = Api::new(base_url, 1, INITIAL_TIMEOUT)?;
    let cpu_before = server_cpu(server);
    let started = Instant::now();
    let reply = match request {
        Request::SlidingSync => api.sliding_sync(session, None, 0, &element_x_body()).await,
        Request::SyncV2 => api.sync(session, None, 0, Some(V2_FILTER)).await,
    }
    .with_context(|| format!("{} request", request.as_str()))?;
    let elapsed = started.elapsed();
    let cpu_after = server_cpu(server);
    let body = reply_body(reply, request.as_str())?;
    let value: Value = serde_json::from_slice(&body).context("unparseable answer")?;
    let (rooms, list_count) = match request {
        Request::SlidingSync => (
            value["rooms"].as_object().map_or(0, |rooms| rooms.len()),
            value["lists"]["all_rooms"]["count"].as_u64(),
        ),
        Request::SyncV2 => (value["rooms"]["join"].as_object().map_or(0, |rooms| rooms.len()), None),
    };
    Ok(Sample {
        ms: elapsed.as_secs_f64() * 1e3,
        bytes: body.len(),
        rooms,
        list_count,
        server_cpu_ms: cpu_before.zip(cpu_after).map(|(before, after)| (after - before) * 1e3),
    })
}

pub async fn first_list(args: &Args, server: Server, progress: &Progress) -> anyhow::Result<()> {
    let concurrency = args.setup_concurrency as usize;
    let api = Api::new(&server.base_url, concurrency, REQUEST_TIMEOUT)?;
    api.versions().await.context("the server does not answer /_matrix/client/versions")?;
    let run_id = run_id();
    let rate_limited = AtomicU64::new(0);
    let setup = Setup { api: &api, run_id: &run_id, concurrency, rate_limited: &rate_limited };
    let user = setup.register("", 1).await?.pop().context("no user registered")?;
    let username = setup.username("", 0);

    let mut rows = Vec::new();
    let mut created = 0_u32;
    for count in args.room_counts() {
        let started = Instant::now();
        stream::iter(created..count)
            .map(|index| {
                let (api, user, rate_limited) = (&api, &user, &rate_limited);
                async move {
                    let room_id =
                        api.create_room(user, &format!("Room {index}"), false, rate_limited).await?;
                    let content =
                        json!({ "msgtype": "m.text", "body": format!("The first message of room {index}") });
                    let reply = api
                        .send_event(user, &room_id, "m.room.message", &format!("first{index}"), &content)
                        .await
                        .with_context(|| format!("sending to room {index}"))?;
                    reply_body(reply, &format!("sending to room {index}"))?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<()>()
            .await?;
        let took = started.elapsed();
        progress.say(&format!(
            "{} rooms created (and a message each) in {:.1}s: {:.1} rooms/s; the user has {count}",
            count - created,
            took.as_secs_f64(),
            f64::from(count - created) / took.as_secs_f64()
        ));
        created = count;

        let mut samples: Vec<(Request, Vec<Sample>)> =
            vec![(Request::SlidingSync, Vec::new()), (Request::SyncV2, Vec::new())];
        for attempt in 0..=args.repeats() {
            // The cold round goes sliding sync first; warm rounds alternate the order.
            let order: [usize; 2] = if attempt % 2 == 0 { [0, 1] } else { [1, 0] };
            for index in order {
                let request = samples[index].0;
                let session = api.login(&username, PASSWORD, &rate_limited).await?;
                let sample = time_first_list(&server.base_url, &server, &session, request).await?;
                progress.say(&format!(
                    "{count} rooms, {} {}: {:.1} ms, {} bytes, {} rooms{}",
                    request.as_str(),
                    if attempt == 0 { "cold" } else { "warm" },
                    sample.ms,
                    sample.bytes,
                    sample.rooms,
                    sample.list_count.map(|count| format!(" (list count {count})")).unwrap_or_default()
                ));
                samples[index].1.push(sample);
            }
        }
        for (request, mut taken) in samples {
            let warm = taken.split_off(1);
            let cold = taken.pop().context("no cold sample")?;
            let mut warm_ns: Vec<i64> = warm.iter().map(|sample| (sample.ms * 1e6) as i64).collect();
            rows.push(FirstListRow {
                room_count: count,
                request,
                cold,
                warm_ms: stats::summarize_ns(&mut warm_ns),
                warm,
            });
        }
    }

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "workload": "first-list", "backend": server.backend, "rows": rows })
            )?
        );
        return Ok(());
    }
    println!(
        "first room list, {} ({}); warm: {} runs after the cold one",
        server.backend,
        server.base_url,
        args.repeats()
    );
    println!(
        "| rooms | request | cold (ms) | warm p50 / p90 (ms) | size (bytes) | rooms in answer | server CPU, warm median (ms) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in &rows {
        let mut cpu: Vec<f64> = row.warm.iter().filter_map(|sample| sample.server_cpu_ms).collect();
        cpu.sort_by(f64::total_cmp);
        let rooms = match row.cold.list_count {
            Some(count) => format!("{} of {count}", row.cold.rooms),
            None => row.cold.rooms.to_string(),
        };
        println!(
            "| {} | {} | {:.1} | {} | {} | {} | {} |",
            row.room_count,
            row.request.as_str(),
            row.cold.ms,
            row.warm_ms.map(|summary| format!("{:.1} / {:.1}", summary.p50, summary.p90)).unwrap_or_default(),
            row.warm.last().map_or(row.cold.bytes, |sample| sample.bytes),
            rooms,
            stats::percentile(&cpu, 50.0).map(|ms| format!("{ms:.0}")).unwrap_or_else(|| "n/a".to_owned()),
        );
    }
    Ok(())
}

/// The tag of live message `index`, in its body.
fn live_tag(run_id: &str, index: u32) -> String {
    format!("live {run_id} #{index}")
}

/// Live message indices in a sliding sync answer's timelines.
fn live_indices(answer: &Value, prefix: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Some(rooms) = answer["rooms"].as_object() else {
        return found;
    };
    for room in rooms.values() {
        for event in room["timeline"].as_array().into_iter().flatten() {
            if let Some(index) = event["content"]["body"]
                .as_str()
                .and_then(|body| body.strip_prefix(prefix))
                .and_then(|rest| rest.parse().ok())
            {
                found.push(index);
            }
        }
    }
    found
}

/// One client's connection.
struct Poller {
    api: Api,
    session: Session,
    client: usize,
    pos: String,
    prefix: String,
    arrivals: mpsc::UnboundedSender<(usize, u32, Instant)>,
    failures: Arc<AtomicU64>,
}

/// Long-polls until stopped, telling the coordinator which live message each answer carried and
/// when it arrived.
async fn long_poll(poller: Poller, mut stop: watch::Receiver<bool>) {
    let Poller { api, session, client, mut pos, prefix, arrivals, failures } = poller;
    let body = element_x_body();
    loop {
        let reply = tokio::select! {
            reply = api.sliding_sync(&session, Some(&pos), LONG_POLL_MS, &body) => reply,
            _ = stop.changed() => return,
        };
        let arrived = Instant::now();
        let answer = match reply {
            Ok(Reply::Ok { body, .. }) => serde_json::from_slice::<Value>(&body).ok(),
            _ => None,
        };
        let Some(answer) = answer else {
            failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if let Some(next) = answer["pos"].as_str() {
            next.clone_into(&mut pos);
        }
        for index in live_indices(&answer, &prefix) {
            let _ = arrivals.send((client, index, arrived));
        }
    }
}

#[derive(Debug, Serialize)]
struct LiveMessage {
    send_ms: f64,
    /// From the send's answer until each client had it.
    delivery_ms: Vec<f64>,
    /// Server CPU from just before the send until the last client had it.
    server_cpu_ms: Option<f64>,
}

pub async fn live_update(args: &Args, server: Server, progress: &Progress) -> anyhow::Result<()> {
    let concurrency = args.setup_concurrency as usize;
    let clients = args.users as usize;
    let api = Api::new(&server.base_url, concurrency, REQUEST_TIMEOUT)?;
    api.versions().await.context("the server does not answer /_matrix/client/versions")?;
    let run_id = run_id();
    let rate_limited = AtomicU64::new(0);
    let setup = Setup { api: &api, run_id: &run_id, concurrency, rate_limited: &rate_limited };
    let sender = setup.register("sender", 1).await?.pop().context("no sender registered")?;
    let users = setup.register("", clients).await?;
    let room_id = api.create_room(&sender, "Live updates", false, &rate_limited).await?;
    stream::iter(&users)
        .map(|user| api.join(user, &room_id, &rate_limited))
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    progress.say(&format!("{clients} users joined {room_id}; first sliding sync requests"));

    // Each connection's first request (no pos, timeout 0), a few at a time.
    let firsts: Vec<String> = stream::iter(&users)
        .map(|user| async {
            let reply = api.sliding_sync(user, None, 0, &element_x_body()).await?;
            let answer: Value = serde_json::from_slice(&reply_body(reply, "first sliding sync")?)?;
            answer["pos"].as_str().map(str::to_owned).context("first sliding sync answer without pos")
        })
        .buffered(concurrency)
        .try_collect()
        .await?;

    let poll_api =
        Api::new(&server.base_url, clients, Duration::from_millis(LONG_POLL_MS) + REQUEST_TIMEOUT)?;
    let send_api = Api::new(&server.base_url, 1, REQUEST_TIMEOUT)?;
    let prefix = format!("live {run_id} #");
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for (client, (session, pos)) in users.into_iter().zip(firsts).enumerate() {
        let poller = Poller {
            api: poll_api.clone(),
            session,
            client,
            pos,
            prefix: prefix.clone(),
            arrivals: arrivals_tx.clone(),
            failures: failures.clone(),
        };
        tasks.push(tokio::spawn(long_poll(poller, stop_rx.clone())));
    }
    tokio::time::sleep(PARK_FIRST).await;
    progress.say(&format!("{clients} long-polls parked; sending {} messages", args.messages()));

    let mut messages = Vec::new();
    for index in 0..args.messages() {
        let content = json!({ "msgtype": "m.text", "body": live_tag(&run_id, index) });
        let cpu_before = server_cpu(&server);
        let started = Instant::now();
        let reply = send_api
            .send_event(&sender, &room_id, "m.room.message", &format!("live{index}"), &content)
            .await
            .context("sending a live message")?;
        reply_body(reply, "sending a live message")?;
        let acked = Instant::now();
        let mut seen = vec![None::<Instant>; clients];
        let mut left = clients;
        let deadline = tokio::time::Instant::now() + DELIVERY_DEADLINE;
        while left > 0 {
            let Ok(Some((client, got, arrived))) = tokio::time::timeout_at(deadline, arrivals.recv()).await
            else {
                let _ = stop_tx.send(true);
                bail!(
                    "message {index} reached {} of {clients} clients within {DELIVERY_DEADLINE:?}",
                    clients - left
                );
            };
            if got == index && seen[client].is_none() {
                seen[client] = Some(arrived);
                left -= 1;
            }
        }
        let cpu_after = server_cpu(&server);
        let delivery_ms: Vec<f64> = seen
            .iter()
            .flatten()
            .map(|arrived| arrived.saturating_duration_since(acked).as_secs_f64() * 1e3)
            .collect();
        let message = LiveMessage {
            send_ms: (acked - started).as_secs_f64() * 1e3,
            delivery_ms,
            server_cpu_ms: cpu_before.zip(cpu_after).map(|(before, after)| (after - before) * 1e3),
        };
        progress.say(&format!(
            "message {index}: send {:.1} ms, last of {clients} deliveries {:.1} ms after the answer, server CPU {}",
            message.send_ms,
            message.delivery_ms.iter().copied().fold(0.0, f64::max),
            message.server_cpu_ms.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "n/a".to_owned())
        ));
        messages.push(message);
        tokio::time::sleep(PARK_BETWEEN).await;
    }
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }

    let mut all: Vec<i64> =
        messages.iter().flat_map(|message| message.delivery_ms.iter().map(|ms| (ms * 1e6) as i64)).collect();
    let mut last: Vec<i64> = messages
        .iter()
        .map(|message| (message.delivery_ms.iter().copied().fold(0.0, f64::max) * 1e6) as i64)
        .collect();
    let mut sends: Vec<i64> = messages.iter().map(|message| (message.send_ms * 1e6) as i64).collect();
    let cpu: Vec<f64> = messages.iter().filter_map(|message| message.server_cpu_ms).collect();
    let all = stats::summarize_ns(&mut all);
    let last = stats::summarize_ns(&mut last);
    let sends = stats::summarize_ns(&mut sends);
    let cpu_mean = (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64);
    let failed = failures.load(std::sync::atomic::Ordering::Relaxed);

    if args.json {
        let report = json!({
            "workload": "live-update", "backend": server.backend, "clients": clients,
            "deliveries_ms": all, "last_delivery_ms": last, "send_ms": sends,
            "server_cpu_ms_per_message_mean": cpu_mean, "failed_polls": failed, "messages": messages,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let fmt = |summary: Option<Summary>| {
        summary.map_or_else(|| "n/a".to_owned(), |s| format!("{:.1} / {:.1} / {:.1}", s.p50, s.p99, s.max))
    };
    println!(
        "live update, {} ({}): {clients} sliding sync long-polls in one room, {} messages one at a time",
        server.backend,
        server.base_url,
        messages.len()
    );
    println!(
        "| send p50 / p99 / max (ms) | delivery after the answer, all clients, p50 / p99 / max (ms) | last client's delivery p50 / p99 / max (ms) | server CPU per message, mean (ms) | failed polls |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {failed} |",
        fmt(sends),
        fmt(all),
        fmt(last),
        cpu_mean.map_or_else(|| "n/a".to_owned(), |ms| format!("{ms:.1}"))
    );
    Ok(())
}
