//! One closed-loop sender: sends the next message as soon as the last one was answered (or, when
//! paced, at its next slot if that is later), round-robin over its user's rooms or to every
//! recipient device at once, until told to stop. It records every attempt's outcome by sequence
//! number so that `report` can match receivers' deliveries against it. A 429 is waited out with
//! `backoff` (the server's hint, at least an exponential back-off) and the same transaction
//! retried, never at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::{Map, Value, json};

use crate::backoff::Backoff;
use crate::clock;
use crate::e2ee::{self, MegolmSession, Noise};
use crate::matrix::{Api, ErrorCounts, Reply, Session};
use crate::run::Counters;

/// The type of the load messages into unencrypted rooms.
pub const PLAIN_EVENT_TYPE: &str = "m.room.message";
/// The type of the load messages into encrypted rooms, and of those to devices.
pub const ENCRYPTED_EVENT_TYPE: &str = "m.room.encrypted";

/// Pause after a failed send, so that a broken server is not spun on.
const FAILURE_PAUSE: Duration = Duration::from_millis(50);
/// How often a long wait checks whether the run is over.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// A room this sender writes to, and how many other members should see each message: its
/// syncing members other than the sender.
#[derive(Debug, Clone)]
pub struct TargetRoom {
    pub room_id: String,
    pub other_members: u32,
}

/// A device that receives every to-device message.
#[derive(Debug, Clone)]
pub struct TargetDevice {
    pub user_id: String,
    pub device_id: String,
    /// Its (made-up) curve25519 identity key, which an olm message names.
    pub identity_key: String,
}

/// What a sender sends.
#[derive(Debug, Clone)]
pub enum Traffic {
    /// One event per send, round-robin over its user's rooms: `m.room.message`, or with a
    /// megolm session an `m.room.encrypted` event shaped like a megolm one.
    Rooms { rooms: Vec<TargetRoom>, megolm: Option<MegolmSession> },
    /// One `/sendToDevice` per send, with an `m.room.encrypted` message shaped like an olm one
    /// for each device.
    ToDevice { devices: Arc<[TargetDevice]>, identity_key: String },
}

impl Traffic {
    /// Who should receive send `seq`: its room's other members, or every device.
    fn recipients(&self, seq: u32) -> u32 {
        match self {
            Traffic::Rooms { rooms, .. } => rooms[seq as usize % rooms.len()].other_members,
            Traffic::ToDevice { devices, .. } => u32::try_from(devices.len()).unwrap_or(u32::MAX),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Traffic::Rooms { rooms, .. } => rooms.is_empty(),
            Traffic::ToDevice { devices, .. } => devices.is_empty(),
        }
    }
}

/// The outcome of the message with this sequence number.
#[derive(Debug, Clone, Copy)]
pub struct SendRecord {
    /// Clock reading before the PUT that was answered (after any 429s); it is also the `ts_ns`
    /// in the message.
    pub start_ns: u64,
    /// Clock reading once the 2xx answer was read; `None` if the send failed.
    pub ack_ns: Option<u64>,
    pub other_members: u32,
}

#[derive(Debug, Default)]
pub struct SenderOutcome {
    /// Indexed by sequence number.
    pub records: Vec<SendRecord>,
    pub errors: ErrorCounts,
}

pub struct Sender {
    pub api: Api,
    pub session: Session,
    pub index: u32,
    pub traffic: Traffic,
    pub run_id: Arc<str>,
    pub counters: Arc<Counters>,
    /// `(period, first slot)`: send at most once per period, from the first slot on.
    pub pace: Option<(Duration, Instant)>,
}

