//! How new stream rows reach readers. A stream's single writer commits rows to the database,
//! then publishes a [`StreamRow`] on the [`Bus`]; readers track [`Positions`] (how far each
//! stream is readable) and wake waiting `/sync` requests through the [`Notifier`], which wakes
//! only the requests that care about the row's room or user.
//!
//! This crate ships the in-process bus used by `role = "all"`. Invariant: a position is
//! published only after its rows are committed, so a reader never waits on the database for a
//! position it has been told about.

mod notifier;
mod recent;
pub mod redis;
mod typing;

pub use notifier::{Listener, Notifier};
pub use recent::{Notice, RecentEvents};
pub use typing::TypingStore;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A reader that learns of rows from another process and can be asked to catch up.
pub trait CatchUp: Send + Sync + 'static {
    /// Waits (at most `limit`) until this process has every committed row up to `token`,
    /// reading the database when Redis is slow. False when it could not (database down).
    fn reach(&self, token: SyncToken, limit: Duration) -> BoxFuture<'_, bool>;
}

use ganglion_types::{EventNid, StreamKind, StreamPosition, SyncToken};

/// A new row on a stream, as readers learn of it.
#[derive(Debug, Clone)]
pub struct StreamRow {
    pub kind: StreamKind,
    pub position: StreamPosition,
    /// The room the row belongs to, if any: wakes the room's listeners.
    pub room_id: Option<Arc<str>>,
    /// Users the row concerns directly (account data owner, membership target): wakes them even
    /// when they are not (yet) in the room. The `Notifier` treats every entry as a key, so a
    /// presence row lists its user and the room ids of the rooms the user is joined to: the
    /// long-polls of everyone who shares a room with them wake. (A row caught up from the
    /// database carries its user only.)
    pub user_ids: Vec<Arc<str>>,
    /// For rows of the events stream: the event.
    pub event_nid: Option<EventNid>,
    /// The event's row, when the writer has it at hand: other processes cache it from the
    /// replication entry instead of reading it back from the database.
    pub event: Option<Arc<ganglion_storage::events::EventRow>>,
    /// With `event`: the (device id, transaction id) a client sent it with, `None` for none.
    pub event_txn: Option<(Arc<str>, Arc<str>)>,
    /// For rows of the receipts stream, when the writer has it at hand: the receipt.
    pub receipt: Option<Arc<ganglion_storage::streams::ReceiptRow>>,
    /// False for a presence or device-list row caught up from the database, which lists its user
    /// but not the rooms the user was in: readers' memory cannot tell who it concerns.
    pub keys_complete: bool,
    /// The `traceparent` of the span that wrote the row, when traces are exported: carried to the
    /// workers in the Redis entry, and to the long-polls the row wakes.
    pub trace: Option<Arc<str>>,
    /// For rows of the events stream, when the writer has it at hand: the users of this server
    /// the event notified. `None` (a row caught up from the database) means unknown.
    pub push: Option<Arc<Notified>>,
}

/// Whom an event notified, as the master's push rules decided: readers keep unread counts
/// up to date from these without asking the database.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notified {
    /// The thread root's event id for an event in a thread, else `main`.
    pub thread_id: Arc<str>,
    /// `(user id, highlight)`.
    pub users: Vec<(Arc<str>, bool)>,
}

impl StreamRow {
    /// A row of a stream other than events.
    pub fn new(
        kind: StreamKind,
        position: StreamPosition,
        room_id: Option<&str>,
        user_ids: Vec<Arc<str>>,
    ) -> Self {
        StreamRow {
            kind,
            position,
            room_id: room_id.map(Arc::from),
            user_ids,
            event_nid: None,
            event: None,
            event_txn: None,
            receipt: None,
            keys_complete: true,
            trace: None,
            push: None,
        }
    }

    /// A row of the receipts stream carrying its receipt.
    pub fn receipt(receipt: ganglion_storage::streams::ReceiptRow) -> Self {
        let mut row = StreamRow::new(
            StreamKind::Receipts,
            StreamPosition(receipt.stream_pos),
            Some(&receipt.room_id),
            vec![Arc::from(receipt.user_id.as_str())],
        );
        row.receipt = Some(Arc::new(receipt));
        row
    }

    /// The (device id, transaction id) the event of this row was sent with.
    pub fn with_txn(mut self, txn: Option<(&str, &str)>) -> Self {
        self.event_txn = txn.map(|(device, txn_id)| (Arc::from(device), Arc::from(txn_id)));
        self
    }

    pub fn with_trace(mut self, trace: Option<Arc<str>>) -> Self {
        self.trace = trace;
        self
    }

    /// Whom the event of this row notified.
    pub fn with_push(mut self, push: Notified) -> Self {
        self.push = Some(Arc::new(push));
        self
    }

    /// A row read back from the database without the rooms its writer woke.
    pub fn without_rooms(mut self) -> Self {
        self.keys_complete = false;
        self
    }

    /// A row of the events stream. A member event also concerns its target, who may not be in
    /// the room (yet) and must be woken all the same.
    pub fn event(
        position: StreamPosition,
        room_id: &str,
        event_nid: EventNid,
        event_type: &str,
        state_key: Option<&str>,
        event: Option<Arc<ganglion_storage::events::EventRow>>,
    ) -> Self {
        let user_ids = match (state_key, event_type) {
            (Some(target), "m.room.member") => vec![Arc::from(target)],
            _ => Vec::new(),
        };
        StreamRow {
            kind: StreamKind::Events,
            position,
            room_id: Some(Arc::from(room_id)),
            user_ids,
            event_nid: Some(event_nid),
            event,
            event_txn: None,
            receipt: None,
            keys_complete: true,
            trace: None,
            push: None,
        }
    }
}

