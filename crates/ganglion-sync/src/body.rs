//! Writing a sync response. The `join` section's events are written from their shared
//! serialised form ([`SharedClientEvent`]), so an event that reaches a hundred long-polls is
//! serialised once, not a hundred times; everything else is small and goes through serde.

use std::sync::Arc;

use ganglion_state::SharedClientEvent;
use serde::Serialize;
use serde_json::Value;

/// One event of a response: its shared form, and this viewer's transaction id for it.
pub(crate) struct SyncEvent {
    pub shared: Arc<SharedClientEvent>,
    pub txn_id: Option<String>,
    /// The bundled aggregations (`unsigned.m.relations`), serialised, on a limited timeline.
    pub relations: Option<String>,
}

/// A joined room's section.
pub(crate) struct JoinedRoom {
    pub timeline: Vec<SyncEvent>,
    pub limited: bool,
    pub prev_batch: String,
    pub state: Vec<SyncEvent>,
    pub ephemeral: Vec<Value>,
    pub account_data: Vec<Value>,
    pub summary: Option<Value>,
    pub unread: crate::unread::Unread,
    /// Whether the filter asked for threads' counts apart (`unread_thread_notifications`).
    pub per_thread: bool,
}

/// A JSON object written member by member.
pub(crate) struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    pub(crate) fn open(out: &'a mut Vec<u8>) -> ObjectWriter<'a> {
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_value(self.out, key);
        self.out.push(b':');
        self.out
    }

    pub(crate) fn member(&mut self, key: &str, value: &(impl Serialize + ?Sized)) {
        let out = self.key(key);
        write_value(out, value);
    }

    /// A member whose value is an object written by `write`.
    pub(crate) fn object(&mut self, key: &str, write: impl FnOnce(&mut ObjectWriter<'_>)) {
        let out = self.key(key);
        let mut inner = ObjectWriter::open(out);
        write(&mut inner);
        inner.close();
    }

    /// A member whose value is the array of `events`, written as of `now_ms`.
    pub(crate) fn events(&mut self, key: &str, events: &[SyncEvent], now_ms: u64) {
        let out = self.key(key);
        out.push(b'[');
        for (index, event) in events.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            event.shared.write(out, now_ms, event.txn_id.as_deref(), event.relations.as_deref());
        }
        out.push(b']');
    }

    pub(crate) fn close(self) {
        self.out.push(b'}');
    }
}

fn write_value(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    // Serialising plain data into a Vec cannot fail (maps have string keys).
    let _ = serde_json::to_writer(out, value);
}

impl JoinedRoom {
    pub(crate) fn write(&self, object: &mut ObjectWriter<'_>, now_ms: u64) {
        object.object("timeline", |timeline| {
            timeline.events("events", &self.timeline, now_ms);
            timeline.member("limited", &self.limited);
            timeline.member("prev_batch", &self.prev_batch);
        });
        object.object("state", |state| state.events("events", &self.state, now_ms));
        object.object("ephemeral", |ephemeral| ephemeral.member("events", &self.ephemeral));
        object.object("account_data", |data| data.member("events", &self.account_data));
        object.member("unread_notifications", &self.unread.notifications_json(self.per_thread));
        if self.per_thread {
            object.member("unread_thread_notifications", &self.unread.threads_json());
        }
        if let Some(summary) = &self.summary {
            object.member("summary", summary);
        }
    }
}
