//! A room's timeline in one sync: the newest events of a range of stream positions that pass
//! the timeline filter, and whether older events of the range were left out (a gap the `state`
//! section must cover).

use std::collections::HashSet;

use ganglion_state::{Caches, Snapshot, StoredEvent};
use ganglion_storage::{Connect, LazyConn, events as event_store};
use ganglion_types::{EventNid, RoomNid};

use crate::{compute::SyncError, filter::RoomEventFilter};

/// Events one timeline reads at most while skipping events its filter rejects; past it the
/// timeline is cut (marked `limited`) rather than scanning a huge history.
const SCAN_BUDGET: usize = 2000;

/// Where a timeline's events come from: the room's events with `after < stream_pos <= up_to`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range {
    pub after: i64,
    pub up_to: i64,
}

/// The newest events of a range, as read ahead (`(event_nid, stream_pos)`, newest first) and
/// whether the read was asked for `requested` events.
pub(crate) struct Window {
    pub newest_first: Vec<(EventNid, i64)>,
    pub requested: usize,
}

impl Window {
    /// Reads the newest `requested` events of a room's range.
    pub(crate) async fn read(
        conn: &mut LazyConn,
        room_nid: RoomNid,
        range: Range,
        requested: usize,
    ) -> Result<Window, SyncError> {
        let newest_first = event_store::event_nids_in_room_newest_first(
            conn.connection().await?,
            room_nid,
            range.after,
            range.up_to,
            requested as i64,
        )
        .await?;
        Ok(Window { newest_first, requested })
    }

    /// Whether the read returned every event of the range.
    fn is_whole_range(&self) -> bool {
        self.newest_first.len() < self.requested
    }
}

/// What a timeline keeps: at most `limit` events that pass the timeline filter and are not
/// non-state events of a user the viewer ignores.
pub(crate) struct Selection<'a> {
    pub filter: &'a RoomEventFilter,
    pub ignored: &'a HashSet<String>,
    pub limit: usize,
}

impl Selection<'_> {
    fn keeps(&self, event: &StoredEvent) -> bool {
        event_passes(self.filter, event) && !sent_by_ignored(self.ignored, event)
    }

    fn keeps_every_event(&self) -> bool {
        !self.filter.filters_events() && self.ignored.is_empty()
    }
}

/// Whether `event` is one the Ignoring Users module hides: a non-state event of an ignored
/// user (their state events stay, so the room looks the same to everyone).
pub(crate) fn sent_by_ignored(ignored: &HashSet<String>, event: &StoredEvent) -> bool {
    !ignored.is_empty() && !event.pdu.is_state() && ignored.contains(event.pdu.sender.as_str())
}

pub(crate) struct Timeline {
    /// Oldest first.
    pub events: Vec<StoredEvent>,
    /// More events passed the filter than the limit allows.
    pub limited: bool,
    /// Some event of the range older than the first timeline event is not in the timeline, so
    /// the state at the timeline's start may differ from the state at the range's start.
    pub gap: bool,
    /// The newest event of the range, whether or not it passed the filter.
    pub newest_in_range: Option<EventNid>,
}

impl Timeline {
    /// The `prev_batch` token: paginating backwards from it continues right before the first
    /// event of the timeline (a `p<N>` token reads positions `<= N`).
    pub(crate) fn prev_batch(&self, range: Range) -> String {
        let before = self.events.first().map_or(range.up_to, |first| first.row.stream_pos - 1);
        format!("p{before}")
    }