/// A cached entry that other processes must drop after a committed change (the `caches`
/// stream). The writer has already dropped its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// Access tokens were revoked: forget every cached session.
    Sessions,
    /// The event was redacted: its cached copy is stale.
    Event(EventNid),
    /// A device's one-time or fallback keys were uploaded or claimed: its cached counts are stale.
    KeyCounts { user_id: Arc<str>, device_id: Arc<str> },
    /// Key count invalidations may have been missed: every cached count is stale.
    AllKeyCounts,
}

/// Where writers publish committed rows.
pub trait Bus: Send + Sync + 'static {
    fn publish(&self, row: StreamRow);

    /// Tells other processes to drop a cache entry. In one process there is nothing to do: the
    /// writer shares its caches with the readers.
    fn invalidate(&self, _what: Invalidation) {}

    /// Resolves once what was published so far has been handed to the other processes (or a
    /// short while passed), for a write whose effect on their caches its caller must be able
    /// to read right after the answer. In one process there is nothing to wait for.
    fn flushed(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Publishes rows committed together; readers see all of them before any wake-up, so a
    /// woken `/sync` returns the whole batch at once.
    fn publish_all(&self, rows: Vec<StreamRow>) {
        for row in rows {
            self.publish(row);
        }
    }
}

/// How far each stream is readable in this process.
#[derive(Debug)]
pub struct Positions {
    /// One per stream, in `StreamKind::all()` order.
    streams: [AtomicI64; StreamKind::all().len()],
    typing_epoch: AtomicU64,
    /// Woken on every advance, for requests waiting to reach a position.
    advanced: Notify,
}

impl Positions {
    pub fn new(initial: SyncToken) -> Positions {
        Positions {
            streams: StreamKind::all().map(|kind| AtomicI64::new(initial.get(kind).0)),
            typing_epoch: AtomicU64::new(initial.typing_epoch),
            advanced: Notify::new(),
        }
    }

    fn slot(&self, kind: StreamKind) -> &AtomicI64 {
        &self.streams[kind as usize]
    }

    pub fn get(&self, kind: StreamKind) -> StreamPosition {
        StreamPosition(self.slot(kind).load(Ordering::Acquire))
    }

    /// Moves a stream forward; never backwards.
    pub fn advance(&self, kind: StreamKind, position: StreamPosition) {
        if self.slot(kind).fetch_max(position.0, Ordering::AcqRel) < position.0 {
            self.advanced.notify_waiters();
        }
    }

    /// A follower learned that the typing stream's writer restarted (or first met it): typing
    /// positions start again in the new epoch.
    pub fn reset_typing(&self, epoch: u64, position: StreamPosition) {
        self.typing_epoch.store(epoch, Ordering::Release);
        self.slot(StreamKind::Typing).store(position.0, Ordering::Release);
        self.advanced.notify_waiters();
    }

    /// Whether every stream of `token` is readable here. Typing counts only within one epoch:
    /// a token from another epoch is answered from the current typing state anyway.
    pub fn has_reached(&self, token: &SyncToken) -> bool {
        StreamKind::all().into_iter().all(|kind| {
            kind == StreamKind::Typing && token.typing_epoch != self.typing_epoch()
                || self.get(kind) >= token.get(kind)
        })
    }

    /// Waits until `has_reached(token)`, at most `limit`.
    pub async fn wait_for(&self, token: &SyncToken, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let advanced = self.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            if self.has_reached(token) {
                return true;
            }
            if tokio::time::timeout_at(deadline, advanced).await.is_err() {
                return self.has_reached(token);
            }
        }
    }

    /// The current token: every stream at its readable position.
    pub fn current(&self) -> SyncToken {
        let mut token = SyncToken { typing_epoch: self.typing_epoch(), ..SyncToken::default() };
        for kind in StreamKind::all() {
            token.set(kind, self.get(kind));
        }
        token
    }

    pub fn typing_epoch(&self) -> u64 {
        self.typing_epoch.load(Ordering::Acquire)
    }
}

/// The bus of `role = "all"`: publishing advances this process's positions and wakes listeners.
pub struct InProcessBus {
    positions: Arc<Positions>,
    notifier: Arc<Notifier>,
    recent: Arc<RecentEvents>,
}

impl InProcessBus {
    pub fn new(
        positions: Arc<Positions>,
        notifier: Arc<Notifier>,
        recent: Arc<RecentEvents>,
    ) -> InProcessBus {
        InProcessBus { positions, notifier, recent }
    }

    fn record(&self, row: &StreamRow) {
        match (row.kind, &row.room_id, row.event_nid) {
            (StreamKind::Events, Some(room_id), Some(event_nid)) => {
                self.recent.record(room_id, row.position.0, event_nid, &row.user_ids);
                self.recent.record_notices(room_id, row.position.0, row.push.as_deref());
            }
            (StreamKind::Events | StreamKind::Typing, _, _) => {}
            (StreamKind::Receipts, Some(room_id), _) => {
                self.recent.record_keys(row.kind, row.position.0, std::slice::from_ref(room_id), true);
                self.recent.record_receipt(room_id, row.position.0, row.receipt.as_ref());
            }
            (kind, _, _) => self.recent.record_keys(kind, row.position.0, &row.user_ids, row.keys_complete),
        }
    }
}

impl Bus for InProcessBus {
    fn publish(&self, row: StreamRow) {
        self.record(&row);
        self.positions.advance(row.kind, row.position);
        self.notifier.notify(&row);
    }

    fn publish_all(&self, rows: Vec<StreamRow>) {
        for row in &rows {
            self.record(row);
            self.positions.advance(row.kind, row.position);
        }
        for row in &rows {
            self.notifier.notify(row);
        }
    }
}

#[cfg(test)]
mod tests;
