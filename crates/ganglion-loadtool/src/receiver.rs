//! One device's `/sync` long-poll loop: an initial sync, then incremental syncs until told to
//! stop, recording when each load message from someone else arrived, in a room's timeline or
//! among the to-device events.
//!
//! It only records; fan-out latencies and completeness are worked out in `report` once every
//! sender's records are in. A 429 is waited out with `backoff` (the server's hint, at least an
//! exponential back-off), never retried at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::header::HeaderValue;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{oneshot, watch};

use crate::backoff::Backoff;
use crate::clock;
use crate::matrix::{Api, ErrorCounts, Reply, Session};
use crate::run::Counters;

/// How long the server may hold an incremental `/sync` open.
pub const LONG_POLL_TIMEOUT_MS: u64 = 30_000;

/// Pause after a failed `/sync` before the next one, so that a broken server is not spun on.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The inline `/sync` filter for --timeline-limit and --lazy-load-members, or `None` for
/// neither: `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":L}}}` or a part of
/// it. Built as JSON, not pasted together; `Api::sync` percent-encodes it into `?filter=`, where
/// Synapse and Ganglion both take a value starting with `{` as an inline filter.
pub fn sync_filter(timeline_limit: Option<u32>, lazy_load_members: bool) -> Option<String> {
    let mut room = serde_json::Map::new();
    if lazy_load_members {
        room.insert("state".to_owned(), serde_json::json!({ "lazy_load_members": true }));
    }
    if let Some(limit) = timeline_limit {
        room.insert("timeline".to_owned(), serde_json::json!({ "limit": limit }));
    }
    (!room.is_empty()).then(|| serde_json::json!({ "room": room }).to_string())
}

/// The fields of message content that the senders add, to find their messages in a timeline.
#[derive(Debug, Deserialize)]
pub struct LoadContent {
    pub load_run: String,
    pub load_sender: u32,
    pub load_seq: u32,
    /// Clock reading (see `clock`) just before the sender's PUT.
    pub ts_ns: u64,
}

#[derive(Deserialize)]
struct SyncResponse {
    next_batch: String,
    #[serde(default)]
    rooms: Rooms,
    #[serde(default)]
    to_device: ToDevice,
}

#[derive(Default, Deserialize)]
struct ToDevice {
    /// The same three fields as a timeline event.
    #[serde(default)]
    events: Vec<TimelineEvent>,
}

#[derive(Default, Deserialize)]
struct Rooms {
    #[serde(default)]
    join: HashMap<String, JoinedRoom>,
}

#[derive(Default, Deserialize)]
struct JoinedRoom {
    #[serde(default)]
    timeline: Timeline,
}

#[derive(Default, Deserialize)]
struct Timeline {
    #[serde(default)]
    events: Vec<TimelineEvent>,
    #[serde(default)]
    limited: bool,
}

#[derive(Deserialize)]
struct TimelineEvent {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    sender: String,
    /// Parsed only for messages from others, and only into [`LoadContent`].
    content: Option<Box<RawValue>>,
}

/// One message from another member, as this user's `/sync` saw it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub sender: u32,
    pub seq: u32,
    pub ts_ns: u64,
    pub received_ns: u64,
}

#[derive(Debug, Default)]
pub struct ReceiverOutcome {
    pub deliveries: Vec<Delivery>,
    /// Incremental syncs with at least one `limited` timeline: the server skipped events, so
    /// some deliveries are missing by design of the response, not lost.
    pub limited_timelines: u64,
    pub requests: u64,
    /// When each successful incremental `/sync` answer had arrived (clock ns), to count the
    /// answers inside the measured window.
    pub answers_ns: Vec<u64>,
    pub errors: ErrorCounts,
    /// Successful incremental syncs by the process that answered (`X-Ganglion-Instance`, or
    /// `unknown`); few entries, so a list.
    pub answers_by_instance: Vec<(String, u64)>,
    /// Successful incremental syncs that Ganglion answered from memory alone, and with the
    /// database (`X-Ganglion-Sync-Source`); other servers say neither.
    pub from_memory: u64,
    pub from_database: u64,
}

impl ReceiverOutcome {
    fn count_answer(&mut self, instance: Option<&str>) {
        let instance = instance.unwrap_or("unknown");
        match self.answers_by_instance.iter_mut().find(|(name, _)| name == instance) {
            Some((_, count)) => *count += 1,
            None => self.answers_by_instance.push((instance.to_owned(), 1)),
        }
    }
}

pub struct Receiver {
    pub api: Api,
    pub session: Session,
    pub run_id: Arc<str>,
    /// The type of the load messages: `m.room.message`, or `m.room.encrypted` for encrypted
    /// rooms and to-device messages.
    pub event_type: &'static str,
    /// Inline filter JSON, if any.
    pub filter: Option<Arc<str>>,
    pub counters: Arc<Counters>,
}