    /// The timeline of `room_id` in `range`: the newest `limit` events of `window` (read further
    /// back when the selection rejects some) that the selection keeps.
    pub(crate) async fn select(
        conn: &mut LazyConn,
        caches: &Caches,
        room: (RoomNid, &str),
        range: Range,
        window: Window,
        selection: &Selection<'_>,
    ) -> Result<Timeline, SyncError> {
        let (room_nid, room_id) = room;
        let limit = selection.limit;
        let newest_in_range = window.newest_first.first().map(|(nid, _)| *nid);
        if !selection.filter.allows_room(room_id) {
            let gap = newest_in_range.is_some();
            return Ok(Timeline { events: Vec::new(), limited: gap, gap, newest_in_range });
        }
        if selection.keeps_every_event() {
            // Every event passes: the window's newest `limit` are the timeline.
            let limited = window.newest_first.len() > limit;
            let nids: Vec<EventNid> =
                window.newest_first.iter().take(limit).rev().map(|(nid, _)| *nid).collect();
            let events = caches.events(conn, &nids).await?;
            return Ok(Timeline { events, limited, gap: limited, newest_in_range });
        }

        let mut matched: Vec<StoredEvent> = Vec::new();
        // Whether an event older than the oldest match was rejected (a gap if nothing older
        // matches).
        let mut rejected_after_last_match = false;
        let mut limited = false;
        let mut scanned = 0;
        let mut window = window;
        'scan: loop {
            let nids: Vec<EventNid> = window.newest_first.iter().map(|(nid, _)| *nid).collect();
            for event in caches.events(conn, &nids).await? {
                scanned += 1;
                if !selection.keeps(&event) {
                    rejected_after_last_match = true;
                    continue;
                }
                if matched.len() == limit {
                    limited = true;
                    break 'scan;
                }
                matched.push(event);
                rejected_after_last_match = false;
            }
            let Some(&(_, oldest_pos)) = window.newest_first.last() else { break };
            if window.is_whole_range() {
                break;
            }
            if scanned >= SCAN_BUDGET {
                limited = true;
                break;
            }
            let older = Range { after: range.after, up_to: oldest_pos - 1 };
            window = Window::read(conn, room_nid, older, (limit + 1).max(50)).await?;
        }
        matched.reverse();
        let gap = limited || rejected_after_last_match;
        Ok(Timeline { events: matched, limited, gap, newest_in_range })
    }

    /// The room's state at the start of this timeline (before its first event; after the
    /// range's newest event when the timeline is empty).
    pub(crate) async fn state_at_start(
        &self,
        conn: &mut LazyConn,
        caches: &Caches,
        room_nid: RoomNid,
        range: Range,
    ) -> Result<Snapshot, SyncError> {
        if let Some(first) = self.events.first() {
            // A non-state event does not change the state: the state after it is the state
            // before it.
            if !first.pdu.is_state() {
                return Ok(caches.snapshot(conn, first.row.snapshot_nid).await?);
            }
            return state_after_position(conn, caches, room_nid, first.row.stream_pos - 1).await;
        }
        if let Some(newest) = self.newest_in_range
            && let Some(event) = caches.event(conn, newest).await?
        {
            return Ok(caches.snapshot(conn, event.row.snapshot_nid).await?);
        }
        state_after_position(conn, caches, room_nid, range.up_to).await
    }
}

/// Whether an event passes a room event filter.
pub(crate) fn event_passes(filter: &RoomEventFilter, event: &StoredEvent) -> bool {
    let has_url = filter.contains_url.is_some() && content_has_url(event);
    filter.allows_event(&event.pdu.kind.to_string(), Some(event.pdu.sender.as_str()), has_url)
}

fn content_has_url(event: &StoredEvent) -> bool {
    #[derive(serde::Deserialize)]
    struct UrlField<'a> {
        #[serde(borrow, default)]
        url: Option<&'a serde_json::value::RawValue>,
    }
    serde_json::from_str::<UrlField>(event.pdu.content.get()).is_ok_and(|content| content.url.is_some())
}

/// The room's state after its latest event at or before `position` (empty before the room
/// existed).
pub(crate) async fn state_after_position(
    conn: &mut LazyConn,
    caches: &Caches,
    room_nid: RoomNid,
    position: i64,
) -> Result<Snapshot, SyncError> {
    match event_store::latest_event_in_room_at(conn.connection().await?, room_nid, position).await? {
        Some(row) => Ok(caches.snapshot(conn, row.snapshot_nid).await?),
        None => Ok(Snapshot::empty()),
    }
}
