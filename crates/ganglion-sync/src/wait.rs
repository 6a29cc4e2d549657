//! The long-poll: compute, and while the response is empty, wait for the notifier to report a
//! row for one of the user's rooms (or the user), then compute again from the same `since`.
//! The database is read once per wake-up, never polled.
//!
//! Invariant: a request waits only on a listener that was registered before its `next` was
//! captured, or while the positions still equal `next`, so a row published after the capture
//! (and so not in the response) always finds a listener to wake. A response that is not empty
//! needs no listener at all, which saves busy clients the registration.

use std::{collections::HashSet, sync::Arc, time::Duration};

use ganglion_replication::Listener;
use ganglion_types::{StreamKind, SyncToken};
use tokio::time::Instant;

use crate::{
    SyncState,
    compute::{self, SyncBatch, SyncError, SyncRequest},
};

/// A registration with the notifier and the rooms it covers.
struct Listening {
    listener: Listener,
    rooms: HashSet<Arc<str>>,
}

impl Listening {
    fn new(state: &SyncState, user_id: &str, rooms: &[Arc<str>]) -> Listening {
        let mut keys = Vec::with_capacity(rooms.len() + 1);
        keys.extend(rooms.iter().cloned());
        keys.push(Arc::from(user_id));
        Listening { listener: state.notifier.listen(keys), rooms: rooms.iter().cloned().collect() }
    }

    fn covers(&self, rooms: &[Arc<str>]) -> bool {
        rooms.iter().all(|room| self.rooms.contains(room))
    }
}

/// The response to `request`, waiting up to `timeout` for one that is not empty. On timeout the
/// (empty) response still moves `next_batch` to the current positions.
pub(crate) async fn sync_within(
    state: &SyncState,
    request: &SyncRequest<'_>,
    timeout: Duration,
) -> Result<SyncBatch, SyncError> {
    let deadline = Instant::now() + timeout;
    // `full_state` answers at once, as the spec asks.
    let waits = !timeout.is_zero() && !request.full_state;
    // A device that polls again right after an answer waits out the answer interval, so the
    // events of that interval share one answer instead of one answer each.
    let interval = Duration::from_millis(state.config.sync.answer_interval_ms);
    if waits
        && let Some(since) = &request.since
        && !interval.is_zero()
        && let Some(last) = state.memory.last_answer(request.user_id, request.device_id)
        && let Some(until) =
            hold_until(state, since, request.filter.timeline_limit(), last, last.0 + interval)
    {
        tokio::time::sleep_until(until.min(deadline)).await;
    }
    let batch = long_poll(state, request, deadline, waits).await;
    if !interval.is_zero() {
        state.memory.answered(request.user_id, request.device_id, state.positions.get(StreamKind::Events).0);
    }
    batch
}

/// Until when to hold a device last answered at `last` (events position `last_position`) that
/// already has events owed: the end of its interval, brought forward to when, at the rate events
/// arrived since (in any room),
/// the answer will hold as many events as one room's timeline takes. Held any longer, a room
/// might come back `limited` and cost the client a backfill, so clients with small timeline
/// limits are held only while traffic is light.
fn hold_until(
    state: &SyncState,
    since: &SyncToken,
    timeline_limit: usize,
    (last, last_position): (Instant, i64),
    end: Instant,
) -> Option<Instant> {
    let now = Instant::now();
    if end <= now {
        return None;
    }
    let current = state.positions.get(StreamKind::Events).0;
    let owed = u32::try_from(current - since.events.0).unwrap_or(0);
    // Nothing new yet: the long-poll answers the first event at once, as when traffic is light.
    if owed == 0 {
        return None;
    }
    let room_left =
        u32::try_from(timeline_limit).unwrap_or(u32::MAX).checked_sub(owed).filter(|left| *left > 0)?;
    let Some(arrived) = u32::try_from(current - last_position).ok().filter(|arrived| *arrived > 0) else {
        return Some(end);
    };
    let until = ((now - last) / arrived).checked_mul(room_left).and_then(|hold| now.checked_add(hold));
    Some(until.map_or(end, |until| until.min(end)))
}

async fn long_poll(
    state: &SyncState,
    request: &SyncRequest<'_>,
    deadline: Instant,
    waits: bool,
) -> Result<SyncBatch, SyncError> {
    let mut listening: Option<Listening> = None;
    let _waiting = waits.then(|| state.metrics.waiting());
    // When news last woke this long-poll: its answer is timed from then.
    let mut woke: Option<Woke> = None;
    // A client polling right after its last response usually finds nothing new: when no stream
    // moved past `since`, listen first and compute only once something arrives.
    if waits && let Some(since) = &request.since {
        let current = state.positions.current();
        if compute::next_token(current, Some(since)) == *since {
            let rooms = compute::joined_room_ids(state, request.user_id).await?;
            let fresh = listening.insert(Listening::new(state, request.user_id, &rooms));
            if state.positions.current() == current {
                woke = woken(
                    state,
                    &fresh.listener,
                    tokio::time::timeout_at(deadline, fresh.listener.notified()).await,
                );
            }
        }
    }
    loop {
        let current = state.positions.current();
        let next = compute::next_token(current, request.since.as_ref());
        let batch = compute::sync_batch(state, request, next).await?;
        if !waits || !batch.is_empty() || Instant::now() >= deadline {
            if let Some(woke) = &woke
                && !batch.is_empty()
            {
                state.metrics.answered(woke.at.elapsed());
            }
            return Ok(batch);
        }
        match &listening {
            Some(listening) if listening.covers(&batch.joined_room_ids) => {
                // On timeout, compute once more: the loop then returns as the deadline passed.
                woke = woken(
                    state,
                    &listening.listener,
                    tokio::time::timeout_at(deadline, listening.listener.notified()).await,
                );
            }
            _ => {
                // The first empty response (or the user joined a room): the rooms are known only
                // now, after `next` was captured. A row published in between found no listener,
                // so wait only if nothing moved since; otherwise compute again right away.
                let fresh = listening.insert(Listening::new(state, request.user_id, &batch.joined_room_ids));
                if state.positions.current() == current {
                    woke = woken(
                        state,
                        &fresh.listener,
                        tokio::time::timeout_at(deadline, fresh.listener.notified()).await,
                    );
                }
            }
        }
    }
}

/// When news woke a long-poll; with traces exported, the span from then to its answer, a child of
/// the span that wrote the row (one client's send is traced to the moment it woke another's
/// `/sync`).
struct Woke {
    at: Instant,
    _span: tracing::Span,
}

/// Counts a wait that ended with news rather than its deadline, and says when it did.
fn woken(
    state: &SyncState,
    listener: &Listener,
    waited: Result<(), tokio::time::error::Elapsed>,
) -> Option<Woke> {
    let by = listener.woken_by();
    waited.ok()?;
    state.metrics.woken();
    let span = match by {
        Some(parent) if ganglion_telemetry::exporting() => {
            let span = tracing::info_span!("sync.woken", otel.name = "sync woken", otel.kind = "internal");
            ganglion_telemetry::continue_trace(&span, &parent);
            span
        }
        _ => tracing::Span::none(),
    };
    Some(Woke { at: Instant::now(), _span: span })
}