impl Receiver {
    /// Runs the initial sync, reports its duration (or why it failed) on `initial`, then
    /// long-polls until `stop` turns true.
    pub async fn run(
        self,
        initial: oneshot::Sender<anyhow::Result<Duration>>,
        mut stop: watch::Receiver<bool>,
    ) -> ReceiverOutcome {
        let mut outcome = ReceiverOutcome::default();
        let mut since = match self.initial_sync(&mut outcome).await {
            Ok((since, took)) => {
                let _ = initial.send(Ok(took));
                since
            }
            Err(error) => {
                let _ = initial.send(Err(error));
                return outcome;
            }
        };
        let mut backoff = Backoff::default();
        loop {
            if *stop.borrow_and_update() {
                break;
            }
            let request =
                self.api.sync(&self.session, Some(&since), LONG_POLL_TIMEOUT_MS, self.filter.as_deref());
            let reply = tokio::select! {
                biased;
                _ = stop.changed() => break,
                reply = request => reply,
            };
            outcome.requests += 1;
            if !matches!(reply, Ok(Reply::RateLimited(_))) {
                backoff.reset();
            }
            let pause = match reply {
                Ok(Reply::Ok { body, received_ns, instance, source }) => {
                    match serde_json::from_slice::<SyncResponse>(&body) {
                        Ok(response) => {
                            outcome.answers_ns.push(received_ns);
                            self.counters.sync_answers.fetch_add(1, Ordering::Relaxed);
                            outcome.count_answer(instance.as_ref().and_then(|value| value.to_str().ok()));
                            match source.as_ref().map(HeaderValue::as_bytes) {
                                Some(b"memory") => outcome.from_memory += 1,
                                Some(b"database") => outcome.from_database += 1,
                                _ => {}
                            }
                            self.collect(&response, received_ns, &mut outcome);
                            since = response.next_batch;
                            None
                        }
                        Err(error) => {
                            outcome.errors.bad_body(&error);
                            Some(RETRY_PAUSE)
                        }
                    }
                }
                Ok(Reply::RateLimited(asked)) => {
                    outcome.errors.rate_limited += 1;
                    Some(backoff.rate_limited(asked))
                }
                Ok(Reply::Failed { status, body }) => {
                    outcome.errors.failed(status, &body);
                    Some(RETRY_PAUSE)
                }
                Err(error) => {
                    outcome.errors.transport(&error);
                    Some(RETRY_PAUSE)
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    biased;
                    _ = stop.changed() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        outcome
    }

    /// The first `/sync`, without `since`. Returns `next_batch` and how long the server took,
    /// from sending the request to having the whole body. 429s are waited out (with back-off) and
    /// retried; any other failure fails the run, since a user without a sync loop would skew
    /// every figure.
    async fn initial_sync(&self, outcome: &mut ReceiverOutcome) -> anyhow::Result<(String, Duration)> {
        let mut backoff = Backoff::default();
        loop {
            let started_ns = clock::now_ns();
            let reply = self.api.sync(&self.session, None, 0, self.filter.as_deref()).await;
            outcome.requests += 1;
            match reply {
                Ok(Reply::Ok { body, received_ns, .. }) => {
                    let response: SyncResponse = serde_json::from_slice(&body).map_err(|error| {
                        anyhow::anyhow!("initial sync of {}: {error}", self.session.user_id)
                    })?;
                    let took = Duration::from_nanos(received_ns.saturating_sub(started_ns));
                    return Ok((response.next_batch, took));
                }
                Ok(Reply::RateLimited(asked)) => {
                    outcome.errors.rate_limited += 1;
                    tokio::time::sleep(backoff.rate_limited(asked)).await;
                }
                Ok(Reply::Failed { status, body }) => {
                    anyhow::bail!("initial sync of {}: {status}: {body}", self.session.user_id)
                }
                Err(error) => {
                    anyhow::bail!("initial sync of {}: {error:#}", self.session.user_id)
                }
            }
        }
    }

    fn collect(&self, response: &SyncResponse, received_ns: u64, outcome: &mut ReceiverOutcome) {
        let mut found = 0;
        let timelines = response.rooms.join.values().flat_map(|room| &room.timeline.events);
        for event in timelines.chain(&response.to_device.events) {
            if event.event_type != self.event_type || event.sender == self.session.user_id {
                continue;
            }
            let Some(content) = &event.content else {
                continue;
            };
            // Anything that does not parse is someone else's message, not a load message.
            let Ok(load) = serde_json::from_str::<LoadContent>(content.get()) else {
                continue;
            };
            if load.load_run != *self.run_id {
                continue;
            }
            outcome.deliveries.push(Delivery {
                sender: load.load_sender,
                seq: load.load_seq,
                ts_ns: load.ts_ns,
                received_ns,
            });
            found += 1;
        }
        if response.rooms.join.values().any(|room| room.timeline.limited) {
            outcome.limited_timelines += 1;
        }
        self.counters.delivered.fetch_add(found, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
