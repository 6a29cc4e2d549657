//! One closed-loop sender: sends the next message as soon as the last one was answered (or, when
//! paced, at its next slot if that is later), round-robin over its user's rooms, until told to
//! stop. It records every attempt's outcome by sequence
//! number so that `report` can match receivers' deliveries against it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::json;

use crate::clock;
use crate::matrix::{Api, ErrorCounts, Reply, Session};
use crate::run::Counters;

/// Pause after a failed send, so that a broken server is not spun on.
const FAILURE_PAUSE: Duration = Duration::from_millis(50);

/// A room this sender writes to, and how many other members should see each message.
#[derive(Debug, Clone)]
pub struct TargetRoom {
    pub room_id: String,
    pub other_members: u32,
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
    pub rooms: Vec<TargetRoom>,
    pub run_id: Arc<str>,
    pub counters: Arc<Counters>,
    /// `(period, first slot)`: send at most once per period, from the first slot on.
    pub pace: Option<(Duration, Instant)>,
}

impl Sender {
    pub async fn run(self, stop: Arc<AtomicBool>) -> SenderOutcome {
        let mut outcome = SenderOutcome::default();
        if self.rooms.is_empty() {
            return outcome;
        }
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
            let room = &self.rooms[seq as usize % self.rooms.len()];
            let record = self.send_one(room, seq, &stop, &mut outcome.errors).await;
            if record.ack_ns.is_some() {
                self.counters.acked.fetch_add(1, Ordering::Relaxed);
                self.counters.expected_deliveries.fetch_add(u64::from(room.other_members), Ordering::Relaxed);
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

    /// Sends message `seq`. A 429 is waited out and the same transaction retried with a fresh
    /// `ts_ns`, so latencies measure the attempt the server accepted and waits show up as
    /// counted 429s instead.
    async fn send_one(
        &self,
        room: &TargetRoom,
        seq: u32,
        stop: &AtomicBool,
        errors: &mut ErrorCounts,
    ) -> SendRecord {
        let txn_id = format!("{}.{}.{seq}", self.run_id, self.index);
        loop {
            let start_ns = clock::now_ns();
            let mut record = SendRecord { start_ns, ack_ns: None, other_members: room.other_members };
            let content = json!({
                "msgtype": "m.text",
                "body": format!("load message {seq} from sender {}", self.index),
                "load_run": &*self.run_id,
                "load_sender": self.index,
                "load_seq": seq,
                "ts_ns": start_ns,
            });
            match self.api.send_message(&self.session, &room.room_id, &txn_id, &content).await {
                Ok(Reply::Ok { received_ns, .. }) => {
                    record.ack_ns = Some(received_ns);
                    return record;
                }
                Ok(Reply::RateLimited(wait)) => {
                    errors.rate_limited += 1;
                    tokio::time::sleep(wait).await;
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
}