impl Sender {
    pub async fn run(self, stop: Arc<AtomicBool>) -> SenderOutcome {
        let mut outcome = SenderOutcome::default();
        if self.traffic.is_empty() {
            return outcome;
        }
        let mut noise = Noise::new(u64::from(self.index));
        let mut seq: u32 = 0;
        let mut next_slot = self.pace.map(|(_, first)| first);
        while !stop.load(Ordering::Relaxed) {
            if let (Some((period, _)), Some(slot)) = (self.pace, next_slot.as_mut()) {
                tokio::time::sleep_until(*slot).await;
                // A sender that fell behind starts afresh rather than bursting to catch up.
                *slot = (*slot + period).max(Instant::now());
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            let record = self.send_one(seq, &stop, &mut noise, &mut outcome.errors).await;
            if record.ack_ns.is_some() {
                self.counters.acked.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .expected_deliveries
                    .fetch_add(u64::from(record.other_members), Ordering::Relaxed);
            } else {
                tokio::time::sleep(FAILURE_PAUSE).await;
            }
            outcome.records.push(record);
            let Some(next) = seq.checked_add(1) else {
                break;
            };
            seq = next;
        }
        outcome
    }

    /// Sends message `seq`. A 429 is waited out (with back-off over the 429s in a row) and the
    /// same transaction retried with a fresh `ts_ns`, so latencies measure the attempt the server
    /// accepted and waits show up as counted 429s instead.
    async fn send_one(
        &self,
        seq: u32,
        stop: &AtomicBool,
        noise: &mut Noise,
        errors: &mut ErrorCounts,
    ) -> SendRecord {
        let txn_id = format!("{}.{}.{seq}", self.run_id, self.index);
        let other_members = self.traffic.recipients(seq);
        let mut backoff = Backoff::default();
        loop {
            let start_ns = clock::now_ns();
            let mut record = SendRecord { start_ns, ack_ns: None, other_members };
            let reply = match &self.traffic {
                Traffic::Rooms { rooms, megolm } => {
                    let room_id = &rooms[seq as usize % rooms.len()].room_id;
                    let content = json!({
                        "msgtype": "m.text",
                        "body": format!("load message {seq} from sender {}", self.index),
                        "load_run": &*self.run_id,
                        "load_sender": self.index,
                        "load_seq": seq,
                        "ts_ns": start_ns,
                    });
                    match megolm {
                        None => {
                            let api = &self.api;
                            api.send_event(&self.session, room_id, PLAIN_EVENT_TYPE, &txn_id, &content).await
                        }
                        Some(megolm) => {
                            // What a client encrypts: the event it would have sent, with its room.
                            let plaintext =
                                json!({ "type": PLAIN_EVENT_TYPE, "content": content, "room_id": room_id });
                            let plaintext_bytes = plaintext.to_string().len();
                            let encrypted =
                                megolm.content(plaintext_bytes, noise, self.markers(seq, start_ns));
                            let api = &self.api;
                            api.send_event(&self.session, room_id, ENCRYPTED_EVENT_TYPE, &txn_id, &encrypted)
                                .await
                        }
                    }
                }
                Traffic::ToDevice { devices, identity_key } => {
                    let mut messages: Map<String, Value> = Map::new();
                    for device in devices.iter() {
                        let markers = self.markers(seq, start_ns);
                        let content = e2ee::olm_content(identity_key, &device.identity_key, noise, markers);
                        let by_device = messages.entry(device.user_id.clone()).or_insert_with(|| json!({}));
                        by_device[device.device_id.as_str()] = content;
                    }
                    let body = json!({ "messages": messages });
                    self.api.send_to_device(&self.session, ENCRYPTED_EVENT_TYPE, &txn_id, &body).await
                }
            };
            match reply {
                Ok(Reply::Ok { received_ns, .. }) => {
                    record.ack_ns = Some(received_ns);
                    return record;
                }
                Ok(Reply::RateLimited(asked)) => {
                    errors.rate_limited += 1;
                    sleep_unless_stopped(backoff.rate_limited(asked), stop).await;
                    if stop.load(Ordering::Relaxed) {
                        return record;
                    }
                }
                Ok(Reply::Failed { status, body }) => {
                    errors.failed(status, &body);
                    return record;
                }
                Err(error) => {
                    errors.transport(&error);
                    return record;
                }
            }
        }
    }

    /// The fields by which receivers find message `seq` (see `receiver::LoadContent`), carried
    /// in the clear beside the ciphertext.
    fn markers(&self, seq: u32, start_ns: u64) -> Map<String, Value> {
        let mut markers = Map::new();
        markers.insert("load_run".into(), json!(&*self.run_id));
        markers.insert("load_sender".into(), json!(self.index));
        markers.insert("load_seq".into(), json!(seq));
        markers.insert("ts_ns".into(), json!(start_ns));
        markers
    }
}

/// Sleeps `wait`, or less if `stop` turns true meanwhile (a server may ask for long waits).
pub async fn sleep_unless_stopped(wait: Duration, stop: &AtomicBool) {
    let until = Instant::now() + wait;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            break;
        }
        tokio::time::sleep((until - now).min(STOP_CHECK)).await;
    }
}
