//! The rooms workload's `--push`: a push gateway on 127.0.0.1 in this process, and an HTTP
//! pusher (full format) for every syncing user pointing at it. Each notification carries the
//! message's content, whose `ts_ns` the sender stamped, so the gateway times each push from the
//! send to its arrival on the tool's own clock. Every syncing member but the sender has a
//! pusher, so a room's expected pushes are its expected `/sync` deliveries.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context as _;
use axum::{Json, Router, extract::State, routing::post};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};

use crate::clock;
use crate::matrix::{Api, Session};
use crate::report::Window;
use crate::stats::{Summary, summarize_ns};

/// The app ID of the tool's pushers.
const APP_ID: &str = "org.ganglion.load";

/// One notification the gateway took.
struct Arrival {
    at_ns: u64,
    /// The send's clock reading, from the content's `ts_ns`; `None` for a notification that is
    /// not a load message.
    sent_ns: Option<u64>,
    /// `(sender, seq, pushkey)`: the same message to the same device twice is a duplicate.
    key: Option<(u64, u64, String)>,
}

/// The running gateway; dropping it stops it.
pub struct Gateway {
    pub url: String,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn notify(State(arrivals): State<Arc<Mutex<Vec<Arrival>>>>, Json(body): Json<Value>) -> Json<Value> {
    let at_ns = clock::now_ns();
    let notification = &body["notification"];
    let content = &notification["content"];
    let sent_ns = content["ts_ns"].as_u64();
    let pushkey = notification["devices"][0]["pushkey"].as_str().unwrap_or_default();
    let key = match (content["load_sender"].as_u64(), content["load_seq"].as_u64()) {
        (Some(sender), Some(seq)) => Some((sender, seq, pushkey.to_owned())),
        _ => None,
    };
    arrivals.lock().push(Arrival { at_ns, sent_ns, key });
    Json(json!({ "rejected": [] }))
}

impl Gateway {
    pub async fn start() -> anyhow::Result<Gateway> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("binding the push gateway")?;
        let address = listener.local_addr()?;
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().route("/_matrix/push/v1/notify", post(notify)).with_state(arrivals.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("ganglion-load: the push gateway stopped: {error}");
            }
        });
        Ok(Gateway { url: format!("http://{address}/_matrix/push/v1/notify"), arrivals, task })
    }

    /// Notifications taken so far.
    pub fn received(&self) -> u64 {
        self.arrivals.lock().len() as u64
    }

    /// What the gateway saw, against `expected` pushes (the acknowledged sends' syncing
    /// members but the sender); `pusher_workers` divides the rate.
    pub fn report(&self, window: Window, expected: u64, pusher_workers: Option<u32>) -> PushReport {
        let arrivals = self.arrivals.lock();
        let in_window = arrivals.iter().filter(|arrival| window.contains(arrival.at_ns)).count() as u64;
        let mut latencies: Vec<i64> = arrivals
            .iter()
            .filter_map(|arrival| {
                let sent = arrival.sent_ns.filter(|&sent| window.contains(sent))?;
                Some(arrival.at_ns as i64 - sent as i64)
            })
            .collect();
        let mut seen = HashSet::new();
        let duplicates = arrivals
            .iter()
            .filter_map(|arrival| arrival.key.as_ref())
            .filter(|key| !seen.insert(*key))
            .count();
        let per_second = in_window as f64 / window.seconds().max(f64::MIN_POSITIVE);
        // After the window the senders stop: a backlog then drains at the pushers' own pace.
        let after: Vec<u64> = arrivals.iter().map(|a| a.at_ns).filter(|&at| at >= window.end_ns).collect();
        let drained_per_second = after
            .iter()
            .max()
            .map(|&last| after.len() as f64 / ((last - window.end_ns) as f64 / 1e9).max(f64::MIN_POSITIVE));
        PushReport {
            received: arrivals.len() as u64,
            expected,
            duplicates: duplicates as u64,
            in_window,
            per_second,
            pusher_workers,
            per_pusher_worker: pusher_workers
                .filter(|&workers| workers > 0)
                .map(|w| per_second / f64::from(w)),
            after_window: after.len() as u64,
            drained_per_second,
            latency_ms: summarize_ns(&mut latencies),
        }
    }
}

/// Sets an HTTP pusher for each of `sessions`, all pointing at `url`, each with its own pushkey.
pub async fn set_pushers(
    api: &Api,
    sessions: &[Session],
    url: &str,
    concurrency: usize,
    rate_limited: &AtomicU64,
) -> anyhow::Result<()> {
    stream::iter(sessions)
        .map(|session| async move {
            let body = json!({
                "kind": "http",
                "app_id": APP_ID,
                "pushkey": format!("{}/{}", session.user_id, session.device_id),
                "app_display_name": "ganglion-load",
                "device_display_name": session.device_id,
                "lang": "en",
                "data": { "url": url },
            });
            api.set_pusher(session, &body, rate_limited).await
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Pushes as the gateway saw them.
#[derive(Debug, Serialize)]
pub struct PushReport {
    /// Every notification taken, in and after the window (the drain included).
    pub received: u64,
    /// Acknowledged sends times their rooms' syncing members but the sender.
    pub expected: u64,
    /// The same message to the same pushkey more than once.
    pub duplicates: u64,
    /// Taken during the measured window, and per second of it.
    pub in_window: u64,
    pub per_second: f64,
    /// A cluster's pusher workers (0: the master pushes); `None` for a single process.
    pub pusher_workers: Option<u32>,
    pub per_pusher_worker: Option<f64>,
    /// Taken after the window (the senders stopped), and per second from the window's end to
    /// the last: the pushers' pace on a backlog, with no sends competing.
    pub after_window: u64,
    pub drained_per_second: Option<f64>,
    /// From the send (the sender's clock before its PUT) to the gateway taking it, for the
    /// messages sent in the window, whenever they arrived.
    pub latency_ms: Option<Summary>,
}

impl PushReport {
    pub fn table(&self) -> String {
        let mut out = format!(
            "pushes:     {} taken of {} expected, {} duplicates; {:.0}/s in the window",
            self.received, self.expected, self.duplicates, self.per_second
        );
        match (self.pusher_workers, self.per_pusher_worker) {
            (Some(0), _) => out.push_str(" (pushed by the master)"),
            (Some(workers), Some(each)) => {
                out.push_str(&format!(" ({each:.0}/s per pusher worker of {workers})"))
            }
            _ => {}
        }
        out.push('\n');
        if let Some(rate) = self.drained_per_second.filter(|_| self.after_window > 0) {
            out.push_str(&format!(
                "pushes after the window: {} at {rate:.0}/s (senders stopped)\n",
                self.after_window
            ));
        }
        if let Some(latency) = &self.latency_ms {
            out.push_str(&format!(
                "push latency (send to gateway): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} pushes)\n",
                latency.p50, latency.p90, latency.p99, latency.max, latency.count
            ));
        }
        out
    }
}
