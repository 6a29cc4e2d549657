//! Targeted wake-ups for long-polling `/sync` requests.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::StreamRow;

/// The listeners waiting on one key, by listener id.
type Waiting = HashMap<u64, Arc<Wake>>;

/// One listener's wake-up, and the trace of the row that woke it (when traces are exported).
#[derive(Default)]
struct Wake {
    notify: Notify,
    woken_by: Mutex<Option<Arc<str>>>,
}

/// Listeners keyed by room id and user id.
#[derive(Default)]
pub struct Notifier {
    next_id: AtomicU64,
    listeners: Mutex<HashMap<Arc<str>, Waiting>>,
}

/// A registration; dropping it unregisters. Register before reading the database, so a row
/// committed in between still wakes the listener (the `Notify` keeps the permit).
pub struct Listener {
    id: u64,
    keys: Vec<Arc<str>>,
    wake: Arc<Wake>,
    notifier: Arc<Notifier>,
}

impl Notifier {
    pub fn new() -> Arc<Notifier> {
        Arc::new(Notifier::default())
    }

    /// Registers a listener woken by rows for any of `keys` (room ids and user ids).
    pub fn listen(self: &Arc<Self>, keys: Vec<Arc<str>>) -> Listener {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Wake::default());
        let mut listeners = self.listeners.lock();
        for key in &keys {
            listeners.entry(key.clone()).or_default().insert(id, wake.clone());
        }
        Listener { id, keys, wake, notifier: self.clone() }
    }

    pub fn notify(&self, row: &StreamRow) {
        let listeners = self.listeners.lock();
        let keys = row.room_id.iter().chain(row.user_ids.iter());
        for key in keys {
            if let Some(waiting) = listeners.get(key) {
                for wake in waiting.values() {
                    if let Some(trace) = &row.trace {
                        *wake.woken_by.lock() = Some(trace.clone());
                    }
                    wake.notify.notify_one();
                }
            }
        }
    }

    /// Wakes every listener, e.g. when a reader reconnects and may have missed rows.
    pub fn notify_all(&self) {
        for waiting in self.listeners.lock().values() {
            for wake in waiting.values() {
                wake.notify.notify_one();
            }
        }
    }

    pub fn listener_count(&self) -> usize {
        self.listeners.lock().values().map(HashMap::len).sum()
    }
}

impl Listener {
    /// Waits until a row for one of the keys is published (or was, since registration).
    pub async fn notified(&self) {
        self.wake.notify.notified().await
    }

    /// The `traceparent` of the traced row that last woke this listener, taken.
    pub fn woken_by(&self) -> Option<Arc<str>> {
        self.wake.woken_by.lock().take()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut listeners = self.notifier.listeners.lock();
        for key in &self.keys {
            if let Some(waiting) = listeners.get_mut(key) {
                waiting.remove(&self.id);
                if waiting.is_empty() {
                    listeners.remove(key);
                }
            }
        }
    }
}
